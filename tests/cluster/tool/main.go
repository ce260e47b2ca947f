// Command clustertool does the two things the test cluster's scripts cannot
// do with Debian's tools alone:
//
//	clustertool image -ref REF -rootfs DIR -out FILE [-entrypoint /bin/x,arg] [-cmd a,b]
//	    writes a single-layer linux/amd64 image of DIR as a Docker archive
//	    (what `ctr images import` reads);
//	clustertool cri-reset -socket PATH
//	    stops and removes every pod sandbox through containerd's CRI, so its
//	    containers, network namespaces and veths go the way the kubelet would
//	    take them (CNI DEL), before containerd itself is stopped.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: clustertool image|cri-reset [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "image":
		err = imageCmd(os.Args[2:])
	case "cri-reset":
		err = criResetCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "clustertool:", err)
		os.Exit(1)
	}
}

func imageCmd(args []string) error {
	fl := flag.NewFlagSet("image", flag.ContinueOnError)
	ref := fl.String("ref", "", "image reference, e.g. harrier.test/busybox:1.35")
	rootfs := fl.String("rootfs", "", "directory that becomes the image's file system")
	out := fl.String("out", "", "Docker archive to write")
	entrypoint := fl.String("entrypoint", "", "comma-separated entrypoint")
	cmd := fl.String("cmd", "", "comma-separated default arguments")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *ref == "" || *rootfs == "" || *out == "" {
		return errors.New("image: -ref, -rootfs and -out are required")
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		return fmt.Errorf("image reference: %w", err)
	}
	layerBytes, err := tarTree(*rootfs)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer})
	if err != nil {
		return fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: split(*entrypoint), Cmd: split(*cmd), Env: []string{"PATH=/bin:/usr/bin:/sbin"}, WorkingDir: "/"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	tmp := *out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return fmt.Errorf("docker archive: %w", err)
	}
	return os.Rename(tmp, *out)
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// tarTree is dir as a layer: regular files, directories and symlinks, in
// lexical order, owned by root, with a fixed time so the image digest
// depends only on the content.
func tarTree(dir string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname = filepath.ToSlash(rel), time.Unix(0, 0), 0, 0, "", ""
		h.Format = tar.FormatPAX
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("layer from %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

func criResetCmd(args []string) error {
	fl := flag.NewFlagSet("cri-reset", flag.ContinueOnError)
	socket := fl.String("socket", "", "containerd's socket")
	timeout := fl.Duration("timeout", time.Minute, "give up after")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *socket == "" {
		return errors.New("cri-reset: -socket is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+*socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", *socket, err)
	}
	defer conn.Close()
	rt := cri.NewRuntimeServiceClient(conn)
	pods, err := rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	var errs []error
	for _, p := range pods.Items {
		// Stop tears down the network (CNI DEL) and kills the containers;
		// remove deletes them and the sandbox's mounts.
		if _, err := rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop sandbox %s (%s/%s): %w", p.Id, p.Metadata.GetNamespace(), p.Metadata.GetName(), err))
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove sandbox %s: %w", p.Id, err))
		}
	}
	return errors.Join(errs...)
}
