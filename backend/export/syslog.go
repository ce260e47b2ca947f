package export

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// RFC 5424 field limits (section 6) and the structured data ID Harrier
// uses. 32473 is the enterprise number RFC 5612 reserves for documentation
// and examples: Harrier has none of its own yet.
const (
	maxHostname = 255
	maxAppName  = 48
	maxMsgID    = 32
	sdID        = "harrier@32473"
)

// syslogSeverity maps Harrier's severities onto RFC 5424's (0 emergency ..
// 7 debug).
func syslogSeverity(s api.Severity) int {
	switch s {
	case api.Severity_SEVERITY_CRITICAL:
		return 2
	case api.Severity_SEVERITY_HIGH:
		return 3
	case api.Severity_SEVERITY_MEDIUM:
		return 4
	case api.Severity_SEVERITY_LOW:
		return 5
	}
	return 6
}

// syslogHeader names what the header says about the sender.
type syslogHeader struct {
	facility int
	hostname string // default when the alert has no node
	appName  string
}

// AppendRFC5424 appends one RFC 5424 message for a whose MSG is body. Header
// fields keep to PRINTUSASCII (anything else becomes '_'), within their
// lengths, or are the NILVALUE '-'; SD-PARAM values escape '"', '\' and ']'
// (section 6.3.3) and are valid UTF-8. body is written as is: the framing
// (octet counting) carries any bytes.
func AppendRFC5424(dst []byte, h syslogHeader, a *api.Alert, body []byte) []byte {
	pri := h.facility*8 + syslogSeverity(a.GetSeverity())
	dst = append(dst, '<')
	dst = strconv.AppendInt(dst, int64(pri), 10)
	dst = append(dst, ">1 "...)
	ts := a.GetLastSeen()
	if ts == nil {
		ts = a.GetFirstSeen()
	}
	if ts == nil {
		dst = append(dst, '-')
	} else {
		dst = ts.AsTime().UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000Z07:00")
	}
	dst = append(dst, ' ')
	dst = appendHeaderField(dst, firstNonEmpty(a.GetNode(), h.hostname), maxHostname)
	dst = append(dst, ' ')
	dst = appendHeaderField(dst, h.appName, maxAppName)
	dst = append(dst, " - "...) // PROCID
	dst = appendHeaderField(dst, a.GetDetectionId(), maxMsgID)
	dst = append(dst, " ["...)
	dst = append(dst, sdID...)
	for _, p := range [...]struct{ k, v string }{
		{"id", a.GetId()},
		{"detection", a.GetDetectionId()},
		{"severity", a.GetSeverity().Name()},
		{"cluster", a.GetCluster()},
		{"namespace", a.GetContainer().GetPodNamespace()},
	} {
		if p.v == "" {
			continue
		}
		dst = append(dst, ' ')
		dst = append(dst, p.k...)
		dst = append(dst, `="`...)
		dst = appendParamValue(dst, p.v)
		dst = append(dst, '"')
	}
	dst = append(dst, "] "...)
	return append(dst, body...)
}

func appendHeaderField(dst []byte, s string, maxLen int) []byte {
	if s == "" {
		return append(dst, '-')
	}
	if len(s) > maxLen {
		s = s[:maxLen]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 33 || c > 126 {
			c = '_'
		}
		dst = append(dst, c)
	}
	return dst
}

func appendParamValue(dst []byte, s string) []byte {
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch r {
		case '"', '\\', ']':
			dst = append(dst, '\\', byte(r))
		default:
			dst = append(dst, string(r)...)
		}
	}
	return dst
}

// appendOctetCounted frames msg for TCP and TLS: "MSG-LEN SP SYSLOG-MSG"
// (RFC 6587 3.4.1, RFC 5425 4.3).
func appendOctetCounted(dst, msg []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, ' ')
	return append(dst, msg...)
}

// syslogSink sends to one syslog receiver.
type syslogSink struct {
	cfg    SyslogConfig
	header syslogHeader
	tls    *tls.Config
	conn   net.Conn
	w      *bufio.Writer
	buf    []byte
	reply  string
}

