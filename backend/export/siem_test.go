package export

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/confval"
)

// No Splunk or Elasticsearch can be installed here: these receivers
// implement the request and answer formats of their public documentation
// (Splunk: "Format events for HTTP Event Collector", "HTTP Event Collector
// REST API endpoints", "Troubleshoot HTTP Event Collector" status codes,
// "About HTTP Event Collector Indexer Acknowledgment"; Elasticsearch: the
// Bulk API reference), including their partial-failure and 503 answers.

// hecReceiver is Splunk's HEC: /services/collector/event and
// /services/collector/ack.
type hecReceiver struct {
	token string
	mu    sync.Mutex
	got   map[string]int // harrier_event_id → events indexed
	// poison IDs are answered "Invalid data format" (code 6) with their
	// invalid-event-number; the events before them are indexed.
	poison      map[string]bool
	down        bool
	nextAck     int64
	ackPolls    map[int64]int // an ack is true from the second poll on
	badAuth     int
	noChannel   int
	sourcetypes map[string]int
}

func newHEC(token string) *hecReceiver {
	return &hecReceiver{token: token, got: map[string]int{}, poison: map[string]bool{}, ackPolls: map[int64]int{}, sourcetypes: map[string]int{}}
}

func hecAnswer(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *hecReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Header.Get("Authorization") != "Splunk "+h.token {
		h.badAuth++
		hecAnswer(w, http.StatusUnauthorized, map[string]any{"text": "Invalid authorization", "code": 3})
		return
	}
	if h.down {
		hecAnswer(w, http.StatusServiceUnavailable, map[string]any{"text": "Server is busy", "code": 9})
		return
	}
	channel := r.Header.Get("X-Splunk-Request-Channel")
	if channel == "" {
		h.noChannel++
		hecAnswer(w, http.StatusBadRequest, map[string]any{"text": "Data channel is missing", "code": 10})
		return
	}
	switch r.URL.Path {
	case "/services/collector/ack":
		if r.URL.Query().Get("channel") != channel {
			hecAnswer(w, http.StatusBadRequest, map[string]any{"text": "Invalid data channel", "code": 11})
			return
		}
		var req struct{ Acks []int64 }
		if err := json.Unmarshal(body, &req); err != nil {
			hecAnswer(w, http.StatusBadRequest, map[string]any{"text": "Invalid data format", "code": 6})
			return
		}
		acks := map[string]bool{}
		for _, id := range req.Acks {
			h.ackPolls[id]++
			acks[strconv.FormatInt(id, 10)] = id < h.nextAck && h.ackPolls[id] > 1
		}
		hecAnswer(w, http.StatusOK, map[string]any{"acks": acks})
		return
	case "/services/collector/event":
	default:
		hecAnswer(w, http.StatusNotFound, map[string]any{"text": "The requested URL was not found on this server.", "code": 404})
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	n := 0
	for ; dec.More(); n++ {
		var ev struct {
			Event      json.RawMessage `json:"event"`
			SourceType string          `json:"sourcetype"`
			Fields     map[string]string
		}
		if err := dec.Decode(&ev); err != nil {
			hecAnswer(w, http.StatusBadRequest, map[string]any{"text": "Invalid data format", "code": 6, "invalid-event-number": n})
			return
		}
		if len(ev.Event) == 0 || string(ev.Event) == "null" {
			hecAnswer(w, http.StatusBadRequest, map[string]any{"text": "Event field is required", "code": 12, "invalid-event-number": n})
			return
		}
		id := ev.Fields["harrier_event_id"]
		if h.poison[id] {
			hecAnswer(w, http.StatusBadRequest, map[string]any{"text": "Invalid data format", "code": 6, "invalid-event-number": n})
			return
		}
		h.got[id]++
		h.sourcetypes[ev.SourceType]++
	}
	if n == 0 {
		hecAnswer(w, http.StatusBadRequest, map[string]any{"text": "No data", "code": 5})
		return
	}
	h.nextAck++
	hecAnswer(w, http.StatusOK, map[string]any{"text": "Success", "code": 0, "ackId": h.nextAck - 1})
}

func (h *hecReceiver) set(f func()) {
	h.mu.Lock()
	f()
	h.mu.Unlock()
}

// TestSplunkHEC: 2 000 alerts in batches of 100 with indexer
// acknowledgement; a record HEC refuses is dead-lettered and the events
// around it still arrive; a 503 outage loses nothing; a wrong token
// delivers nothing and is retried.
func TestSplunkHEC(t *testing.T) {
	const total = 2000
	hec := newHEC("hec-token-1")
	hec.poison["alert-00777"] = true
	srv := httptest.NewServer(hec)
	defer srv.Close()
	src := &memSource{}
	for i := range total {
		src.add(alertN(i))
	}
	kv := newMemKV()
	cfg := Config{Name: "splunk", Type: TypeSplunk, Format: FormatOCSF, BatchSize: 100,
		Splunk: &SplunkConfig{URL: srv.URL, TokenFile: writeSecret(t, "hec-token-1"), Ack: true},
		Retry:  RetryConfig{Initial: confval.Duration(20 * time.Millisecond), Max: confval.Duration(100 * time.Millisecond)}}
	m, err := New([]Config{cfg}, src, kv, Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		hec.mu.Lock()
		defer hec.mu.Unlock()
		return len(hec.got)
	}
	hec.set(func() { hec.down = true })
	go func() {
		time.Sleep(300 * time.Millisecond)
		hec.set(func() { hec.down = false })
	}()
	runFor(t, m, 30*time.Second, func() bool { return count() == total-1 && m.Status()[0].State == "caught-up" })
	st := m.Status()[0]
	for i := range total {
		id := alertN(i).Id
		if n := hec.got[id]; (id == "alert-00777") != (n == 0) || n > 1 {
			t.Errorf("%s indexed %d times", id, n)
		}
	}
	if st.DeadLettered != 1 || st.Failed == 0 || hec.sourcetypes["harrier:alert"] != total-1 || hec.noChannel != 0 {
		t.Errorf("status %+v, sourcetypes %v", st, hec.sourcetypes)
	}
	dl, err := m.DeadLetters(t.Context(), "splunk", 10)
	if err != nil || len(dl) != 1 || dl[0].AlertID != "alert-00777" || !strings.Contains(dl[0].Reason, "(code 6), invalid event 77") {
		t.Errorf("dead letters %+v, %v", dl, err)
	}
	if !strings.Contains(m.runners[0].sink.lastReply(), "indexed") {
		t.Errorf("last reply %q", m.runners[0].sink.lastReply())
	}

	// A wrong token: every request refused (401), nothing delivered or
	// dead-lettered, the export keeps retrying.
	src.add(alertN(total))
	cfg.Name, cfg.Splunk.TokenFile = "splunk-wrong", writeSecret(t, "not-the-token")
	m, err = New([]Config{cfg}, src, newMemKV(), Options{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, m, 10*time.Second, func() bool { return m.Status()[0].Failed >= 3 })
	if st := m.Status()[0]; st.Sent != 0 || st.DeadLettered != 0 || !strings.Contains(st.LastError, "HTTP 401") || strings.Contains(st.LastError, "not-the-token") {
		t.Errorf("wrong token: %+v", st)
	}
}

// esReceiver is Elasticsearch's _bulk: NDJSON action and source lines, an
// answer with one item per action in order.
type esReceiver struct {
	apiKey string
	mu     sync.Mutex
	docs   map[string]json.RawMessage // _index/_id → source
	writes map[string]int
	// poison IDs fail with 400 mapper_parsing_exception; flaky IDs with
	// 429 es_rejected_execution_exception the first time.
	poison, flaky map[string]bool
	down          bool
	requests      int
}

func newES(key string) *esReceiver {
	return &esReceiver{apiKey: key, docs: map[string]json.RawMessage{}, writes: map[string]int{}, poison: map[string]bool{}, flaky: map[string]bool{}}
}

func (e *esReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requests++
	esError := func(code int, typ, reason string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"type": typ, "reason": reason}, "status": code})
	}
	if r.Header.Get("Authorization") != "ApiKey "+e.apiKey {
		esError(http.StatusUnauthorized, "security_exception", "missing authentication credentials")
		return
	}
	if e.down {
		esError(http.StatusServiceUnavailable, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized]")
		return
	}
	if r.URL.Path != "/_bulk" || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-ndjson" {
		esError(http.StatusBadRequest, "illegal_argument_exception", "want POST /_bulk with application/x-ndjson")
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 16<<20)
	var items []map[string]any
	errs := false
	for sc.Scan() {
		var action map[string]struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &action); err != nil || len(action) != 1 {
			esError(http.StatusBadRequest, "illegal_argument_exception", "Malformed action/metadata line")
			return
		}
		if !sc.Scan() {
			esError(http.StatusBadRequest, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]")
			return
		}
		src := json.RawMessage(bytes.Clone(sc.Bytes()))
		for op, meta := range action {
			key := meta.Index + "/" + meta.ID
			it := map[string]any{"_index": meta.Index, "_id": meta.ID}
			var doc map[string]any
			switch {
			case op != "index" && op != "create":
				esError(http.StatusBadRequest, "illegal_argument_exception", "Malformed action/metadata line")
				return
			case json.Unmarshal(src, &doc) != nil || e.poison[meta.ID]:
				it["status"] = 400
				it["error"] = map[string]any{"type": "document_parsing_exception", "reason": "[1:2] failed to parse field [time] of type [date]"}
			case e.flaky[meta.ID]:
				delete(e.flaky, meta.ID)
				it["status"] = 429
				it["error"] = map[string]any{"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}
			case op == "create" && e.docs[key] != nil:
				it["status"] = 409
				it["error"] = map[string]any{"type": "version_conflict_engine_exception", "reason": "[" + meta.ID + "]: version conflict, document already exists"}
			default:
				it["status"], it["result"] = 201, "created"
				if e.docs[key] != nil {
					it["status"], it["result"] = 200, "updated"
				}
				e.docs[key] = src
				e.writes[key]++
				it["_version"] = e.writes[key]
			}
			if it["status"].(int) >= 300 {
				errs = true
			}
			items = append(items, map[string]any{op: it})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"took": 3, "errors": errs, "items": items})
}

