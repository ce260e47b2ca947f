package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// Defaults for ClientConfig.
const (
	DefaultBatchRecords      = 512
	DefaultBatchBytes        = 1 << 20
	DefaultBackoffMin        = 500 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultPollInterval      = time.Second
	DefaultAckTimeout        = 2 * time.Minute
)

// ErrRefused is wrapped when the backend answers a batch with Ack.error; the
// records stay in the source and are sent again after a backoff.
var ErrRefused = errors.New("batch refused by backend")

// Source is the agent's spool as the uplink sees it.
type Source interface {
	// Pending returns up to maxRecords records of about maxBytes in total,
	// alerts first, then findings, then events, oldest first within each,
	// without removing them.
	Pending(ctx context.Context, maxRecords, maxBytes int) ([]*api.Record, error)
	// Acked releases records the backend has durably stored.
	Acked(seqs []uint64) error
}

// RawRecord is a record as a RawSource stores it: a marshaled api.Record and
// the seq to send it under (which overrides one in Payload).
type RawRecord struct {
	Seq     uint64
	Payload []byte
}

// size is the record's encoded length with seq appended.
func (r RawRecord) size(seqField protowire.Number) int {
	return len(r.Payload) + protowire.SizeTag(seqField) + protowire.SizeVarint(r.Seq)
}

// RawSource is a Source whose records are stored marshaled, as the agent's
// spool keeps them. The client frames those bytes as they are instead of
// decoding every record and encoding it again, which cost more CPU than
// compressing the batch. A batch of raw records the backend refuses is sent
// once more through Pending, which drops records that do not decode.
type RawSource interface {
	Source
	// PendingRaw is Pending with the records left marshaled.
	PendingRaw(ctx context.Context, maxRecords, maxBytes int) ([]RawRecord, error)
}

// ClientConfig configures the agent's uplink.
type ClientConfig struct {
	// Addr is the backend's UDP address, host:port. Required.
	Addr string
	// FallbackAddrs are more backends (replicas of one site): when the
	// current one cannot be dialled, the next is tried, in turn. A host
	// name that resolves to several addresses counts as each of them.
	FallbackAddrs []string
	// TLS is the client configuration, normally from ClientTLS. Required.
	// Without a ClientSessionCache one is added, so reconnects use 0-RTT.
	TLS *tls.Config
	// AgentID is sent in every batch; it must equal the certificate's ID.
	// Required.
	AgentID string
	// SpoolID is sent in every batch: the source's sequence numbers are
	// unique per (AgentID, SpoolID). Empty or 32 hex digits (store.Spool.ID).
	SpoolID string
	// BatchRecords and BatchBytes bound one batch (before compression).
	// Defaults DefaultBatchRecords and DefaultBatchBytes.
	BatchRecords int
	BatchBytes   int
	// BandwidthBytesPerSec caps the compressed bytes sent (the edge link's
	// budget). 0 means unlimited.
	BandwidthBytesPerSec int64
	// BackoffMin and BackoffMax bound reconnect delays (exponential with
	// full jitter). Defaults DefaultBackoffMin and DefaultBackoffMax.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// HeartbeatInterval is the period of health-only batches. Default
	// DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// PollInterval is how often Pending is asked again when it returned
	// nothing and Notify was not called. Default DefaultPollInterval.
	PollInterval time.Duration
	// AckTimeout bounds the wait for an ack after a batch is sent. Default
	// DefaultAckTimeout.
	AckTimeout time.Duration
	// DialTimeout bounds one dial, handshake included: how long a backend
	// that is gone holds the uplink before the next one is tried. Default
	// 2 × the handshake timeout (20 s).
	DialTimeout time.Duration
	// Limits bound the batches sent and the acks read.
	Limits Limits
	// Health returns what heartbeats carry. May be nil.
	Health func() *api.AgentHealth
	// Gaps returns eviction gaps not reported yet; they ride on the next
	// batch and are kept until a batch carrying them is acknowledged. May be
	// nil.
	Gaps func() []*api.Gap
	// Control, when set, answers the backend's control channel (policies and
	// commands); nil refuses the backend's streams.
	Control ControlHandler
}

