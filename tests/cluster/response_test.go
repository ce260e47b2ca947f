//go:build cluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/internal/kubetest"
)

// responseNS is the namespace the response step's pods run in; the
// policies name it, so nothing else in the cluster is acted on.
const responseNS = "response-test"

// responsePolicies kill a test alert's process tree and any drift binary
// at exec, in responseNS only.
const responsePolicies = `apiVersion: harrier.io/v1
kind: ResponsePolicies
policies:
  - name: kill-test-alerts
    mode: enforce
    match:
      detections: [test-alert]
      namespaces: [` + responseNS + `]
      where: container
    actions: [kill-process-tree]
execDeny:
  - name: no-drift-in-response-test
    mode: enforce
    drift: true
    namespaces: [` + responseNS + `]
`

// responseRecord is what the test reads of a response event.
type responseRecord struct {
	Container struct {
		ID string `json:"id"`
	} `json:"container"`
	Response struct {
		AlertID   string   `json:"alert_id"`
		Policy    string   `json:"policy"`
		Mode      string   `json:"mode"`
		Action    string   `json:"action"`
		Outcome   string   `json:"outcome"`
		Error     string   `json:"error"`
		Target    string   `json:"target"`
		LatencyUs string   `json:"latency_us"`
		Pids      []uint32 `json:"pids"`
	} `json:"response"`
}

