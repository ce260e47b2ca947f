package export

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// splunkSink sends a batch as one request to Splunk's HTTP Event Collector
// (/services/collector/event): concatenated JSON event objects. With
// indexer acknowledgement on, a batch counts as delivered only once
// /services/collector/ack says it was indexed.
type splunkSink struct {
	cfg     SplunkConfig
	client  *http.Client
	token   string
	channel string // X-Splunk-Request-Channel, one per sink
	reply   string
}

func newSplunkSink(c SplunkConfig) (*splunkSink, error) {
	tok, err := readSecret("splunk.tokenFile", c.TokenFile)
	if err != nil {
		return nil, err
	}
	client, err := newHTTPClient(c.TLS, c.Timeout.Std())
	if err != nil {
		return nil, err
	}
	var ch [16]byte
	_, _ = rand.Read(ch[:])
	h := hex.EncodeToString(ch[:])
	channel := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	return &splunkSink{cfg: c, client: client, token: string(tok), channel: channel}, nil
}

// hecEvent is one event of HEC's /services/collector/event format.
type hecEvent struct {
	Time       float64         `json:"time,omitempty"` // epoch seconds
	Host       string          `json:"host,omitempty"`
	Source     string          `json:"source,omitempty"`
	SourceType string          `json:"sourcetype,omitempty"`
	Index      string          `json:"index,omitempty"`
	Event      json.RawMessage `json:"event"`
	Fields     map[string]any  `json:"fields,omitempty"`
}

func (s *splunkSink) body(msgs []message) ([]byte, error) {
	var b bytes.Buffer
	for _, m := range msgs {
		a := m.head
		ev := hecEvent{Host: a.GetNode(), Source: s.cfg.Source, SourceType: s.cfg.SourceType, Index: s.cfg.Index,
			Fields: map[string]any{"harrier_event_id": a.GetId(), "detection": a.GetDetectionId()}}
		if ls := a.GetLastSeen(); ls != nil {
			ev.Time = float64(ls.AsTime().UnixMicro()) / 1e6
		}
		// A JSON format goes in as an object Splunk extracts fields from;
		// CEF as a string.
		if json.Valid(m.body) && len(m.body) > 0 && m.body[0] == '{' {
			ev.Event = m.body
		} else {
			q, err := json.Marshal(string(m.body))
			if err != nil {
				return nil, fmt.Errorf("splunk: %w", err)
			}
			ev.Event = q
		}
		if err := json.NewEncoder(&b).Encode(ev); err != nil {
			return nil, fmt.Errorf("splunk: %w", err)
		}
	}
	return b.Bytes(), nil
}

func (s *splunkSink) send(ctx context.Context, msgs []message) (int, error) {
	body, err := s.body(msgs)
	if err != nil {
		return 0, err
	}
	code, reply, err := s.post(ctx, "/services/collector/event", body)
	if err != nil {
		return 0, err
	}
	r, perr := ParseHECReply(reply)
	s.reply = fmt.Sprintf("HTTP %d: %s", code, r.describe(reply))
	switch {
	case code >= 200 && code < 300 && perr == nil && r.Code == 0:
	case code == http.StatusBadRequest && perr == nil && r.InvalidEvent != nil && *r.InvalidEvent >= 0 && *r.InvalidEvent < len(msgs):
		// HEC reads the events in order and names the first it could not
		// take; those before it are indexed.
		return *r.InvalidEvent, &RejectedError{Reason: s.reply}
	case code == http.StatusBadRequest && len(msgs) == 1 && perr == nil && (r.Code == 6 || r.Code == 12 || r.Code == 13 || r.Code == 15):
		return 0, &RejectedError{Reason: s.reply}
	case code == http.StatusRequestEntityTooLarge && len(msgs) == 1:
		return 0, &RejectedError{Reason: s.reply}
	case code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge:
		// Which event is unknown: send them one at a time.
		for i := range msgs {
			if _, err := s.send(ctx, msgs[i:i+1]); err != nil {
				return i, err
			}
		}
		return len(msgs), nil
	default:
		// 401/403 (token), 503 (busy, code 9), 500: retried.
		return 0, fmt.Errorf("splunk %s: %s", redactURL(s.cfg.URL), s.reply)
	}
	if !s.cfg.Ack {
		return len(msgs), nil
	}
	if r.AckID == nil {
		return 0, fmt.Errorf("splunk %s: acknowledgement is configured but HEC returned no ackId (is indexer acknowledgement on for the token?)", redactURL(s.cfg.URL))
	}
	if err := s.waitAck(ctx, *r.AckID); err != nil {
		return 0, err
	}
	return len(msgs), nil
}

