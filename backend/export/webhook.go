package export

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SignatureHeader carries "sha256=" + hex(HMAC-SHA256(key, body)).
const SignatureHeader = "X-Harrier-Signature"

// EventIDHeader carries the alert's ID, for receivers that de-duplicate.
const EventIDHeader = "X-Harrier-Event-Id"

// Sign is the value of SignatureHeader for body under key.
func Sign(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// webhookSink POSTs one record per request.
type webhookSink struct {
	cfg     WebhookConfig
	client  *http.Client
	hmacKey []byte
	token   string
	reply   string
}

func newWebhookSink(c WebhookConfig) (*webhookSink, error) {
	s := &webhookSink{cfg: c}
	if c.HMACKeyFile != "" {
		var err error
		if s.hmacKey, err = readSecret("webhook.hmacKeyFile", c.HMACKeyFile); err != nil {
			return nil, err
		}
	}
	if c.TokenFile != "" {
		t, err := readSecret("webhook.tokenFile", c.TokenFile)
		if err != nil {
			return nil, err
		}
		s.token = string(t)
	}
	var err error
	if s.client, err = newHTTPClient(c.TLS, c.Timeout.Std()); err != nil {
		return nil, err
	}
	return s, nil
}

// newHTTPClient is the HTTP client of every HTTP destination.
func newHTTPClient(t TLSConfig, timeout time.Duration) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a SIEM on the site's network, not through a proxy from the environment
	tc, err := clientTLS(t)
	if err != nil {
		return nil, err
	}
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

func (s *webhookSink) send(ctx context.Context, msgs []message) (int, error) {
	for i, m := range msgs {
		if err := s.post(ctx, m); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

func (s *webhookSink) post(ctx context.Context, m message) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(m.body))
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(EventIDHeader, m.head.GetId())
	if s.hmacKey != nil {
		req.Header.Set(SignatureHeader, Sign(s.hmacKey, m.body))
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", redactURL(s.cfg.URL), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // reuse the connection
	s.reply = fmt.Sprintf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(body)))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusRequestEntityTooLarge,
		resp.StatusCode == http.StatusUnsupportedMediaType, resp.StatusCode == http.StatusUnprocessableEntity:
		return &RejectedError{Reason: s.reply}
	}
	// 401/403 (a wrong secret), 404, 429, 5xx: the destination is not
	// taking records now; retried with backoff, never dead-lettered.
	return fmt.Errorf("webhook %s: %s", redactURL(s.cfg.URL), s.reply)
}

func (s *webhookSink) confirmAfter() time.Duration { return 0 }
func (s *webhookSink) check() error                { return nil }
func (s *webhookSink) lastReply() string           { return s.reply }
func (s *webhookSink) close() error                { s.client.CloseIdleConnections(); return nil }

// redactURL drops the query and user info, which may carry credentials.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
