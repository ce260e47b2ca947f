package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"

	"github.com/harrier-sec/harrier/api"
)

// Application error codes on QUIC streams and connections.
const (
	// CodeOK closes a connection normally.
	CodeOK quic.ApplicationErrorCode = 0x0
	// CodeShutdown closes a connection because the local end is stopping.
	CodeShutdown quic.ApplicationErrorCode = 0x1
	// CodeUnauthenticated closes a connection whose certificate names no agent.
	CodeUnauthenticated quic.ApplicationErrorCode = 0x2
	// CodeForbidden closes a connection of an agent the backend refuses
	// (revoked); the reason names it.
	CodeForbidden quic.ApplicationErrorCode = 0x3
	// CodeCertExpired closes a connection whose client certificate has
	// expired: the agent reconnects with its renewed one.
	CodeCertExpired quic.ApplicationErrorCode = 0x4

	// CodeBadFrame cancels a stream whose frame could not be decoded.
	CodeBadFrame quic.StreamErrorCode = 0x10
	// CodeStreamFailed cancels a stream that failed for another reason
	// (timeout, reset by the peer).
	CodeStreamFailed quic.StreamErrorCode = 0x11
)

// Defaults for ServerConfig.
const (
	DefaultServerAddr         = "127.0.0.1:9471"
	DefaultMaxIncomingStreams = 64
	DefaultIdleTimeout        = 60 * time.Second
	DefaultStreamTimeout      = 2 * time.Minute
)

const (
	maxStreamReceiveWindow     = 8 << 20
	maxConnectionReceiveWindow = 32 << 20
	keepAlivePeriod            = 15 * time.Second
	handshakeTimeout           = 10 * time.Second
	ackWriteTimeout            = 30 * time.Second
)

// Sink is what the backend gives the server to keep batches. Store returns
// once its own durable write is done, with the sequence numbers it stored or
// already had; only those are acknowledged to the agent.
type Sink interface {
	Store(ctx context.Context, agentID string, b *api.Batch) (acked []uint64, err error)
}

// ServerConfig configures the ingest server.
type ServerConfig struct {
	// Addr is the UDP address to listen on. Default DefaultServerAddr.
	Addr string
	// TLS is the server's configuration, normally from ServerTLS. It must
	// require and verify client certificates. Required.
	TLS *tls.Config
	// Limits bound each incoming frame.
	Limits Limits
	// MaxIncomingStreams is how many batches one agent may have in flight.
	// Default DefaultMaxIncomingStreams.
	MaxIncomingStreams int64
	// IdleTimeout closes a connection silent for this long. Default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// StreamTimeout bounds reading one batch frame; generous because a
	// capped edge link may need minutes for a large batch. Default
	// DefaultStreamTimeout.
	StreamTimeout time.Duration
	// Disable0RTT refuses 0-RTT data from resuming agents. 0-RTT is on by
	// default: its data can be replayed, which is safe because the backend
	// de-duplicates on (agent ID, seq), and it saves a round trip on every
	// reconnect over a slow edge link.
	Disable0RTT bool
	// Authorize, when set, is asked after every handshake with the agent ID
	// of the verified certificate; an error closes the connection with
	// CodeForbidden and the error as the reason (a revoked agent). See also
	// Server.Disconnect.
	Authorize func(agentID string) error
	// Control, when set, is what the server sends each connected agent on
	// the control channel (see ControlSource); ControlInterval is how often
	// it asks again unprompted. Default DefaultControlInterval.
	Control         ControlSource
	ControlInterval time.Duration
}

// ServerStats are cumulative counters.
type ServerStats struct {
	Connections     uint64 // connections accepted (including failed handshakes)
	Batches         uint64 // batches stored (heartbeats included)
	Heartbeats      uint64 // batches carrying health
	Records         uint64 // records in stored batches
	BadFrames       uint64 // streams cancelled for an undecodable frame
	ZeroRTT         uint64 // authenticated connections resumed with 0-RTT
	Unauthenticated uint64 // handshakes that failed, or certificates naming no agent
	Refused         uint64 // batches whose agent_id differs from the certificate
	Forbidden       uint64 // connections refused by Authorize or closed by Disconnect
	Expired         uint64 // connections closed when their client certificate expired
	StoreErrors     uint64 // batches the sink failed to store
	Controls        uint64 // control frames the agents answered
	ControlErrors   uint64 // control frames not delivered or not answered
}

// Server receives batches from agents over QUIC.
type Server struct {
	cfg   ServerConfig
	sink  Sink
	log   *slog.Logger
	codec *Codec
	udp   *net.UDPConn
	tr    *quic.Transport
	ln    *quic.EarlyListener

	closeOnce sync.Once

	connections, batches, heartbeats, records  atomic.Uint64
	badFrames, unauthenticated, refused, store atomic.Uint64
	zeroRTT, forbidden, expired                atomic.Uint64
	controls, controlErrors                    atomic.Uint64

	// conns are the authenticated connections by agent ID, for Disconnect,
	// each with the channel that wakes its control sender.
	connMu sync.Mutex
	conns  map[string]map[*quic.Conn]chan struct{}
}

