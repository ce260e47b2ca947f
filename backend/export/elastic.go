package export

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// elasticSink indexes a batch with one Elasticsearch/OpenSearch _bulk
// request. Each document's _id is the alert's ID, so sending a record again
// (a retry, a restart) overwrites the same document: exactly once in the
// index. Items are judged one by one: a malformed one (4xx) is
// dead-lettered, a retryable one (429, 5xx) stops the batch there.
type elasticSink struct {
	cfg    ElasticConfig
	client *http.Client
	auth   string
	reply  string
	// indexed holds the records of the last request that were indexed
	// after the item that stopped it: the next call does not send them
	// again.
	indexed map[uint64]bool
}

func newElasticSink(c ElasticConfig) (*elasticSink, error) {
	s := &elasticSink{cfg: c, indexed: map[uint64]bool{}}
	switch {
	case c.APIKeyFile != "":
		k, err := readSecret("elasticsearch.apiKeyFile", c.APIKeyFile)
		if err != nil {
			return nil, err
		}
		s.auth = "ApiKey " + string(k)
	case c.Username != "":
		p, err := readSecret("elasticsearch.passwordFile", c.PasswordFile)
		if err != nil {
			return nil, err
		}
		s.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+string(p)))
	}
	var err error
	if s.client, err = newHTTPClient(c.TLS, c.Timeout.Std()); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *elasticSink) send(ctx context.Context, msgs []message) (int, error) {
	var body bytes.Buffer
	var sent []int // index in msgs of each item of the request
	for i, m := range msgs {
		if s.indexed[m.seq] {
			continue
		}
		action, err := json.Marshal(map[string]map[string]string{s.cfg.Op: {"_index": s.cfg.Index, "_id": m.head.GetId()}})
		if err != nil {
			return 0, fmt.Errorf("elasticsearch: %w", err)
		}
		body.Write(action)
		body.WriteByte('\n')
		body.Write(m.body) // one line: every JSON encoder writes compact JSON
		body.WriteByte('\n')
		sent = append(sent, i)
	}
	s.indexed = map[uint64]bool{}
	if len(sent) == 0 {
		return len(msgs), nil
	}
	code, reply, err := s.post(ctx, body.Bytes())
	if err != nil {
		return 0, err
	}
	if code < 200 || code >= 300 {
		s.reply = fmt.Sprintf("HTTP %d: %s", code, oneLine(reply, 256))
		if code == http.StatusRequestEntityTooLarge && len(sent) == 1 {
			return sent[0], &RejectedError{Reason: s.reply}
		}
		// 401/403, 429, 5xx, and a 400 of the whole request: retried.
		return 0, fmt.Errorf("elasticsearch %s: %s", redactURL(s.cfg.URL), s.reply)
	}
	items, err := ParseBulkResponse(reply)
	if err != nil {
		s.reply = fmt.Sprintf("HTTP %d: %v", code, err)
		return 0, fmt.Errorf("elasticsearch %s: %w", redactURL(s.cfg.URL), err)
	}
	if len(items) != len(sent) {
		s.reply = fmt.Sprintf("HTTP %d: %d items for %d records", code, len(items), len(sent))
		return 0, fmt.Errorf("elasticsearch %s: %s", redactURL(s.cfg.URL), s.reply)
	}
	s.reply = fmt.Sprintf("HTTP %d: %d items indexed", code, len(items))
	stop, stopErr := -1, error(nil)
	for k, it := range items {
		i := sent[k]
		switch it.verdict(s.cfg.Op) {
		case bulkDone:
			if stop >= 0 {
				s.indexed[msgs[i].seq] = true
			}
		case bulkRejected:
			if stop < 0 {
				stop = i
				s.reply = "item " + it.describe()
				stopErr = &RejectedError{Reason: s.reply}
			}
		case bulkRetry:
			if stop < 0 {
				stop = i
				s.reply = "item " + it.describe()
				stopErr = fmt.Errorf("elasticsearch %s: %s", redactURL(s.cfg.URL), s.reply)
			}
		}
	}
	if stop >= 0 {
		return stop, stopErr
	}
	return len(msgs), nil
}

