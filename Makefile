# Harrier's build and test entry points. `make test` is the README's test
# command and what CI runs; it needs root (eBPF, runc containers).

GO       ?= go
# Recipes are bash with pipefail, so a test run piped into its report still
# fails when go test does.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
# Count-based: a duration-based -fuzztime hits a Go 1.26 coordinator race
# that fails a clean run with "context deadline exceeded" (go.dev/issue/75804).
FUZZTIME ?= 200000x
# Compiling CEL and running the redaction regexps are far slower per input
# than the byte decoders.
RULEFUZZTIME ?= 5000x
# The export encoders' seeds include 64 KiB command lines.
EXPORTFUZZTIME ?= 5000x
BIN      := bin/harrier
# Version stamped into release binaries, packages, image and chart (semver).
VERSION  ?= 0.1.0
ARCHES   ?= amd64 arm64
DIST     := dist
# Packages and image layers carry the last commit's time, not the build's.
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
PKGTOOL  := cd packaging && $(GO) run ./cmd/harrier-pkg

.PHONY: build run test unit fuzz lint generate check-generated deps kubeapi ci dist-bin package image nats-image manifests bundle \
	cluster-up cluster-down test-cluster

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) .

# Static release binaries for every architecture a site may run.
dist-bin:
	@for a in $(ARCHES); do echo "build linux/$$a"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" \
			-o $(DIST)/bin/linux-$$a/harrier . || exit 1; done

# deb and rpm for each architecture -> dist/packages/.
package: dist-bin
	$(PKGTOOL) package --version $(VERSION) --arch $(shell echo $(ARCHES) | tr ' ' ,) --dist ../$(DIST)

# OCI layout tarball (amd64+arm64 index) and Docker archives -> dist/image/.
image: dist-bin
	$(PKGTOOL) image --version $(VERSION) --arch $(shell echo $(ARCHES) | tr ' ' ,) --dist ../$(DIST)

# The nats-server image of the chart's backend replicas (backend.cluster), this
# machine's architecture, from the nats-server tests/nats/build.sh builds -> dist/image/.
nats-image:
	$(PKGTOOL) nats-image --binary "$$(bash ../tests/nats/build.sh)" \
		--version "$$(awk '$$1 == "github.com/nats-io/nats-server/v2" {print $$2}' ../tests/nats/go.mod)" --dist ../$(DIST)

# packaging/kubernetes/harrier.yaml from the Helm chart (a test checks it is current).
manifests:
	$(PKGTOOL) manifests

# The air-gapped bundle -> dist/harrier-$(VERSION)-bundle.tar.gz: binaries,
# deb/rpm, image archives, chart, manifests, SBOMs, INSTALL.md, SHA256SUMS.
bundle: dist-bin
	$(PKGTOOL) bundle --version $(VERSION) --arch $(shell echo $(ARCHES) | tr ' ' ,) --dist ../$(DIST)

# The all-in-one command for this node: sensor, spool and the embedded
# backend with its web UI on http://127.0.0.1:9470/.
run: build
	./$(BIN) run

# Everything the tests need is installed or built first (quietly when it is
# already there): Debian packages, then the test control plane.
test: deps kubeapi unit fuzz

# packaging/ is its own Go module (Helm, Kubernetes, nfpm and
# go-containerregistry stay out of the agent's dependency graph), so its
# tests run from there. tests/testreport prints failures, lists every skipped
# test with its reason and ends with "N passed, N failed, N skipped"; with CI
# set, a skip fails the run (CI runs as root with every dependency installed,
# so a skipped test is one that never ran).
# The group exits with the first go test's failure too, so an error that
# go test prints outside its JSON (a broken go.mod) still fails the run.
unit:
	{ rc=0; $(GO) test -json -count=1 -timeout 30m ./... || rc=$$?; \
	  (cd packaging && $(GO) test -json -count=1 -timeout 20m ./...) || rc=$$?; exit $$rc; } \
	  | $(GO) run ./tests/testreport $(if $(CI),-fail-on-skip)