// waitAck polls /services/collector/ack until the batch is indexed.
func (s *splunkSink) waitAck(ctx context.Context, id int64) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout.Std())
	defer cancel()
	body := fmt.Appendf(nil, `{"acks":[%d]}`, id)
	wait := 50 * time.Millisecond
	for {
		code, reply, err := s.post(ctx, "/services/collector/ack", body)
		if err != nil {
			return fmt.Errorf("splunk ack %d: %w", id, err)
		}
		if code != http.StatusOK {
			s.reply = fmt.Sprintf("ack: HTTP %d: %s", code, strings.TrimSpace(string(reply)))
			return fmt.Errorf("splunk %s: %s", redactURL(s.cfg.URL), s.reply)
		}
		done, err := ParseHECAck(reply, id)
		if err != nil {
			return fmt.Errorf("splunk ack %d: %w", id, err)
		}
		if done {
			s.reply += fmt.Sprintf(" (ack %d: indexed)", id)
			return nil
		}
		if !sleep(ctx, wait) {
			return fmt.Errorf("splunk ack %d: not indexed within %s", id, s.cfg.AckTimeout.Std())
		}
		wait = min(2*wait, time.Second)
	}
}

func (s *splunkSink) post(ctx context.Context, path string, body []byte) (int, []byte, error) {
	u := strings.TrimRight(s.cfg.URL, "/") + path
	if path == "/services/collector/ack" {
		u += "?channel=" + s.channel
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("splunk: %w", err)
	}
	req.Header.Set("Authorization", "Splunk "+s.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Splunk-Request-Channel", s.channel)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("splunk %s: %w", redactURL(s.cfg.URL), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxOTLPReply))
	if err != nil {
		return 0, nil, fmt.Errorf("splunk %s: read the answer: %w", redactURL(s.cfg.URL), err)
	}
	return resp.StatusCode, b, nil
}

// HECReply is HEC's answer to an event request.
type HECReply struct {
	Text         string `json:"text"`
	Code         int    `json:"code"`
	AckID        *int64 `json:"ackId"`
	InvalidEvent *int   `json:"invalid-event-number"`
}

// ParseHECReply decodes HEC's JSON answer.
func ParseHECReply(b []byte) (HECReply, error) {
	var r HECReply
	if err := json.Unmarshal(b, &r); err != nil {
		return HECReply{}, fmt.Errorf("hec answer: %w", err)
	}
	return r, nil
}

func (r HECReply) describe(raw []byte) string {
	if r.Text == "" && r.Code == 0 {
		s := strings.ToValidUTF8(strings.TrimSpace(string(raw)), "\uFFFD")
		if len(s) > 256 {
			s = s[:256]
		}
		return strings.ReplaceAll(s, "\n", " ")
	}
	d := strconv.Quote(r.Text) + " (code " + strconv.Itoa(r.Code) + ")"
	if r.InvalidEvent != nil {
		d += fmt.Sprintf(", invalid event %d", *r.InvalidEvent)
	}
	return d
}

// ParseHECAck reads /services/collector/ack's answer, {"acks":{"7":true}},
// and reports whether id is indexed.
func ParseHECAck(b []byte, id int64) (bool, error) {
	var r struct {
		Acks map[string]bool `json:"acks"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return false, fmt.Errorf("hec ack answer: %w", err)
	}
	v, ok := r.Acks[strconv.FormatInt(id, 10)]
	if !ok {
		return false, errors.New("hec ack answer does not mention the ack ID")
	}
	return v, nil
}

func (s *splunkSink) confirmAfter() time.Duration { return 0 }
func (s *splunkSink) check() error                { return nil }
func (s *splunkSink) lastReply() string           { return s.reply }
func (s *splunkSink) close() error                { s.client.CloseIdleConnections(); return nil }