// testResponse: response in the cluster, as a site runs it — the
// policies pushed to the backend with the CLI through the port-forward
// reach the DaemonSet's agent, which kills a test alert's process tree in
// a pod and a drift binary at exec before its first instruction; an
// analyst's commands pause and resume the pod's container and block and
// unblock its network.
func testResponse(ctx context.Context, t *testing.T, h *harrier) {
	sec, err := h.cs.CoreV1().Secrets(ns).Get(ctx, "harrier-response-token", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the install block's response token: %v", err)
	}
	tokenFile := filepath.Join(h.bundle, "response-token")
	if err := os.WriteFile(tokenFile, sec.Data["response-token"], 0o600); err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(h.bundle, "response-policies.yaml")
	if err := os.WriteFile(policyFile, []byte(responsePolicies), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(kubetest.BinDir(), "kubectl"), append([]string{"--kubeconfig=" + h.kubeconfig, "-n", responseNS}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if _, err := h.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: responseNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.cs.CoreV1().Namespaces().Delete(context.Background(), responseNS, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))})
	})
	// The controller manager gives a new namespace its default service
	// account shortly after; the API server refuses pods until then.
	poll(ctx, t, "namespace "+responseNS+" has its default service account", func() (bool, error) {
		_, err := h.cs.CoreV1().ServiceAccounts(responseNS).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	image := busybox + ":" + busyboxTag(t)
	pod := func(name string, command ...string) *corev1.Pod {
		_, err := h.cs.CoreV1().Pods(responseNS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: new(int64(1)),
				Containers:                    []corev1.Container{{Name: name, Image: image, ImagePullPolicy: corev1.PullNever, Command: command}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var p *corev1.Pod
		poll(ctx, t, "pod "+name+" Running", func() (bool, error) {
			p, err = h.cs.CoreV1().Pods(responseNS).Get(ctx, name, metav1.GetOptions{})
			return err == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && len(p.Status.ContainerStatuses) == 1, err
		})
		return p
	}
	server := pod("server", "httpd", "-f", "-p", "8080", "-h", "/etc")
	victim := pod("victim", "sleep", "3600")
	victimID := containerID(t, victim, "victim")

	// The policies, as an operator pushes them: validated by the CLI, then
	// applied by the node's agent (its heartbeat says which version).
	api := []string{"--api", h.forwarded, "--ca-file", "pki/ca.crt", "--token-file", tokenFile}
	out := h.shForwarded(t, "bin/linux-amd64/harrier response push response-policies.yaml "+strings.Join(api, " "))
	var version uint64
	if _, err := fmt.Sscanf(out, "version %d:", &version); err != nil {
		t.Fatalf("harrier response push said %q", out)
	}
	poll(ctx, t, fmt.Sprintf("the agent applies policies version %d", version), func() (bool, error) {
		var got struct {
			Agents map[string]struct {
				PoliciesVersion uint64 `json:"policies_version"`
				PoliciesError   string `json:"policies_error"`
			} `json:"agents"`
		}
		if err := h.get(ctx, "/api/v1/response/policies", url.Values{}, &got); err != nil {
			return false, err
		}
		a := got.Agents[h.node]
		if a.PoliciesError != "" {
			return false, fmt.Errorf("the agent refused the policies: %s", a.PoliciesError)
		}
		return a.PoliciesVersion == version, nil
	})

	// A test alert in the pod: its process tree is killed.
	if out, err := kubectl("exec", "victim", "--", "sh", "-c", "sh -c 'echo HARRIER-TEST-ALERT >/dev/null; exec sleep 777' >/dev/null 2>&1 &"); err != nil {
		t.Fatalf("start the marker in the pod: %v\n%s", err, out)
	}
	killed := h.waitResponse(ctx, t, "the policy's kill of the marker", func(r responseRecord) bool {
		return r.Container.ID == victimID && r.Response.Policy == "kill-test-alerts"
	})
	if killed.Response.Outcome != "done" || killed.Response.Action != "kill-process-tree" || len(killed.Response.Pids) == 0 {
		t.Fatalf("the marker's response: %+v, want kill-process-tree done", killed.Response)
	}
	poll(ctx, t, "the marker's sleep is gone from the pod", func() (bool, error) {
		out, err := kubectl("exec", "victim", "--", "ps", "-o", "args")
		return err == nil && !strings.Contains(out, "sleep 777"), err
	})
	t.Logf("test alert's process tree killed in the pod (%d processes), %s µs from the behaviour to the kill", len(killed.Response.Pids), killed.Response.LatencyUs)

	// A binary written into the container after it started dies at exec:
	// the file its first act would create never appears.
	out, _ = kubectl("exec", "victim", "--", "sh", "-c", "mkdir -p /tmp/drift && cp /bin/busybox /tmp/drift/busybox && /tmp/drift/busybox touch /tmp/drift-marker; echo rc=$?")
	if !strings.Contains(out, "rc=137") {
		t.Errorf("the drift binary's exit: %q, want rc=137 (SIGKILL)", out)
	}
	if out, err := kubectl("exec", "victim", "--", "ls", "/tmp/drift-marker"); err == nil {
		t.Errorf("the drift binary ran: /tmp/drift-marker exists (%s)", out)
	}
	drift := h.waitResponse(ctx, t, "the kill at exec of the drift binary", func(r responseRecord) bool {
		return r.Container.ID == victimID && r.Response.Action == "kill-at-exec"
	})
	if drift.Response.Outcome != "done" || drift.Response.Policy != "no-drift-in-response-test" {
		t.Errorf("the drift binary's response: %+v", drift.Response)
	}

	// An analyst's commands on the alert's container: pause and resume.
	cgroup := h.containerCgroup(ctx, t, killed.Response.AlertID)
	events := filepath.Join("/sys/fs/cgroup/unified", cgroup, "cgroup.events")
	if _, err := os.Stat(events); err != nil {
		events = filepath.Join("/sys/fs/cgroup", cgroup, "cgroup.events")
	}
	act := func(action string) {
		t.Helper()
		out := h.shForwarded(t, fmt.Sprintf("bin/linux-amd64/harrier response act %s --agent %s --container-id %s --cgroup %s --reason cluster-test %s",
			action, h.node, victimID, cgroup, strings.Join(api, " ")))
		if !strings.Contains(out, `"state":"done"`) {
			t.Fatalf("harrier response act %s: %s", action, out)
		}
	}
	frozen := func() bool { b, _ := os.ReadFile(events); return strings.Contains(string(b), "frozen 1") }
	act("pause-container")
	if !frozen() {
		t.Errorf("pause-container done, but %s does not say frozen", events)
	}
	act("resume-container")
	if frozen() {
		t.Errorf("resume-container done, but %s still says frozen", events)
	}
	if out, err := kubectl("exec", "victim", "--", "true"); err != nil {
		t.Errorf("the resumed pod does not run a command: %v %s", err, out)
	}

	// Block the pod's network, then undo it: its connection to another pod
	// is refused by the kernel, then works again.
	fetch := func() string {
		out, _ := kubectl("exec", "victim", "--", "sh", "-c", `printf 'GET /hostname HTTP/1.0\r\n\r\n' | nc -w 3 `+server.Status.PodIP+` 8080`)
		return out
	}
	if out := fetch(); !strings.Contains(out, " 200 ") {
		t.Fatalf("before any block the pod cannot fetch from the server: %q", out)
	}
	act("block-network")
	if out := fetch(); !strings.Contains(out, "not permitted") {
		t.Errorf("blocked pod's connection: %q, want the kernel's refusal (Operation not permitted)", out)
	}
	act("unblock-network")
	if out := fetch(); !strings.Contains(out, " 200 ") {
		t.Errorf("unblocked pod's connection: %q, want the server's answer", out)
	}

	// The steps after this one run without response policies.
	if err := os.WriteFile(policyFile, []byte("apiVersion: harrier.io/v1\nkind: ResponsePolicies\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.shForwarded(t, "bin/linux-amd64/harrier response push response-policies.yaml "+strings.Join(api, " "))
}

// waitResponse polls the backend's response records until one matches.
func (h *harrier) waitResponse(ctx context.Context, t *testing.T, what string, match func(responseRecord) bool) responseRecord {
	t.Helper()
	var found responseRecord
	poll(ctx, t, what, func() (bool, error) {
		var list struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := h.get(ctx, "/api/v1/events", url.Values{"kind": {"response"}, "limit": {"1000"}}, &list); err != nil {
			return false, err
		}
		for _, raw := range list.Events {
			var r responseRecord
			if err := json.Unmarshal(raw, &r); err != nil {
				return false, err
			}
			if match(r) {
				found = r
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

// containerCgroup is the cgroup path the alert's container has, as the
// agent reported it.
func (h *harrier) containerCgroup(ctx context.Context, t *testing.T, alertID string) string {
	t.Helper()
	as, err := h.alerts(ctx, url.Values{"namespace": {responseNS}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.ID != alertID {
			continue
		}
		var c struct {
			Container struct {
				Cgroup string `json:"cgroup"`
			} `json:"container"`
		}
		if err := json.Unmarshal(a.Raw, &c); err != nil || c.Container.Cgroup == "" {
			t.Fatalf("alert %s has no container cgroup: %v %s", alertID, err, a.Raw)
		}
		return c.Container.Cgroup
	}
	t.Fatalf("no alert %s in namespace %s", alertID, responseNS)
	return ""
}