# A short run of every fuzz target over untrusted input decoders.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./sensor
	$(GO) test -run '^$$' -fuzz '^FuzzParseDNSQuery$$' -fuzztime $(FUZZTIME) ./sensor
	$(GO) test -run '^$$' -fuzz '^FuzzParseCgroupPath$$' -fuzztime $(FUZZTIME) ./sensor/container
	$(GO) test -run '^$$' -fuzz '^FuzzParseMountinfo$$' -fuzztime $(FUZZTIME) ./sensor/container
	$(GO) test -run '^$$' -fuzz '^FuzzParseProcCgroup$$' -fuzztime $(FUZZTIME) ./sensor/container
	$(GO) test -run '^$$' -fuzz '^FuzzParseStat$$' -fuzztime $(FUZZTIME) ./sensor/proc
	$(GO) test -run '^$$' -fuzz '^FuzzParseStatus$$' -fuzztime $(FUZZTIME) ./sensor/proc
	$(GO) test -run '^$$' -fuzz '^FuzzReadBatch$$' -fuzztime $(FUZZTIME) ./transport
	$(GO) test -run '^$$' -fuzz '^FuzzReadAck$$' -fuzztime $(FUZZTIME) ./transport
	$(GO) test -run '^$$' -fuzz '^FuzzReadControl$$' -fuzztime $(FUZZTIME) ./transport
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAcked$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzParseSegmentName$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeClassMeta$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeGap$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzParseBundleAnnotations$$' -fuzztime $(FUZZTIME) ./kube
	$(GO) test -run '^$$' -fuzz '^FuzzAuditObjects$$' -fuzztime $(FUZZTIME) ./analytics
	$(GO) test -run '^$$' -fuzz '^FuzzParseReport$$' -fuzztime $(FUZZTIME) ./backend/vulndb
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePageLocation$$' -fuzztime $(FUZZTIME) ./backend
	$(GO) test -run '^$$' -fuzz '^FuzzEachPageEvent$$' -fuzztime $(FUZZTIME) ./backend
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEnrollRequest$$' -fuzztime $(FUZZTIME) ./backend
	$(GO) test -run '^$$' -fuzz '^FuzzApplyControlChange$$' -fuzztime $(FUZZTIME) ./backend
	$(GO) test -run '^$$' -fuzz '^FuzzIdentityApplyControl$$' -fuzztime $(FUZZTIME) ./backend
	$(GO) test -run '^$$' -fuzz '^FuzzFindPayloads$$' -fuzztime $(FUZZTIME) ./backend
	$(GO) test -run '^$$' -fuzz '^FuzzEncodeCEF$$' -fuzztime $(EXPORTFUZZTIME) ./backend/export
	$(GO) test -run '^$$' -fuzz '^FuzzEncodeRFC5424$$' -fuzztime $(EXPORTFUZZTIME) ./backend/export
	$(GO) test -run '^$$' -fuzz '^FuzzEncodeOCSF$$' -fuzztime $(EXPORTFUZZTIME) ./backend/export
	$(GO) test -run '^$$' -fuzz '^FuzzEncodeFalcoECS$$' -fuzztime $(EXPORTFUZZTIME) ./backend/export
	$(GO) test -run '^$$' -fuzz '^FuzzEncodeFindings$$' -fuzztime $(EXPORTFUZZTIME) ./backend/export
	$(GO) test -run '^$$' -fuzz '^FuzzEncodeEvents$$' -fuzztime $(EXPORTFUZZTIME) ./backend/export
	$(GO) test -run '^$$' -fuzz '^FuzzParseOTLPHTTPReply$$' -fuzztime $(FUZZTIME) ./backend/export
	$(GO) test -run '^$$' -fuzz '^FuzzParseBulkResponse$$' -fuzztime $(FUZZTIME) ./backend/export
	$(GO) test -run '^$$' -fuzz '^FuzzParseHECReply$$' -fuzztime $(FUZZTIME) ./backend/export
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEventList$$' -fuzztime $(FUZZTIME) ./kube/audit
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEvent$$' -fuzztime $(FUZZTIME) ./kube/audit
	$(GO) test -run '^$$' -fuzz '^FuzzParseKubeletConfig$$' -fuzztime $(FUZZTIME) ./kube/posture
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeReview$$' -fuzztime $(FUZZTIME) ./kube/admission
	$(GO) test -run '^$$' -fuzz '^FuzzLoadRules$$' -fuzztime $(RULEFUZZTIME) ./analytics
	$(GO) test -run '^$$' -fuzz '^FuzzRedact$$' -fuzztime $(RULEFUZZTIME) ./analytics

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	cd packaging && $(GO) vet ./... && $(GO) tool staticcheck ./...

# Regenerate the committed BPF object, its Go bindings and the protobuf code.
generate:
	cd api && $(GO) generate .
	cd sensor && $(GO) generate .
	cd response && $(GO) generate .

check-generated: generate
	@git diff --exit-code -- api sensor response || { echo "generated code is stale: run 'make generate' and commit"; exit 1; }

# Debian packages the build, tests and code generation need. systemd gives
# systemd-analyze (unit checks), util-linux setpriv (capability checks),
# rpm reads the built rpm back, containerd (with ctr) imports and runs the image,
# rsyslog (with rsyslog-gnutls for TLS) is the exports tests' real syslog receiver.
# chromium is the browser the console tests (backend/uitest) drive with chromedp.
DEB_PACKAGES := make git ca-certificates runc busybox-static iproute2 rsyslog rsyslog-gnutls \
	clang llvm libbpf-dev bpftool protobuf-compiler libprotobuf-dev \
	systemd util-linux rpm containerd chromium

# Installs only the packages that are missing, and says nothing when none is.
deps:
	@missing=; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The test control plane (etcd, kube-apiserver, kubectl) built from the Go
# module proxy into a version-keyed cache outside the repository
# (/var/cache/harrier-test as root): ~10 min cold on 2 cores, instant warm.
kubeapi:
	GO=$(GO) tests/kubeapi/build.sh >/dev/null

# A real one-node Kubernetes cluster on this machine (tests/cluster): the
# control plane, containerd, the kubelet, kube-proxy and CoreDNS, binaries
# built into the same cache as kubeapi, images imported (no registry).
# Prints the admin kubeconfig's path. Needs root.
cluster-up: deps
	GO=$(GO) tests/cluster/up.sh

cluster-down:
	tests/cluster/down.sh

# Brings the cluster up, checks scheduling, pod networking, cluster DNS and
# the controllers, tears it down and checks nothing is left behind.
test-cluster: deps
	$(GO) test -tags cluster -count=1 -timeout 70m -json ./tests/cluster/ \
	  | $(GO) run ./tests/testreport -stream $(if $(CI),-fail-on-skip)

ci: deps lint check-generated build test
