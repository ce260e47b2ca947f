package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// otlpSink sends each batch as one OTLP ExportLogsServiceRequest, over gRPC
// (LogsService/Export) or HTTP (POST of the binary protobuf). OTLP answers
// every request, so a record counts as delivered when the answer is a
// success: no confirmation window, no duplicates but those of a request
// whose answer was lost.
type otlpSink struct {
	cfg     OTLPConfig
	version string
	headers map[string]string // configured headers and those read from files
	grpc    *grpc.ClientConn
	logs    collogspb.LogsServiceClient
	http    *http.Client
	reply   string
}

// The OTLP scope and event name of Harrier's log records.
const (
	otlpScope     = "github.com/harrier-sec/harrier/backend/export"
	otlpEventName = "harrier.head"
	// otlpMaxRequest bounds one request's records: gRPC servers take 4 MiB
	// messages by default and a record may carry a 64 KiB command line.
	otlpMaxRequest = 50
)

func newOTLPSink(c OTLPConfig, version string) (*otlpSink, error) {
	s := &otlpSink{cfg: c, version: version, headers: map[string]string{}}
	for k, v := range c.Headers {
		s.headers[strings.ToLower(k)] = v
	}
	for k, path := range c.HeaderFiles {
		v, err := readSecret("otlp.headerFiles["+k+"]", path)
		if err != nil {
			return nil, err
		}
		s.headers[strings.ToLower(k)] = string(v)
	}
	switch c.Protocol {
	case OTLPGRPC:
		creds := insecure.NewCredentials()
		if !c.Insecure {
			tc, err := clientTLS(c.TLS)
			if err != nil {
				return nil, err
			}
			creds = credentials.NewTLS(tc)
		}
		// NewClient connects lazily: a collector that is down is an error
		// of the first Export, retried like any other.
		conn, err := grpc.NewClient(c.Endpoint, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("otlp grpc %s: %w", c.Endpoint, err)
		}
		s.grpc, s.logs = conn, collogspb.NewLogsServiceClient(conn)
	case OTLPHTTP:
		var err error
		if s.http, err = newHTTPClient(c.TLS, c.Timeout.Std()); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("otlp.protocol %q: must be grpc or http", c.Protocol)
	}
	return s, nil
}

func (s *otlpSink) send(ctx context.Context, msgs []message) (int, error) {
	for start := 0; start < len(msgs); {
		end := min(len(msgs), start+otlpMaxRequest)
		err := s.export(ctx, msgs[start:end])
		var rej *RejectedError
		switch {
		case err == nil:
			start = end
			continue
		case !errors.As(err, &rej) || end-start == 1:
			return start, err
		}
		// The receiver refused the request as malformed without saying
		// which record: send them one at a time, so only the bad one is
		// dead-lettered.
		for i := start; i < end; i++ {
			if err := s.export(ctx, msgs[i:i+1]); err != nil {
				return i, err
			}
		}
		start = end
	}
	return len(msgs), nil
}

func (s *otlpSink) export(ctx context.Context, msgs []message) error {
	req := s.request(msgs)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout.Std())
	defer cancel()
	var (
		resp *collogspb.ExportLogsServiceResponse
		err  error
	)
	if s.logs != nil {
		resp, err = s.exportGRPC(ctx, req)
	} else {
		resp, err = s.exportHTTP(ctx, req)
	}
	if err != nil {
		return err
	}
	s.reply = fmt.Sprintf("accepted %d log records", len(msgs))
	if ps := resp.GetPartialSuccess(); ps.GetRejectedLogRecords() > 0 {
		// Some were refused, without saying which: the caller sends them
		// again one at a time (the accepted ones are then duplicates).
		s.reply = fmt.Sprintf("partial success: %d of %d log records rejected: %s", ps.GetRejectedLogRecords(), len(msgs), ps.GetErrorMessage())
		return &RejectedError{Reason: s.reply}
	} else if ps.GetErrorMessage() != "" {
		s.reply += ": " + ps.GetErrorMessage()
	}
	return nil
}