// ClientStats are the uplink's counters.
type ClientStats struct {
	Connected      bool
	BatchesSent    uint64 // batches acknowledged, heartbeats included
	HeartbeatsSent uint64 // heartbeats acknowledged
	RecordsAcked   uint64 // sequence numbers the backend acknowledged
	BytesSent      uint64 // compressed frame bytes written
	Reconnects     uint64
	Backend        string // the address dialled last
	Controls       uint64 // control frames answered
	ControlErrors  uint64 // control streams that failed
	LastError      string
}

// Client delivers a Source's records to the backend.
type Client struct {
	cfg     ClientConfig
	src     Source
	log     *slog.Logger
	codec   *Codec
	tlsConf *tls.Config
	qconf   *quic.Config
	bucket  *tokenBucket
	notify  chan struct{}
	rnd     func(int64) int64

	// gaps taken from cfg.Gaps but not yet acknowledged; Run's goroutine only.
	gaps []*api.Gap
	// backend counts the backends given up on: the next dial is to
	// candidate number backend (modulo their count). Run's goroutine only.
	backend int
	// decodeNext: the last batch of raw records was refused; send the next
	// one decoded. Run's goroutine only.
	decodeNext bool

	mu    sync.Mutex
	stats ClientStats
}

// NewClient checks cfg and returns a client that Run drives.
func NewClient(cfg ClientConfig, src Source, log *slog.Logger) (*Client, error) {
	switch {
	case cfg.Addr == "":
		return nil, errors.New("client address is required")
	case cfg.TLS == nil:
		return nil, errors.New("client TLS config is required")
	case src == nil:
		return nil, errors.New("client source is required")
	case cfg.BandwidthBytesPerSec < 0:
		return nil, errors.New("bandwidth cap must not be negative")
	}
	if err := validAgentID(cfg.AgentID); err != nil {
		return nil, err
	}
	if err := ValidSpoolID(cfg.SpoolID); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	setDefault(&cfg.BatchRecords, DefaultBatchRecords)
	setDefault(&cfg.BatchBytes, DefaultBatchBytes)
	setDefault(&cfg.BackoffMin, DefaultBackoffMin)
	setDefault(&cfg.BackoffMax, DefaultBackoffMax)
	setDefault(&cfg.HeartbeatInterval, DefaultHeartbeatInterval)
	setDefault(&cfg.PollInterval, DefaultPollInterval)
	setDefault(&cfg.AckTimeout, DefaultAckTimeout)
	setDefault(&cfg.DialTimeout, 2*handshakeTimeout)
	cfg.BackoffMax = max(cfg.BackoffMax, cfg.BackoffMin)
	cfg.Limits = cfg.Limits.withDefaults()

	tlsConf := cfg.TLS.Clone()
	if len(tlsConf.NextProtos) == 0 {
		tlsConf.NextProtos = []string{ALPN}
	}
	tlsConf.MinVersion = tls.VersionTLS13
	if tlsConf.ClientSessionCache == nil {
		tlsConf.ClientSessionCache = tls.NewLRUClientSessionCache(sessionCacheSize)
	}
	codec, err := NewCodec(cfg.Limits)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		src:     src,
		log:     log.With("backend", cfg.Addr),
		codec:   codec,
		tlsConf: tlsConf,
		qconf: &quic.Config{
			HandshakeIdleTimeout:  handshakeTimeout,
			MaxIdleTimeout:        DefaultIdleTimeout,
			KeepAlivePeriod:       keepAlivePeriod,
			MaxIncomingStreams:    -1, // the backend opens streams only for control
			MaxIncomingUniStreams: -1,
		},
		notify: make(chan struct{}, 1),
		rnd:    jitter,
	}
	if cfg.Control != nil {
		c.qconf.MaxIncomingStreams = controlStreams
	}
	if cfg.BandwidthBytesPerSec > 0 {
		c.bucket = newTokenBucket(cfg.BandwidthBytesPerSec, time.Now)
	}
	return c, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Notify tells the client that the source has new records, so it need not