// NewServer binds the UDP socket (so Addr is known at once) and returns a
// server that Serve runs.
func NewServer(cfg ServerConfig, sink Sink, log *slog.Logger) (*Server, error) {
	if cfg.TLS == nil {
		return nil, errors.New("server TLS config is required")
	}
	if sink == nil {
		return nil, errors.New("server sink is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultServerAddr
	}
	if cfg.MaxIncomingStreams <= 0 {
		cfg.MaxIncomingStreams = DefaultMaxIncomingStreams
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.StreamTimeout <= 0 {
		cfg.StreamTimeout = DefaultStreamTimeout
	}
	if cfg.ControlInterval <= 0 {
		cfg.ControlInterval = DefaultControlInterval
	}
	cfg.Limits = cfg.Limits.withDefaults()

	tlsConf := cfg.TLS.Clone()
	if tlsConf.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("server TLS config must require and verify client certificates")
	}
	if len(tlsConf.NextProtos) == 0 {
		tlsConf.NextProtos = []string{ALPN}
	}
	tlsConf.MinVersion = tls.VersionTLS13

	codec, err := NewCodec(cfg.Limits)
	if err != nil {
		return nil, err
	}
	udpAddr, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		codec.Close()
		return nil, fmt.Errorf("resolve %s: %w", cfg.Addr, err)
	}
	udp, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		codec.Close()
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	// An early listener hands over connections before the client's
	// certificate is checked; that is what lets the server see, and count,
	// handshakes that fail authentication. Streams are only read after the
	// handshake completes (handleConn).
	ln, err := tr.ListenEarly(tlsConf, &quic.Config{
		HandshakeIdleTimeout:       handshakeTimeout,
		MaxIdleTimeout:             cfg.IdleTimeout,
		MaxStreamReceiveWindow:     maxStreamReceiveWindow,
		MaxConnectionReceiveWindow: maxConnectionReceiveWindow,
		MaxIncomingStreams:         cfg.MaxIncomingStreams,
		MaxIncomingUniStreams:      -1, // the protocol uses bidirectional streams only
		KeepAlivePeriod:            keepAlivePeriod,
		Allow0RTT:                  !cfg.Disable0RTT,
	})
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		codec.Close()
		return nil, fmt.Errorf("quic listen %s: %w", cfg.Addr, err)
	}
	return &Server{cfg: cfg, sink: sink, log: log, codec: codec, udp: udp, tr: tr, ln: ln,
		conns: map[string]map[*quic.Conn]chan struct{}{}}, nil
}

// Addr is the bound UDP address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Stats returns the counters so far.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Connections:     s.connections.Load(),
		Batches:         s.batches.Load(),
		Heartbeats:      s.heartbeats.Load(),
		Records:         s.records.Load(),
		BadFrames:       s.badFrames.Load(),
		ZeroRTT:         s.zeroRTT.Load(),
		Unauthenticated: s.unauthenticated.Load(),
		Refused:         s.refused.Load(),
		Forbidden:       s.forbidden.Load(),
		Expired:         s.expired.Load(),
		StoreErrors:     s.store.Load(),
		Controls:        s.controls.Load(),
		ControlErrors:   s.controlErrors.Load(),
	}
}

// Close releases the socket; Serve does this itself when its context ends,
// so Close is for a server that is never served.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		_ = s.ln.Close()
		err = s.tr.Close()
		if cerr := s.udp.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
		s.codec.Close()
	})
	return err
}

// Serve accepts connections until ctx is done, then closes every connection
// (telling agents so, which makes them reconnect at once), waits for the
// handlers and releases the socket. It returns nil after ctx ends; call it
// once. If accepting fails, it closes the connections the same way and
// returns the error.
func (s *Server) Serve(ctx context.Context) error {
	defer s.Close()
	s.log.Info("transport server listening", "addr", s.Addr().String(), "alpn", ALPN)
	// The handlers run under the group's context: an accept error cancels
	// it, which closes their connections, so Wait does not sit out the
	// agents' idle timeouts.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		for {
			conn, err := s.ln.Accept(gctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("accept: %w", err)
			}
			s.connections.Add(1)
			g.Go(func() error {
				s.handleConn(gctx, conn)
				return nil
			})
		}
	})
	return g.Wait()
}

