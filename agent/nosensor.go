package agent

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/sensor"
)

// eventSource is the sensor as the agent drives it.
type eventSource interface {
	Run(ctx context.Context, out chan<- *api.Event) error
	QueueSize() int
	Status() sensor.Status
	Stats() (sensor.Stats, error)
	Close() error
}

// unavailableSensor stands in for a sensor this node cannot run (a kernel
// without BTF, no CAP_BPF, programs the verifier refuses): no events, and
// the reason in every heartbeat and scrape, while the agent's other parts —
// Kubernetes audit, admission, posture, inventory, the spool and the
// uplink — keep working.
type unavailableSensor struct {
	reason error
	kernel string
}

func newUnavailableSensor(reason error) unavailableSensor {
	u := unavailableSensor{reason: reason}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		u.kernel = unix.ByteSliceToString(uts.Release[:])
	}
	return u
}

// Run sends nothing and returns when ctx is done: the pipeline runs until
// its event channel closes, and it has other inputs.
func (u unavailableSensor) Run(ctx context.Context, _ chan<- *api.Event) error {
	<-ctx.Done()
	return nil
}

func (unavailableSensor) QueueSize() int { return 1 }

func (u unavailableSensor) Status() sensor.Status {
	return sensor.Status{
		Kernel:      u.kernel,
		Probes:      []sensor.ProbeStatus{{Name: "sensor", Error: u.reason.Error()}},
		Unavailable: []string{"the whole sensor: " + u.reason.Error()},
	}
}

func (u unavailableSensor) Stats() (sensor.Stats, error) {
	return sensor.Stats{}, fmt.Errorf("sensor unavailable: %w", u.reason)
}

func (unavailableSensor) Close() error { return nil }
