package simulate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// waitReady waits until every pod is Ready, calling tick about every
// 500 ms. A pod that failed, or is not Ready by the timeout, is named in
// the error with its status.
func waitReady(ctx context.Context, k *kubeClient, ns string, pods []string, timeout time.Duration, tick func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		var notReady []*corev1.Pod
		for _, name := range pods {
			p, err := k.getPod(ctx, ns, name)
			if err != nil {
				return fmt.Errorf("pod %s/%s: %w", ns, name, err)
			}
			if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
				return fmt.Errorf("pod %s/%s stopped: %s", ns, name, podStatus(p))
			}
			if !podReady(p) {
				notReady = append(notReady, p)
			}
		}
		if len(notReady) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var errs []error
			for _, p := range notReady {
				errs = append(errs, fmt.Errorf("pod %s/%s not ready after %v: %s", ns, p.Name, timeout, podStatus(p)))
			}
			return errors.Join(errs...)
		}
		if err := tick(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the pods: %w", context.Cause(ctx))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podStatus says why a pod is where it is, for people.
func podStatus(p *corev1.Pod) string {
	parts := []string{"phase " + string(p.Status.Phase)}
	if p.Spec.NodeName == "" {
		parts = append(parts, "not scheduled")
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && (c.Reason != "" || c.Message != "") {
			parts = append(parts, fmt.Sprintf("%s: %s %s", c.Type, c.Reason, c.Message))
		}
	}
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		switch {
		case cs.State.Waiting != nil:
			parts = append(parts, fmt.Sprintf("container %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message))
		case cs.State.Terminated != nil:
			parts = append(parts, fmt.Sprintf("container %s terminated: %s (exit %d) %s", cs.Name,
				cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.State.Terminated.Message))
		case !cs.Ready:
			parts = append(parts, fmt.Sprintf("container %s not ready", cs.Name))
		}
	}
	return strings.Join(parts, "; ")
}

type stepKey struct {
	scenario string
	step     int
}

// followDriver follows the attacker pod's log until the driver is done,
// polling the backend meanwhile. It returns when each step was sent and
// when the last one was.
func followDriver(ctx context.Context, k *kubeClient, ns string, timeout time.Duration, tick func(context.Context) error, log *slog.Logger) (map[stepKey]time.Time, time.Time, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("the attacker did not finish within %v", timeout))
	defer cancel()
	stream, err := k.followLog(ctx, ns, attackerName, attackerName)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("follow the attacker's log: %w", err)
	}
	defer stream.Close()
	lines := make(chan DriverLine)
	ended := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stream)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			d, ok := parseDriverLine(sc.Bytes())
			if !ok {
				log.Debug("attacker", "line", sc.Text())
				continue
			}
			select {
			case lines <- d:
			case <-ctx.Done():
				return
			}
		}
		ended <- sc.Err()
	}()
	sent := map[stepKey]time.Time{}
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case d := <-lines:
			switch d.Event {
			case "step":
				sent[stepKey{d.Scenario, d.Step}] = d.Sent
				log.Debug("step", "scenario", d.Scenario, "step", d.Step, "status", d.Status, "error", d.Error)
			case "error":
				return nil, time.Time{}, fmt.Errorf("attacker: %s", d.Error)
			case "done":
				return sent, time.Now(), nil
			}
		case err := <-ended:
			if err == nil {
				err = io.EOF
			}
			status := "status unknown"
			if p, perr := k.getPod(ctx, ns, attackerName); perr == nil {
				status = podStatus(p)
			}
			return nil, time.Time{}, fmt.Errorf("the attacker's log ended before the play did (%w): pod %s/%s: %s", err, ns, attackerName, status)
		case <-ticker.C:
			if err := tick(ctx); err != nil {
				return nil, time.Time{}, err
			}
		case <-ctx.Done():
			return nil, time.Time{}, context.Cause(ctx)
		}
	}
}
