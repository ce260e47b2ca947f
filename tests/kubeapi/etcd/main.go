// Command etcd is the test etcd behind the test kube-apiserver: the upstream
// server's entry point, built from the Go module proxy (`go install` of the
// server module itself fails on its replace directives). See ../build.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