func newSyslogSink(cfg SyslogConfig, hostname string) (*syslogSink, error) {
	s := &syslogSink{cfg: cfg, header: syslogHeader{facility: *cfg.Facility, hostname: firstNonEmpty(cfg.Hostname, hostname), appName: cfg.AppName}}
	if cfg.Network == "tls" {
		var err error
		if s.tls, err = clientTLS(cfg.TLS); err != nil {
			return nil, err
		}
		if s.tls.ServerName == "" {
			host, _, _ := net.SplitHostPort(cfg.Address)
			s.tls.ServerName = host
		}
	}
	return s, nil
}

func (s *syslogSink) confirmAfter() time.Duration {
	if s.cfg.Network == "udp" {
		return 0
	}
	return s.cfg.ConfirmAfter.Std()
}

func (s *syslogSink) dial(ctx context.Context) error {
	if s.conn != nil {
		return nil
	}
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	var err error
	switch s.cfg.Network {
	case "tls":
		td := tls.Dialer{NetDialer: &d, Config: s.tls}
		s.conn, err = td.DialContext(ctx, "tcp", s.cfg.Address)
	default:
		s.conn, err = d.DialContext(ctx, s.cfg.Network, s.cfg.Address)
	}
	if err != nil {
		s.conn = nil
		return fmt.Errorf("syslog %s %s: %w", s.cfg.Network, s.cfg.Address, err)
	}
	s.w = bufio.NewWriterSize(s.conn, 64<<10)
	return nil
}

func (s *syslogSink) send(ctx context.Context, msgs []message) (int, error) {
	if err := s.dial(ctx); err != nil {
		return 0, err
	}
	if s.cfg.Network == "udp" {
		for i, m := range msgs {
			s.buf = AppendRFC5424(s.buf[:0], s.header, m.head, m.body)
			if _, err := s.conn.Write(s.buf); err != nil {
				if errors.Is(err, syscall.EMSGSIZE) {
					return i, &RejectedError{Reason: fmt.Sprintf("%d bytes do not fit in a UDP datagram", len(s.buf))}
				}
				s.closeConn()
				return i, fmt.Errorf("syslog udp %s: %w", s.cfg.Address, err)
			}
		}
		s.reply = fmt.Sprintf("sent %d datagram(s) to %s (syslog over UDP has no reply)", len(msgs), s.cfg.Address)
		return len(msgs), nil
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	for _, m := range msgs {
		s.buf = AppendRFC5424(s.buf[:0], s.header, m.head, m.body)
		s.buf = appendOctetCounted(make([]byte, 0, len(s.buf)+8), s.buf)
		if _, err := s.w.Write(s.buf); err != nil {
			s.closeConn()
			return 0, fmt.Errorf("syslog %s %s: %w", s.cfg.Network, s.cfg.Address, err)
		}
	}
	if err := s.w.Flush(); err != nil {
		s.closeConn()
		return 0, fmt.Errorf("syslog %s %s: %w", s.cfg.Network, s.cfg.Address, err)
	}
	s.reply = fmt.Sprintf("wrote %d message(s) to %s over %s (octet counting); syslog has no application-level reply", len(msgs), s.cfg.Address, strings.ToUpper(s.cfg.Network))
	return len(msgs), nil
}

// check tells whether the receiver has closed the connection: it reads with
// a deadline in the past, which a live connection answers with a timeout.
func (s *syslogSink) check() error {
	if s.conn == nil || s.cfg.Network == "udp" {
		return nil
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	var one [1]byte
	_, err := s.conn.Read(one[:])
	_ = s.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	s.closeConn()
	if err == nil {
		return errors.New("syslog receiver sent data, which it never should: connection dropped")
	}
	return fmt.Errorf("syslog %s %s: connection lost: %w", s.cfg.Network, s.cfg.Address, err)
}

func (s *syslogSink) lastReply() string { return s.reply }

func (s *syslogSink) closeConn() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn, s.w = nil, nil
	}
}

func (s *syslogSink) close() error { s.closeConn(); return nil }