func (s *Server) handleConn(ctx context.Context, conn *quic.Conn) {
	stop := context.AfterFunc(ctx, func() { _ = conn.CloseWithError(CodeShutdown, "server stopping") })
	defer stop()
	remote := conn.RemoteAddr().String()

	select {
	case <-conn.HandshakeComplete():
	case <-conn.Context().Done():
		if ctx.Err() == nil {
			s.unauthenticated.Add(1)
			s.log.Warn("agent handshake failed", "remote", remote, "err", context.Cause(conn.Context()))
		}
		return
	}
	// The identity is read after the handshake completes, when the client's
	// certificate (fresh or from a resumption ticket) has been verified.
	id, err := AgentID(conn.ConnectionState().TLS)
	if err != nil {
		s.unauthenticated.Add(1)
		s.log.Warn("agent certificate names no agent", "remote", remote, "err", err)
		_ = conn.CloseWithError(CodeUnauthenticated, "certificate names no agent")
		return
	}
	log := s.log.With("agent", id, "remote", remote)
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(id); err != nil {
			s.forbidden.Add(1)
			log.Warn("agent refused", "err", err)
			_ = conn.CloseWithError(CodeForbidden, err.Error())
			return
		}
	}
	wake := s.track(id, conn, true)
	defer s.track(id, conn, false)
	// The certificate vouches for the connection only while it is valid: at
	// its expiry the connection is closed and the agent reconnects with the
	// certificate it has renewed meanwhile (or enrolls again).
	if chains := conn.ConnectionState().TLS.VerifiedChains; len(chains) > 0 {
		expiry := time.AfterFunc(time.Until(chains[0][0].NotAfter), func() {
			s.expired.Add(1)
			_ = conn.CloseWithError(CodeCertExpired, "client certificate expired")
		})
		defer expiry.Stop()
	}
	used0RTT := conn.ConnectionState().Used0RTT
	if used0RTT {
		s.zeroRTT.Add(1)
	}
	log.Info("agent connected", "0rtt", used0RTT)

	var streams errgroup.Group
	defer func() { _ = streams.Wait() }()
	if s.cfg.Control != nil {
		streams.Go(func() error {
			s.pushControl(ctx, conn, id, wake, log)
			return nil
		})
	}
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Info("agent disconnected", "err", context.Cause(conn.Context()))
			}
			return
		}
		streams.Go(func() error {
			s.handleStream(ctx, str, id, log)
			return nil
		})
	}
}

// track adds or removes conn; adding returns the channel that wakes its
// control sender.
func (s *Server) track(id string, conn *quic.Conn, add bool) chan struct{} {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if add {
		if s.conns[id] == nil {
			s.conns[id] = map[*quic.Conn]chan struct{}{}
		}
		wake := make(chan struct{}, 1)
		s.conns[id][conn] = wake
		return wake
	}
	delete(s.conns[id], conn)
	if len(s.conns[id]) == 0 {
		delete(s.conns, id)
	}
	return nil
}

// Disconnect closes every live connection of agentID with CodeForbidden and
// reason, and returns how many there were: revoking an agent takes effect
// at once, not at its next reconnect. Batches in flight are not acked, so
// the agent keeps them.
func (s *Server) Disconnect(agentID, reason string) int {
	s.connMu.Lock()
	conns := make([]*quic.Conn, 0, len(s.conns[agentID]))
	for c := range s.conns[agentID] {
		conns = append(conns, c)
	}
	s.connMu.Unlock()
	for _, c := range conns {
		s.forbidden.Add(1)
		_ = c.CloseWithError(CodeForbidden, reason)
	}
	return len(conns)
}

func (s *Server) handleStream(ctx context.Context, str *quic.Stream, id string, log *slog.Logger) {
	_ = str.SetReadDeadline(time.Now().Add(s.cfg.StreamTimeout))
	b, err := s.codec.ReadBatch(str)
	if err == nil {
		// Reading the sender's end of stream completes our receive side,
		// which is what returns the stream's credit to the agent.
		err = expectEOF(str)
	}
	if err != nil {
		code := CodeStreamFailed
		if errors.Is(err, ErrBadFrame) {
			code = CodeBadFrame
			s.badFrames.Add(1)
			log.Warn("bad frame from agent", "stream", int64(str.StreamID()), "err", err)
		} else {
			log.Debug("stream read failed", "stream", int64(str.StreamID()), "err", err)
		}
		str.CancelRead(code)
		str.CancelWrite(code)
		return
	}

	ack := &api.Ack{}
	spoolErr := ValidSpoolID(b.GetSpoolId())
	switch {
	case b.GetAgentId() != id:
		s.refused.Add(1)
		log.Warn("batch refused: agent_id differs from the certificate", "batch_agent", b.GetAgentId())
		ack.Error = fmt.Sprintf("agent_id %q does not match the client certificate", b.GetAgentId())
	case spoolErr != nil:
		s.refused.Add(1)
		log.Warn("batch refused: malformed spool_id", "err", spoolErr)
		ack.Error = spoolErr.Error()
	default:
		seqs, err := s.sink.Store(ctx, id, b)
		if err != nil {
			s.store.Add(1)
			if ctx.Err() != nil {
				// Shutting down: the agent keeps the records and resends them.
				log.Info("batch not stored: server stopping", "records", len(b.GetRecords()))
			} else {
				log.Error("storing batch failed", "records", len(b.GetRecords()), "err", err)
			}
			ack.Error = "backend could not store the batch"
			break
		}
		s.batches.Add(1)
		s.records.Add(uint64(len(b.GetRecords())))
		if b.GetHealth() != nil {
			s.heartbeats.Add(1)
		}
		ack.Seqs = seqs
	}

	_ = str.SetWriteDeadline(time.Now().Add(ackWriteTimeout))
	if err := WriteAck(str, ack); err != nil {
		log.Debug("writing ack failed", "err", err)
		str.CancelWrite(CodeStreamFailed)
		return
	}
	_ = str.Close()
}
