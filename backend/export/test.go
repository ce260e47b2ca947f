package export

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// TestAlert is the alert `harrier backend exports test` sends.
func TestAlert(now time.Time) *api.Alert {
	return &api.Alert{
		Id: fmt.Sprintf("harrier-export-test-%d", now.UnixNano()), DetectionId: "export-test", Name: "Harrier export test",
		Severity: api.Severity_SEVERITY_INFO, Summary: "a test alert from `harrier backend exports test`; no action needed",
		FirstSeen: timestamppb.New(now), LastSeen: timestamppb.New(now), Count: 1,
	}
}

// SendTest sends a to the destination c once, without a cursor or retries,
// and returns what the destination answered.
func SendTest(ctx context.Context, c Config, a *api.Alert, o Options) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	o = o.withDefaults()
	c = c.withDefaults()
	s, err := newSink(c, o.Hostname, o.Version)
	if err != nil {
		return "", err
	}
	defer s.close()
	enc, err := encoderFor(c.Format)
	if err != nil {
		return "", err
	}
	body, err := enc(a, o.Version)
	if err != nil {
		return "", err
	}
	if _, err := s.send(ctx, []message{{head: a, body: body}}); err != nil {
		return s.lastReply(), err
	}
	// A stream receiver that drops the connection at once (a TLS
	// handshake it refused, a closed port) shows here.
	time.Sleep(200 * time.Millisecond)
	if err := s.check(); err != nil {
		return s.lastReply(), err
	}
	return s.lastReply(), nil
}