func (e *esReceiver) set(f func()) {
	e.mu.Lock()
	f()
	e.mu.Unlock()
}

// TestElasticsearchBulk: 3 000 alerts with _id = the alert ID; one item
// refused as malformed is dead-lettered, items refused with 429 are sent
// again, a 503 of the whole request is retried; every document is indexed
// once, and with op create a record sent again counts as delivered.
func TestElasticsearchBulk(t *testing.T) {
	for _, op := range []string{ElasticOpIndex, ElasticOpCreate} {
		t.Run(op, func(t *testing.T) {
			const total = 3000
			es := newES("a2V5LWlkOmtleQ==")
			es.poison["alert-01234"] = true
			for _, i := range []int{10, 11, 1500, 2999} {
				es.flaky[alertN(i).Id] = true
			}
			srv := httptest.NewServer(es)
			defer srv.Close()
			src := &memSource{}
			for i := range total {
				src.add(alertN(i))
			}
			cfg := Config{Name: "es", Type: TypeElastic, Format: FormatOCSF, BatchSize: 500,
				Elastic: &ElasticConfig{URL: srv.URL, Op: op, APIKeyFile: writeSecret(t, "a2V5LWlkOmtleQ==")},
				Retry:   RetryConfig{Initial: confval.Duration(20 * time.Millisecond), Max: confval.Duration(100 * time.Millisecond)}}
			kv := newMemKV()
			m, err := New([]Config{cfg}, src, kv, Options{Poll: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			es.set(func() { es.down = true })
			go func() {
				time.Sleep(200 * time.Millisecond)
				es.set(func() { es.down = false })
			}()
			indexed := func() int {
				es.mu.Lock()
				defer es.mu.Unlock()
				return len(es.docs)
			}
			runFor(t, m, 30*time.Second, func() bool { return indexed() == total-1 && m.Status()[0].State == "caught-up" })
			rewrites := 0
			for i := range total {
				id := alertN(i).Id
				doc := es.docs["harrier-alerts/"+id]
				if (doc == nil) != (id == "alert-01234") {
					t.Errorf("%s: document %s", id, doc)
				}
				if doc != nil && !bytes.Contains(doc, []byte(`"uid":"`+id+`"`)) {
					t.Errorf("%s: document is not its OCSF finding: %s", id, doc)
				}
				rewrites += max(0, es.writes["harrier-alerts/"+id]-1)
			}
			st := m.Status()[0]
			t.Logf("op %s: %d documents, %d rewrites, %d requests, status %+v", op, len(es.docs), rewrites, es.requests, st)
			if st.DeadLettered != 1 || st.Failed < 5 { // the 503 and four 429s
				t.Errorf("status %+v", st)
			}
			dl, err := m.DeadLetters(t.Context(), "es", 10)
			if err != nil || len(dl) != 1 || dl[0].AlertID != "alert-01234" || !strings.Contains(dl[0].Reason, "document_parsing_exception") {
				t.Errorf("dead letters %+v, %v", dl, err)
			}
			// Sent again from scratch (a lost cursor): the index holds
			// each document once; create counts the conflicts as delivered.
			m, err = New([]Config{cfg}, src, newMemKV(), Options{Poll: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			runFor(t, m, 30*time.Second, func() bool { return m.Status()[0].Cursor == total })
			if indexed() != total-1 || m.Status()[0].DeadLettered != 1 {
				t.Errorf("after a resend: %d documents, status %+v", indexed(), m.Status()[0])
			}
		})
	}
}

func TestParseBulkResponse(t *testing.T) {
	items, err := ParseBulkResponse([]byte(`{"took":30,"errors":true,"items":[
{"index":{"_index":"test","_id":"1","_version":1,"result":"created","status":201}},
{"create":{"_index":"test","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[2]: version conflict"}}},
{"index":{"_index":"test","_id":"3","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse"}}},
{"index":{"_index":"test","_id":"4","status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
{"update":{"_index":"test","_id":"5","status":503,"error":"unavailable_shards_exception"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		op      string
		status  int
		verdict bulkVerdict
		err     string
	}{
		{"index", 201, bulkDone, ""},
		{"create", 409, bulkDone, "version_conflict_engine_exception: [2]: version conflict"},
		{"index", 400, bulkRejected, "mapper_parsing_exception: failed to parse"},
		{"index", 429, bulkRetry, "es_rejected_execution_exception: busy"},
		{"update", 503, bulkRetry, `"unavailable_shards_exception"`},
	}
	if len(items) != len(want) {
		t.Fatalf("%d items", len(items))
	}
	for i, w := range want {
		if it := items[i]; it.Op != w.op || it.Status != w.status || it.verdict(ElasticOpCreate) != w.verdict || it.Error != w.err || it.ID != strconv.Itoa(i+1) {
			t.Errorf("item %d: %+v", i, it)
		}
	}
	if items[1].verdict(ElasticOpIndex) != bulkRejected {
		t.Error("a 409 of index is a refusal")
	}
	for _, bad := range []string{``, `{}`, `{"errors":false,"items":[{}]}`, `{"errors":false,"items":[{"index":{"status":42}}]}`, `[1]`} {
		if _, err := ParseBulkResponse([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseBulkResponse(f *testing.F) {
	f.Add([]byte(`{"took":1,"errors":true,"items":[{"index":{"_id":"a","status":400,"error":{"type":"x","reason":"y\nz"}}}]}`))
	f.Add([]byte(`{"errors":false,"items":[{"create":{"_id":"\u0000","status":201}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := ParseBulkResponse(b)
		if err != nil {
			return
		}
		for _, it := range items {
			if it.Status < 100 || it.Status > 599 || strings.ContainsAny(it.Error, "\n\r") || len(it.Error) > 512 {
				t.Fatalf("item %+v", it)
			}
			_ = it.verdict(ElasticOpIndex)
		}
	})
}

func FuzzParseHECReply(f *testing.F) {
	f.Add([]byte(`{"text":"Success","code":0,"ackId":7}`), int64(7))
	f.Add([]byte(`{"text":"Invalid data format","code":6,"invalid-event-number":3}`), int64(0))
	f.Add([]byte(`{"acks":{"7":true,"8":false}}`), int64(8))
	f.Fuzz(func(t *testing.T, b []byte, id int64) {
		if r, err := ParseHECReply(b); err == nil {
			if d := r.describe(b); strings.Contains(d, "\n") {
				t.Fatalf("describe %q", d)
			}
		}
		_, _ = ParseHECAck(b, id)
	})
}

// TestSIEMConfig: bad configs are clear errors at load.
func TestSIEMConfig(t *testing.T) {
	bad := []struct {
		cfg  Config
		want string
	}{
		{Config{Type: TypeSplunk, Splunk: &SplunkConfig{URL: "https://s:8088"}}, "splunk.tokenFile is required"},
		{Config{Type: TypeSplunk, Splunk: &SplunkConfig{URL: "https://s:8088?token=x", TokenFile: "/t"}}, "must not carry credentials"},
		{Config{Type: TypeSplunk, Splunk: &SplunkConfig{URL: "s:8088", TokenFile: "/t"}}, "want an https://"},
		{Config{Type: TypeSplunk, Splunk: &SplunkConfig{URL: "https://s", TokenFile: "/t", AckTimeout: confval.Duration(time.Second)}}, "needs splunk.ack"},
		{Config{Type: TypeSplunk}, "needs a splunk: section"},
		{Config{Type: TypeElastic, Elastic: &ElasticConfig{URL: "https://es:9200", Op: "upsert"}}, "must be index or create"},
		{Config{Type: TypeElastic, Elastic: &ElasticConfig{URL: "https://es:9200", Index: "Alerts"}}, "elasticsearch.index"},
		{Config{Type: TypeElastic, Elastic: &ElasticConfig{URL: "https://es:9200", Username: "u"}}, "go together"},
		{Config{Type: TypeElastic, Elastic: &ElasticConfig{URL: "https://es:9200", APIKeyFile: "/k", Username: "u", PasswordFile: "/p"}}, "not both"},
		{Config{Type: TypeElastic, Format: FormatCEF, Elastic: &ElasticConfig{URL: "https://es:9200"}}, "indexes JSON documents"},
		{Config{Type: TypeElastic, Splunk: &SplunkConfig{}, Elastic: &ElasticConfig{URL: "https://es:9200"}}, "set only the section"},
	}
	for _, b := range bad {
		b.cfg.Name = "x"
		if err := b.cfg.Validate(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: error %v, want %q", b.cfg, err, b.want)
		}
	}
	c := Config{Name: "es", Type: TypeElastic, Elastic: &ElasticConfig{URL: "https://es:9200", Username: "harrier", PasswordFile: writeSecret(t, "pw")}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := newSink(c.withDefaults(), "h", "v")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.(*elasticSink).auth; got != "Basic aGFycmllcjpwdw==" {
		t.Errorf("basic auth %q", got)
	}
	c.Elastic.PasswordFile = "/nonexistent/pw"
	if _, err := newSink(c.withDefaults(), "h", "v"); err == nil || !strings.Contains(err.Error(), "elasticsearch.passwordFile") {
		t.Errorf("missing password file: %v", err)
	}
}
