package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/harrier-sec/harrier/api"
)

// The control channel: the backend opens a stream on an agent's connection,
// writes one Control frame and closes its side; the agent acts, answers with
// one ControlAck frame and closes. Agents dial the backend, never the other
// way round, so this is how anything reaches an agent behind NAT or a
// one-way firewall, and a disconnected agent gets what is pending when it
// reconnects.

// Control channel timings.
const (
	// DefaultControlInterval is how often the server asks its source again
	// without a notification (expiries, lost notifications).
	DefaultControlInterval = 30 * time.Second
	controlOpenTimeout     = 10 * time.Second
	// controlAckTimeout covers the agent's actions (freezing a container
	// waits up to a second per command).
	controlAckTimeout = time.Minute
)

// ControlSource tells the server what each connected agent must be sent.
type ControlSource interface {
	// PendingControl returns what agentID must be sent now, or nil when
	// nothing is due. sent is what this connection last delivered (zero
	// on a new connection).
	PendingControl(ctx context.Context, agentID string, sent ControlSent) (*api.Control, error)
	// ControlAcked takes the agent's answer to sent.
	ControlAcked(ctx context.Context, agentID string, sent *api.Control, ack *api.ControlAck) error
}

// ControlSent is what one connection has delivered and the agent
// answered: the versions of the response policies and the exceptions.
type ControlSent struct {
	Policies, Exceptions uint64
}

// ControlHandler is the agent's side: it applies c and says what it did.
type ControlHandler func(ctx context.Context, c *api.Control) *api.ControlAck

// NotifyControl wakes the control senders of agentID's connections (every
// connection's, for ""), so that what is pending goes out at once.
func (s *Server) NotifyControl(agentID string) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	for id, conns := range s.conns {
		if agentID != "" && id != agentID {
			continue
		}
		for _, wake := range conns {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}
}

// pushControl sends agentID what its source says is due, when the
// connection starts, when notified, and every ControlInterval, until the
// connection ends.
func (s *Server) pushControl(ctx context.Context, conn *quic.Conn, agentID string, wake <-chan struct{}, log *slog.Logger) {
	tick := time.NewTicker(s.cfg.ControlInterval)
	defer tick.Stop()
	var sent ControlSent
	for {
		c, err := s.cfg.Control.PendingControl(ctx, agentID, sent)
		switch {
		case err != nil:
			log.Error("control: reading what is due failed", "err", err)
		case c != nil && (c.GetResponsePolicies() != nil || c.GetExceptions() != nil || len(c.GetCommands()) > 0):
			ack, err := s.sendControl(ctx, conn, c)
			if err != nil {
				s.controlErrors.Add(1)
				if conn.Context().Err() == nil && ctx.Err() == nil {
					log.Warn("control not delivered; trying again later", "err", err)
				}
				break
			}
			s.controls.Add(1)
			if v := c.GetResponsePolicies().GetVersion(); v != 0 {
				// Sent and answered: a refused version is not sent again
				// on this connection (the answer says why it was refused).
				sent.Policies = v
			}
			if v := c.GetExceptions().GetVersion(); v != 0 {
				sent.Exceptions = v
			}
			if err := s.cfg.Control.ControlAcked(ctx, agentID, c, ack); err != nil {
				log.Error("control: storing the agent's answer failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-conn.Context().Done():
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

func (s *Server) sendControl(ctx context.Context, conn *quic.Conn, c *api.Control) (_ *api.ControlAck, err error) {
	octx, cancel := context.WithTimeout(ctx, controlOpenTimeout)
	str, err := conn.OpenStreamSync(octx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("open control stream (an agent older than the control channel accepts none): %w", err)
	}
	defer func() {
		if err != nil {
			str.CancelRead(CodeStreamFailed)
			str.CancelWrite(CodeStreamFailed)
		}
	}()
	_ = str.SetWriteDeadline(time.Now().Add(ackWriteTimeout))
	if err := WriteControl(str, c); err != nil {
		return nil, err
	}
	if err := str.Close(); err != nil {
		return nil, fmt.Errorf("close control stream: %w", err)
	}
	_ = str.SetReadDeadline(time.Now().Add(controlAckTimeout))
	ack, err := ReadControlAck(str, s.cfg.Limits)
	if err != nil {
		return nil, fmt.Errorf("read control ack: %w", err)
	}
	if err := expectEOF(str); err != nil {
		return nil, fmt.Errorf("after control ack: %w", err)
	}
	return ack, nil
}

// serveControl answers the backend's control streams on conn, one at a
// time and in order, until the connection ends.
func (c *Client) serveControl(ctx context.Context, conn *quic.Conn) {
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		if err := c.handleControl(ctx, str); err != nil {
			c.update(func(s *ClientStats) { s.ControlErrors++ })
			level := slog.LevelDebug
			if errors.Is(err, ErrBadFrame) {
				level = slog.LevelWarn
			}
			c.log.Log(ctx, level, "control stream failed", "err", err)
		}
	}
}

func (c *Client) handleControl(ctx context.Context, str *quic.Stream) (err error) {
	defer func() {
		if err != nil {
			code := CodeStreamFailed
			if errors.Is(err, ErrBadFrame) {
				code = CodeBadFrame
			}
			str.CancelRead(code)
			str.CancelWrite(code)
		}
	}()
	_ = str.SetReadDeadline(time.Now().Add(DefaultStreamTimeout))
	ctl, err := ReadControl(str, c.cfg.Limits)
	if err == nil {
		err = expectEOF(str)
	}
	if err != nil {
		return fmt.Errorf("read control: %w", err)
	}
	ack := c.cfg.Control(ctx, ctl)
	c.update(func(s *ClientStats) { s.Controls++ })
	_ = str.SetWriteDeadline(time.Now().Add(ackWriteTimeout))
	if err := WriteControlAck(str, ack); err != nil {
		return err
	}
	return str.Close()
}

// controlStreams is how many control streams an agent lets the backend
// have open at once; the server sends one at a time.
const controlStreams = 2