func (s *otlpSink) exportGRPC(ctx context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	if len(s.headers) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, metadata.New(s.headers))
	}
	resp, err := s.logs.Export(ctx, req)
	if err == nil {
		return resp, nil
	}
	st := status.Convert(err)
	s.reply = fmt.Sprintf("gRPC %s: %s", st.Code(), st.Message())
	if st.Code() == codes.InvalidArgument {
		return nil, &RejectedError{Reason: s.reply}
	}
	// Unavailable, DeadlineExceeded, ResourceExhausted, ... and the
	// errors of a wrong configuration (Unauthenticated, Unimplemented):
	// retried with backoff, never dead-lettered.
	return nil, fmt.Errorf("otlp grpc %s: %s", s.cfg.Endpoint, s.reply)
}

func (s *otlpSink) exportHTTP(ctx context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	body, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("otlp: encode request: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("otlp http: %w", err)
	}
	for k, v := range s.headers {
		hreq.Header.Set(k, v)
	}
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hresp, err := s.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("otlp http %s: %w", redactURL(s.cfg.Endpoint), err)
	}
	defer hresp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(hresp.Body, maxOTLPReply))
	if err != nil {
		return nil, fmt.Errorf("otlp http %s: read the answer: %w", redactURL(s.cfg.Endpoint), err)
	}
	resp, reply, err := ParseOTLPHTTPReply(hresp.StatusCode, hresp.Header.Get("Content-Type"), rb)
	s.reply = reply
	if err != nil {
		var rej *RejectedError
		if errors.As(err, &rej) {
			return nil, err
		}
		return nil, fmt.Errorf("otlp http %s: %w", redactURL(s.cfg.Endpoint), err)
	}
	return resp, nil
}

const maxOTLPReply = 1 << 20

// ParseOTLPHTTPReply reads an OTLP/HTTP answer: on 2xx the
// ExportLogsServiceResponse (binary protobuf or JSON, by Content-Type; an
// empty body is a full success), else the google.rpc.Status the
// specification puts in error bodies. It returns the response, a one-line
// description for the operator, and an error: *RejectedError for 400 and
// 413 (malformed or too large: not worth retrying as is), a plain error for
// the rest (429, 5xx, 401/403/404: the destination is not taking records
// now, or is misconfigured, and is retried).
func ParseOTLPHTTPReply(code int, contentType string, body []byte) (*collogspb.ExportLogsServiceResponse, string, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	isJSON := mt == "application/json"
	if code >= 200 && code < 300 {
		resp := &collogspb.ExportLogsServiceResponse{}
		var err error
		if len(body) > 0 {
			if isJSON {
				err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, resp)
			} else {
				err = proto.Unmarshal(body, resp)
			}
		}
		if err != nil {
			// The records were taken (2xx); only the details are lost.
			return &collogspb.ExportLogsServiceResponse{}, fmt.Sprintf("HTTP %d (answer not readable: %v)", code, err), nil
		}
		return resp, fmt.Sprintf("HTTP %d", code), nil
	}
	msg := strings.TrimSpace(string(body))
	st := &rpcstatus.Status{}
	switch {
	case isJSON && protojson.Unmarshal(body, st) == nil:
		msg = st.GetMessage()
	case mt == "application/x-protobuf" && proto.Unmarshal(body, st) == nil:
		msg = st.GetMessage()
	}
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > 512 {
		msg = msg[:512]
	}
	reply := fmt.Sprintf("HTTP %d: %s", code, strings.ReplaceAll(msg, "\n", " "))
	if code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge {
		return nil, reply, &RejectedError{Reason: reply}
	}
	return nil, reply, errors.New(reply)
}

func (s *otlpSink) request(msgs []message) *collogspb.ExportLogsServiceRequest {
	now := uint64(time.Now().UnixNano())
	recs := make([]*logspb.LogRecord, 0, len(msgs))
	for _, m := range msgs {
		recs = append(recs, otlpRecord(m, now))
	}
	return &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			otlpString("service.name", s.cfg.ServiceName),
			otlpString("service.version", s.version),
		}},
		ScopeLogs: []*logspb.ScopeLogs{{
			Scope:      &commonpb.InstrumentationScope{Name: otlpScope, Version: s.version},
			LogRecords: recs,
		}},
	}}}
}