func (s *elasticSink) post(ctx context.Context, body []byte) (int, []byte, error) {
	u := strings.TrimRight(s.cfg.URL, "/") + "/_bulk"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("elasticsearch: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if s.auth != "" {
		req.Header.Set("Authorization", s.auth)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("elasticsearch %s: %w", redactURL(s.cfg.URL), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBulkReply))
	if err != nil {
		return 0, nil, fmt.Errorf("elasticsearch %s: read the answer: %w", redactURL(s.cfg.URL), err)
	}
	return resp.StatusCode, b, nil
}

// A _bulk answer lists an item per action; a batch of 10 000 with long
// error reasons stays well under this.
const maxBulkReply = 64 << 20

// BulkItem is one item of a _bulk answer: the result of one action.
type BulkItem struct {
	Op     string
	ID     string
	Status int
	Error  string // error.type: error.reason
}

type bulkVerdict int

const (
	bulkDone bulkVerdict = iota
	bulkRejected
	bulkRetry
)

func (it BulkItem) verdict(op string) bulkVerdict {
	switch {
	case it.Status >= 200 && it.Status < 300:
		return bulkDone
	case it.Status == http.StatusConflict && op == ElasticOpCreate:
		// create of an _id already there: delivered before.
		return bulkDone
	case it.Status == http.StatusTooManyRequests || it.Status >= 500 || it.Status == 0:
		return bulkRetry
	}
	// 400 mapper_parsing_exception, document_parsing_exception, 409 of
	// index (a version conflict), 404 of a missing index without
	// auto-create ...: this record will not be taken as it is.
	return bulkRejected
}

func (it BulkItem) describe() string {
	return fmt.Sprintf("%s %s: status %d: %s", it.Op, it.ID, it.Status, it.Error)
}

// ParseBulkResponse decodes a _bulk answer's items, in request order.
func ParseBulkResponse(b []byte) ([]BulkItem, error) {
	var r struct {
		Errors *bool                        `json:"errors"`
		Items  []map[string]json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("_bulk answer: %w", err)
	}
	if r.Errors == nil {
		return nil, errors.New("_bulk answer: no errors field")
	}
	out := make([]BulkItem, 0, len(r.Items))
	for i, m := range r.Items {
		if len(m) != 1 {
			return nil, fmt.Errorf("_bulk answer: item %d has %d actions, want 1", i, len(m))
		}
		for op, raw := range m {
			var it struct {
				ID     string          `json:"_id"`
				Status int             `json:"status"`
				Error  json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(raw, &it); err != nil {
				return nil, fmt.Errorf("_bulk answer: item %d: %w", i, err)
			}
			if it.Status < 100 || it.Status > 599 {
				return nil, fmt.Errorf("_bulk answer: item %d: status %d", i, it.Status)
			}
			bi := BulkItem{Op: op, ID: it.ID, Status: it.Status}
			if len(it.Error) > 0 && string(it.Error) != "null" {
				var e struct {
					Type   string `json:"type"`
					Reason string `json:"reason"`
				}
				if json.Unmarshal(it.Error, &e) == nil && e.Type != "" {
					bi.Error = oneLine([]byte(e.Type+": "+e.Reason), 512)
				} else {
					bi.Error = oneLine(it.Error, 512)
				}
			}
			out = append(out, bi)
		}
	}
	return out, nil
}

// oneLine is b as one line of valid UTF-8, at most n bytes, for replies.
func oneLine(b []byte, n int) string {
	s := strings.ToValidUTF8(strings.TrimSpace(string(b)), "\uFFFD")
	s = strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "")
	}
	return s
}

func (s *elasticSink) confirmAfter() time.Duration { return 0 }
func (s *elasticSink) check() error                { return nil }
func (s *elasticSink) lastReply() string           { return s.reply }
func (s *elasticSink) close() error                { s.client.CloseIdleConnections(); return nil }