// wait for the poll interval. It never blocks.
func (c *Client) Notify() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() ClientStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Client) update(f func(*ClientStats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// Run delivers records until ctx is done and then returns nil; call it once. Any
// connection failure leads to a reconnect after an exponential backoff with
// full jitter; records leave the source only when the backend acks them.
func (c *Client) Run(ctx context.Context) error {
	defer c.codec.Close()
	attempt := 0
	for {
		delivered, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if delivered {
			// The link worked: the next outage starts from the shortest delay.
			attempt = 0
		}
		d := backoff(attempt, c.cfg.BackoffMin, c.cfg.BackoffMax, c.rnd)
		attempt++
		c.update(func(s *ClientStats) { s.LastError = err.Error() })
		appErr, remote := errors.AsType[*quic.ApplicationError](err)
		remote = remote && appErr.Remote
		switch {
		case remote && appErr.ErrorCode == CodeForbidden:
			// Revoked: say so plainly. The records stay in the spool and
			// are delivered if the backend accepts this agent again.
			c.log.Error("backend refuses this agent; records stay in the spool", "reason", appErr.ErrorMessage, "delay", d)
		case remote && appErr.ErrorCode == CodeCertExpired:
			// The routine end of a connection under a rotated certificate.
			c.log.Info("client certificate of this connection expired; reconnecting with the current one", "delay", d)
		default:
			c.log.Warn("uplink down, reconnecting", "err", err, "delay", d)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		c.update(func(s *ClientStats) { s.Reconnects++ })
	}
}

// session dials once and sends until the connection fails or ctx ends. It
// reports whether any batch was acknowledged, and why it ended.
func (c *Client) session(ctx context.Context) (delivered bool, err error) {
	cands := c.candidates(ctx)
	target := cands[c.backend%len(cands)]
	defer func() {
		// A backend that took nothing is given up on: the next dial goes
		// to the next one. One that did is dialled again first.
		if !delivered && len(cands) > 1 {
			c.backend++
		}
	}()
	c.update(func(s *ClientStats) { s.Backend = target })
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	conn, err := quic.DialAddrEarly(dctx, target, c.tlsConf, c.qconf)
	cancel()
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", target, err)
	}
	// The control server (below) ends when the connection closes: wait for
	// it after closing whichever connection is current.
	var control sync.WaitGroup
	defer control.Wait()
	// current is the connection in use (a 0-RTT rejection replaces it), read
	// by the stop hook's goroutine.
	var current atomic.Pointer[quic.Conn]
	current.Store(conn)
	defer func() { _ = current.Load().CloseWithError(CodeOK, "") }()
	// Stream calls take no context; closing the connection unblocks them.
	stop := context.AfterFunc(ctx, func() { _ = current.Load().CloseWithError(CodeShutdown, "agent stopping") })
	defer stop()
	// Connected turns true with the first ack, not at dial: an early (0-RTT)
	// dial returns before the backend has answered at all.
	defer c.update(func(s *ClientStats) { s.Connected = false })
	c.log.Info("uplink dialled", "addr", target, "resuming", conn.ConnectionState().Used0RTT)
	serveControl := func(conn *quic.Conn) {
		if c.cfg.Control != nil {
			control.Go(func() { c.serveControl(ctx, conn) })
		}
	}
	serveControl(conn)

	hb := time.NewTicker(c.cfg.HeartbeatInterval)
	defer hb.Stop()
	poll := time.NewTimer(c.cfg.PollInterval)
	defer poll.Stop()
	heartbeatDue := true // the first heartbeat tells the backend we are back
	retried0RTT := false
	for {
		select {
		case <-hb.C:
			heartbeatDue = true
		default:
		}
		var sent bool
		if heartbeatDue {
			err = c.sendHeartbeat(ctx, conn)
			sent = err == nil
			heartbeatDue = err != nil
		} else {
			sent, err = c.sendPending(ctx, conn)
		}
		if errors.Is(err, quic.Err0RTTRejected) && !retried0RTT {
			// The backend restarted (new ticket keys) and refused our 0-RTT
			// data: finish the handshake and send the same records again.
			retried0RTT = true
			// conn keeps the old connection on failure: the deferred close
			// and the stop hook need a connection to close.
			next, nerr := conn.NextConnection(ctx)
			if nerr != nil {
				return delivered, fmt.Errorf("handshake after 0-RTT rejection: %w", nerr)
			}
			conn = next
			current.Store(conn)
			serveControl(conn)
			continue
		}
		if err != nil {
			return delivered, err
		}
		if sent {
			if !delivered {
				delivered = true
				c.update(func(s *ClientStats) { s.Connected = true })
				c.log.Info("uplink connected", "0rtt", conn.ConnectionState().Used0RTT)
			}
			continue // more may be pending
		}
		poll.Reset(c.cfg.PollInterval)
		select {
		case <-ctx.Done():
			return delivered, context.Cause(ctx)
		case <-conn.Context().Done():
			return delivered, fmt.Errorf("connection lost: %w", context.Cause(conn.Context()))
		case <-hb.C:
			heartbeatDue = true
		case <-c.notify:
		case <-poll.C:
		}
	}
}

// candidates are the addresses to dial, in order: Addr then FallbackAddrs,
// each host name expanded to every address it resolves to (looked up at
// each dial, so a changed DNS record is followed). A name that does not
// resolve stays as it is, for the dial to say why.
func (c *Client) candidates(ctx context.Context) []string {
	var out []string
	for _, a := range append([]string{c.cfg.Addr}, c.cfg.FallbackAddrs...) {
		host, port, err := net.SplitHostPort(a)
		if err != nil || net.ParseIP(host) != nil {
			out = append(out, a)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		ips, err := net.DefaultResolver.LookupHost(lctx, host)
		cancel()
		if err != nil || len(ips) == 0 {
			out = append(out, a)
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	return slices.Compact(out)
}

// sendPending sends one batch of pending records and gaps, if there are any.
func (c *Client) sendPending(ctx context.Context, conn *quic.Conn) (sent bool, err error) {
	rs, raw := c.src.(RawSource)
	raw = raw && !c.decodeNext
	var recs []*api.Record
	var raws []RawRecord
	if raw {
		raws, err = rs.PendingRaw(ctx, c.cfg.BatchRecords, c.cfg.BatchBytes)
	} else {
		recs, err = c.src.Pending(ctx, c.cfg.BatchRecords, c.cfg.BatchBytes)
	}
	if err != nil {
		// A spool read error is not the link's fault: keep the connection
		// and ask again after the poll interval.
		c.update(func(s *ClientStats) { s.LastError = err.Error() })
		c.log.Error("reading pending records failed", "err", err)
		return false, nil
	}
	gaps := c.takeGaps()
	if len(recs) == 0 && len(raws) == 0 && len(gaps) == 0 {
		return false, nil
	}
	b := &api.Batch{AgentId: c.cfg.AgentID, SpoolId: c.cfg.SpoolID, Records: recs, Gaps: gaps, Sent: timestamppb.Now()}
	ack, err := c.roundTrip(ctx, conn, b, raws)
	if err != nil {
		c.gaps = append(gaps, c.gaps...)
		if raw && rejected(err) {
			c.decodeNext = true
		}
		return false, err
	}
	if !raw {
		c.decodeNext = false
	}
	if len(ack.GetSeqs()) > 0 {
		if err := c.src.Acked(ack.GetSeqs()); err != nil {
			// The records stay pending and are sent again; the backend
			// de-duplicates them.
			c.update(func(s *ClientStats) { s.LastError = err.Error() })
			c.log.Error("releasing acked records failed", "err", err)
		}
	}
	c.update(func(s *ClientStats) {
		s.BatchesSent++
		s.RecordsAcked += uint64(len(ack.GetSeqs()))
	})
	return true, nil
}

// rejected reports whether the backend refused a batch it read (an ack with
// an error) or could not decode it (the stream reset as a bad frame).
func rejected(err error) bool {
	var se *quic.StreamError
	return errors.Is(err, ErrRefused) || (errors.As(err, &se) && se.ErrorCode == CodeBadFrame)
}

func (c *Client) sendHeartbeat(ctx context.Context, conn *quic.Conn) error {
	var h *api.AgentHealth
	if c.cfg.Health != nil {
		h = c.cfg.Health()
	}
	if h == nil {
		// The health field is what marks a heartbeat, so it is never nil.
		h = &api.AgentHealth{}
	}
	gaps := c.takeGaps()
	b := &api.Batch{AgentId: c.cfg.AgentID, SpoolId: c.cfg.SpoolID, Health: h, Gaps: gaps, Sent: timestamppb.Now()}
	if _, err := c.roundTrip(ctx, conn, b, nil); err != nil {
		c.gaps = append(gaps, c.gaps...)
		return fmt.Errorf("heartbeat: %w", err)
	}
	c.update(func(s *ClientStats) {
		s.BatchesSent++
		s.HeartbeatsSent++
	})
	return nil
}

func (c *Client) takeGaps() []*api.Gap {
	gaps := c.gaps
	c.gaps = nil
	if c.cfg.Gaps != nil {
		gaps = append(gaps, c.cfg.Gaps()...)
	}
	return gaps
}

// encode returns the frame of b and raws, dropping the newest records until
// it fits the frame limits (records are oldest first, so the dropped ones
// simply wait for the next batch).
func (c *Client) encode(b *api.Batch, raws []RawRecord) ([]byte, error) {
	for {
		frame, err := c.codec.EncodeRawBatch(b, raws)
		if errors.Is(err, ErrFrameTooLarge) {
			switch {
			case len(raws) > 1:
				raws = raws[:len(raws)/2]
				continue
			case len(b.Records) > 1:
				b.Records = b.Records[:len(b.Records)/2]
				continue
			}
		}
		return frame, err
	}
}

// roundTrip sends b with raws on a new stream and returns the backend's ack.
func (c *Client) roundTrip(ctx context.Context, conn *quic.Conn, b *api.Batch, raws []RawRecord) (_ *api.Ack, err error) {
	frame, err := c.encode(b, raws)
	if err != nil {
		return nil, err
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	defer func() {
		// After a 0-RTT rejection the stream ID is reused on the resumed
		// connection: cancelling this stream would reset the next one.
		if err != nil && !errors.Is(err, quic.Err0RTTRejected) {
			str.CancelRead(CodeStreamFailed)
			str.CancelWrite(CodeStreamFailed)
		}
	}()
	if err := writeLimited(ctx, str, c.bucket, frame); err != nil {
		return nil, fmt.Errorf("send batch: %w", err)
	}
	c.update(func(s *ClientStats) { s.BytesSent += uint64(len(frame)) })
	// One frame per direction: closing our side tells the backend the frame
	// is complete.
	if err := str.Close(); err != nil {
		return nil, fmt.Errorf("close stream: %w", err)
	}
	_ = str.SetReadDeadline(time.Now().Add(c.cfg.AckTimeout))
	ack, err := ReadAck(str, c.cfg.Limits)
	if err != nil {
		return nil, fmt.Errorf("read ack: %w", err)
	}
	if err := expectEOF(str); err != nil {
		return nil, fmt.Errorf("after ack: %w", err)
	}
	if ack.GetError() != "" {
		return nil, fmt.Errorf("%w: %s", ErrRefused, ack.GetError())
	}
	return ack, nil
}