// otlpRecord is one alert as an OTLP log record: the encoded record (in
// the destination's format) as the string body, the alert's last-seen time,
// its severity, and attributes named after OpenTelemetry's semantic
// conventions where one exists, for routing without parsing the body.
func otlpRecord(m message, observed uint64) *logspb.LogRecord {
	a := m.head
	sevNum, sevText := otlpSeverity(a.GetSeverity())
	r := &logspb.LogRecord{
		ObservedTimeUnixNano: observed,
		SeverityNumber:       sevNum,
		SeverityText:         sevText,
		EventName:            otlpEventName,
		// Protobuf strings must be valid UTF-8; every encoder writes it,
		// this keeps a future one from breaking the whole request.
		Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: strings.ToValidUTF8(string(m.body), "\uFFFD")}},
	}
	if ls := a.GetLastSeen(); ls != nil {
		r.TimeUnixNano = uint64(ls.AsTime().UnixNano())
	}
	c, p := a.GetContainer(), a.GetProcess()
	attrs := []*commonpb.KeyValue{
		otlpString("harrier.event.id", a.GetId()),
		otlpString("harrier.detection.id", a.GetDetectionId()),
		otlpString("harrier.head.name", a.GetName()),
		{Key: "harrier.head.count", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(min(a.GetCount(), 1<<62))}}},
		otlpString("host.name", a.GetNode()),
		otlpString("k8s.cluster.name", a.GetCluster()),
		otlpString("k8s.namespace.name", c.GetPodNamespace()),
		otlpString("k8s.pod.name", c.GetPodName()),
		otlpString("k8s.pod.uid", c.GetPodUid()),
		otlpString("container.id", c.GetId()),
		otlpString("container.name", c.GetName()),
		otlpString("container.image.name", c.GetImage()),
		otlpString("process.executable.path", p.GetExe()),
	}
	if p.GetTgid() != 0 {
		attrs = append(attrs, &commonpb.KeyValue{Key: "process.pid", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(p.GetTgid())}}})
	}
	for _, kv := range attrs {
		if kv.GetValue().GetStringValue() != "" || kv.GetValue().GetIntValue() != 0 {
			r.Attributes = append(r.Attributes, kv)
		}
	}
	return r
}

func otlpString(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: strings.ToValidUTF8(v, "\uFFFD")}}}
}

// otlpSeverity maps Harrier's severities onto OTLP's numbers (info INFO 9,
// low WARN 13, medium WARN2 14, high ERROR 17, critical FATAL 21).
func otlpSeverity(s api.Severity) (logspb.SeverityNumber, string) {
	switch s {
	case api.Severity_SEVERITY_INFO:
		return logspb.SeverityNumber_SEVERITY_NUMBER_INFO, "info"
	case api.Severity_SEVERITY_LOW:
		return logspb.SeverityNumber_SEVERITY_NUMBER_WARN, "low"
	case api.Severity_SEVERITY_MEDIUM:
		return logspb.SeverityNumber_SEVERITY_NUMBER_WARN2, "medium"
	case api.Severity_SEVERITY_HIGH:
		return logspb.SeverityNumber_SEVERITY_NUMBER_ERROR, "high"
	case api.Severity_SEVERITY_CRITICAL:
		return logspb.SeverityNumber_SEVERITY_NUMBER_FATAL, "critical"
	}
	return logspb.SeverityNumber_SEVERITY_NUMBER_UNSPECIFIED, ""
}

func (s *otlpSink) confirmAfter() time.Duration { return 0 }
func (s *otlpSink) check() error                { return nil }
func (s *otlpSink) lastReply() string           { return s.reply }
func (s *otlpSink) close() error {
	if s.grpc != nil {
		return s.grpc.Close()
	}
	s.http.CloseIdleConnections()
	return nil
}
