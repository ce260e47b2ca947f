// Package export sends the backend's alerts to the tools a security team
// already watches: syslog receivers (RFC 5424 over UDP, TCP or TLS), HTTPS
// webhooks and files, as Harrier JSON, OCSF Detection Findings or CEF.
//
// Each destination follows the store's alert ingest order with its own
// durable cursor (kept in the backend's Badger through KV), so an export
// resumes where it stopped after a restart. Delivery is at least once: every
// record carries the alert's ID, stable across repeats, for a SIEM to
// de-duplicate on. The package knows the store only through Source and KV;
// it imports neither the agent nor the sensor.
package export

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

// Destination types and formats, as written in the config.
const (
	TypeSyslog  = "syslog"
	TypeWebhook = "webhook"
	TypeFile    = "file"
	TypeOTLP    = "otlp"
	TypeSplunk  = "splunk"
	TypeElastic = "elasticsearch"
	TypeKafka   = "kafka"

	ElasticOpIndex  = "index"
	ElasticOpCreate = "create"

	OTLPGRPC = "grpc"
	OTLPHTTP = "http"

	FormatJSON = "json" // Harrier JSON: protojson of api.Alert
	FormatOCSF = "ocsf" // OCSF 1.x Detection Finding (class_uid 2004)
	FormatCEF  = "cef"  // ArcSight Common Event Format
	// FormatFalco is Falco's JSON alert shape; FormatECS the Elastic
	// Common Schema.
	FormatFalco = "falco"
	FormatECS   = "ecs"
)

// Config is one entry of the backend's `exports:` list.
type Config struct {
	// Name identifies the destination in metrics, the API and the cursor's
	// key: letters, digits, '-', '_' and '.', at most 64.
	Name string `json:"name"`
	// Type is syslog, webhook, file, otlp, splunk, elasticsearch or kafka.
	Type string `json:"type"`
	// Format is json (default), ocsf, cef, falco or ecs.
	Format string `json:"format,omitempty"`
	// Syslog, Webhook and File configure the destination of that type.
	Syslog  *SyslogConfig  `json:"syslog,omitempty"`
	Webhook *WebhookConfig `json:"webhook,omitempty"`
	File    *FileConfig    `json:"file,omitempty"`
	OTLP    *OTLPConfig    `json:"otlp,omitempty"`
	Splunk  *SplunkConfig  `json:"splunk,omitempty"`
	Elastic *ElasticConfig `json:"elasticsearch,omitempty"`
	Kafka   *KafkaConfig   `json:"kafka,omitempty"`
	// Filter selects what is sent; the rest is skipped (and counted).
	Filter Filter `json:"filter"`
	// MaxPerSecond caps the records sent per second (0: no cap), for thin
	// links.
	MaxPerSecond float64 `json:"maxPerSecond,omitempty"`
	// BatchSize is how many records are read and sent per round (default 500).
	BatchSize int `json:"batchSize,omitempty"`
	// Retry tunes the backoff for a destination that is down.
	Retry RetryConfig `json:"retry"`
}

// Filter selects records. Empty fields do not filter.
type Filter struct {
	// Kinds lists the record kinds sent (default: alerts only); each kind
	// has its own cursor.
	Kinds []Kind `json:"kinds,omitempty"`
	// MinSeverity: info, low, medium, high or critical.
	MinSeverity string `json:"minSeverity,omitempty"`
	// Detections lists the detection IDs to send.
	Detections []string `json:"detections,omitempty"`
	// Namespaces lists the pod namespaces to send; "" matches alerts from
	// outside any pod.
	Namespaces []string `json:"namespaces,omitempty"`
}

// RetryConfig is the exponential backoff (with full jitter) between
// attempts to reach a destination that is down.
type RetryConfig struct {
	Initial confval.Duration `json:"initial,omitempty"` // default 500ms
	Max     confval.Duration `json:"max,omitempty"`     // default 1m
}

// SyslogConfig sends RFC 5424 messages.
type SyslogConfig struct {
	// Network is udp, tcp or tls. TCP and TLS frame with octet counting
	// (RFC 6587 3.4.1, RFC 5425 4.3); UDP sends one message per datagram
	// (RFC 5426) and cannot know whether it arrived.
	Network string `json:"network"`
	// Address is host:port of the receiver.
	Address string `json:"address"`
	// TLS applies to network tls.
	TLS TLSConfig `json:"tls"`
	// Hostname is the HOSTNAME field (default: the alert's node, else the
	// backend's host name); AppName the APP-NAME (default harrier).
	Hostname string `json:"hostname,omitempty"`
	AppName  string `json:"appName,omitempty"`
	// Facility is the syslog facility number 0-23 (default 13, log audit).
	Facility *int `json:"facility,omitempty"`
	// ConfirmAfter: TCP has no application acknowledgement, so a record is
	// only taken as delivered once the connection has stayed up this long
	// after it was written; after a failure everything newer is sent again
	// (default 2s).
	ConfirmAfter confval.Duration `json:"confirmAfter,omitempty"`
}

// WebhookConfig POSTs each record to an HTTPS URL.
type WebhookConfig struct {
	URL string `json:"url"`
	// HMACKeyFile holds the key of the X-Harrier-Signature header:
	// "sha256=" + hex(HMAC-SHA256(key, body)).
	HMACKeyFile string `json:"hmacKeyFile,omitempty"`
	// TokenFile holds a bearer token for the Authorization header.
	TokenFile string `json:"tokenFile,omitempty"`
	// Headers are added to every request (not secrets: those come from files).
	Headers map[string]string `json:"headers,omitempty"`
	TLS     TLSConfig         `json:"tls"`
	// Timeout bounds one request (default 10s).
	Timeout confval.Duration `json:"timeout,omitempty"`
}

// FileConfig appends JSON lines (or CEF lines) to a file and rotates it.
type FileConfig struct {
	Path string `json:"path"`
	// MaxBytes rotates the file once it would grow beyond (default 100 MiB).
	MaxBytes int64 `json:"maxBytes,omitempty"`
	// Keep is how many rotated files are kept: path.1 (newest) .. path.N
	// (default 5).
	Keep int `json:"keep,omitempty"`
}

// OTLPConfig sends OpenTelemetry log records (OTLP 1.x) to a collector or
// any OTLP logs endpoint.
type OTLPConfig struct {
	// Protocol is grpc (LogsService/Export) or http (POST of binary
	// protobuf).
	Protocol string `json:"protocol"`
	// Endpoint is host:port for grpc, the full URL of the logs endpoint for
	// http (e.g. https://collector:4318/v1/logs).
	Endpoint string `json:"endpoint"`
	// Insecure sends gRPC in plain text (for http, use an http:// URL).
	Insecure bool      `json:"insecure,omitempty"`
	TLS      TLSConfig `json:"tls"`
	// Headers are added to every request (gRPC metadata or HTTP headers);
	// HeaderFiles maps a header to the file holding its value, for
	// secrets (an API key, "Bearer <token>").
	Headers     map[string]string `json:"headers,omitempty"`
	HeaderFiles map[string]string `json:"headerFiles,omitempty"`
	// ServiceName is the resource's service.name (default harrier).
	ServiceName string `json:"serviceName,omitempty"`
	// Timeout bounds one request (default 10s).
	Timeout confval.Duration `json:"timeout,omitempty"`
}

// SplunkConfig sends to Splunk's HTTP Event Collector.
type SplunkConfig struct {
	// URL is HEC's base URL (https://splunk:8088); events go to
	// /services/collector/event.
	URL string `json:"url"`
	// TokenFile holds the HEC token (Authorization: Splunk <token>).
	TokenFile string `json:"tokenFile"`
	// Index, Source and SourceType set the events' metadata (default: the
	// token's index, source harrier, sourcetype harrier:alert).
	Index      string `json:"index,omitempty"`
	Source     string `json:"source,omitempty"`
	SourceType string `json:"sourcetype,omitempty"`
	// Ack waits for indexer acknowledgement (the token must have it on): a
	// batch counts as delivered only once Splunk says it was indexed,
	// within AckTimeout (default 60s; else it is sent again).
	Ack        bool             `json:"ack,omitempty"`
	AckTimeout confval.Duration `json:"ackTimeout,omitempty"`
	TLS        TLSConfig        `json:"tls"`
	Timeout    confval.Duration `json:"timeout,omitempty"`
}

// ElasticConfig indexes into Elasticsearch or OpenSearch with _bulk.
type ElasticConfig struct {
	// URL is the cluster's base URL (https://es:9200).
	URL string `json:"url"`
	// Index is the index (or data stream, with op create) written to
	// (default harrier-alerts).
	Index string `json:"index,omitempty"`
	// Op is index (default: a record sent again overwrites its document,
	// so the index holds the alert's latest state) or create (required by
	// data streams: a record already there counts as delivered).
	Op string `json:"op,omitempty"`
	// APIKeyFile holds an API key (Authorization: ApiKey <key>, the
	// base64 form Elasticsearch prints); or Username with PasswordFile
	// for basic auth.
	APIKeyFile   string           `json:"apiKeyFile,omitempty"`
	Username     string           `json:"username,omitempty"`
	PasswordFile string           `json:"passwordFile,omitempty"`
	TLS          TLSConfig        `json:"tls"`
	Timeout      confval.Duration `json:"timeout,omitempty"`
}

// KafkaConfig produces to a Kafka topic.
type KafkaConfig struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string `json:"brokers"`
	Topic   string   `json:"topic"`
	// TLS, when set (even empty: the system's CAs), connects with TLS.
	TLS  *TLSConfig `json:"tls,omitempty"`
	SASL *KafkaSASL `json:"sasl,omitempty"`
	// Timeout bounds the delivery of a batch, retries inside the client
	// included (default 30s); then the export backs off and sends again.
	Timeout confval.Duration `json:"timeout,omitempty"`
}

// KafkaSASL authenticates to the brokers; the password comes from a file.
type KafkaSASL struct {
	Mechanism    string `json:"mechanism"` // plain, scram-sha-256 or scram-sha-512
	Username     string `json:"username"`
	PasswordFile string `json:"passwordFile"`
}

// TLSConfig is the client side of TLS: the CA that signs the receiver's
// certificate (default: the system's) and an optional client certificate.
type TLSConfig struct {
	CAFile     string `json:"caFile,omitempty"`
	CertFile   string `json:"certFile,omitempty"`
	KeyFile    string `json:"keyFile,omitempty"`
	ServerName string `json:"serverName,omitempty"`
}

// Defaults.
const (
	DefaultBatchSize    = 500
	defaultRetryInitial = 500 * time.Millisecond
	defaultRetryMax     = time.Minute
	defaultConfirmAfter = 2 * time.Second
	defaultWebhookTime  = 10 * time.Second
	defaultFileMaxBytes = 100 << 20
	defaultFileKeep     = 5
	defaultFacility     = 13
	maxBatchSize        = 10_000
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// ValidateAll checks a whole exports list: each entry, and unique names.
func ValidateAll(cs []Config) error {
	var errs []error
	seen := map[string]bool{}
	for i, c := range cs {
		if err := c.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("exports[%d] (%s): %w", i, c.Name, err))
		}
		if seen[c.Name] {
			errs = append(errs, fmt.Errorf("exports[%d]: name %q is used twice", i, c.Name))
		}
		seen[c.Name] = true
	}
	return errors.Join(errs...)
}

// Validate reports every problem of one destination at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !nameRE.MatchString(c.Name) {
		add("name %q: want 1-64 letters, digits, '-', '_' or '.'", c.Name)
	}
	switch c.Format {
	case "", FormatJSON, FormatOCSF, FormatCEF, FormatFalco, FormatECS:
	default:
		add("format %q: must be %s", c.Format, formatList)
	}
	set := 0
	for _, p := range []bool{c.Syslog != nil, c.Webhook != nil, c.File != nil, c.OTLP != nil, c.Splunk != nil, c.Elastic != nil, c.Kafka != nil} {
		if p {
			set++
		}
	}
	if set > 1 {
		add("set only the section of its type (%s)", c.Type)
	}
	switch c.Type {
	case TypeSyslog:
		if c.Syslog == nil {
			add("type syslog needs a syslog: section")
			break
		}
		errs = append(errs, c.Syslog.validate())
	case TypeWebhook:
		if c.Webhook == nil {
			add("type webhook needs a webhook: section")
			break
		}
		errs = append(errs, c.Webhook.validate())
	case TypeFile:
		if c.File == nil {
			add("type file needs a file: section")
			break
		}
		if c.File.Path == "" {
			add("file.path is required")
		}
		if c.File.MaxBytes < 0 || c.File.Keep < 0 {
			add("file.maxBytes and file.keep must not be negative")
		}
	case TypeOTLP:
		if c.OTLP == nil {
			add("type otlp needs an otlp: section")
			break
		}
		errs = append(errs, c.OTLP.validate())
	case TypeSplunk:
		if c.Splunk == nil {
			add("type splunk needs a splunk: section")
			break
		}
		errs = append(errs, c.Splunk.validate())
	case TypeElastic:
		if c.Elastic == nil {
			add("type elasticsearch needs an elasticsearch: section")
			break
		}
		errs = append(errs, c.Elastic.validate())
		if c.Format == FormatCEF {
			add("format cef: elasticsearch indexes JSON documents (use json, ocsf, ...)")
		}
	case TypeKafka:
		if c.Kafka == nil {
			add("type kafka needs a kafka: section")
			break
		}
		errs = append(errs, c.Kafka.validate())
	default:
		add("type %q: must be %s", c.Type, typeList)
	}
	seenKind := map[Kind]bool{}
	for _, k := range c.Filter.Kinds {
		switch {
		case !slices.Contains(Kinds, k):
			add("filter.kinds: %q: must be %s", k, kindList)
		case seenKind[k]:
			add("filter.kinds: %s is listed twice", k)
		case c.Format != "" && formatKinds[c.Format] != nil && !slices.Contains(formatKinds[c.Format], k):
			add("filter.kinds: format %s cannot carry %s records (it carries %s; json carries every kind)", c.Format, k,
				kindNames(formatKinds[c.Format]))
		}
		seenKind[k] = true
	}
	if c.Filter.MinSeverity != "" {
		if _, err := api.ParseSeverity(c.Filter.MinSeverity); err != nil {
			add("filter.minSeverity %q: must be info, low, medium, high or critical", c.Filter.MinSeverity)
		}
	}
	if c.MaxPerSecond < 0 {
		add("maxPerSecond %v: must not be negative", c.MaxPerSecond)
	}
	if c.BatchSize < 0 || c.BatchSize > maxBatchSize {
		add("batchSize %d: must be 0 (default %d) to %d", c.BatchSize, DefaultBatchSize, maxBatchSize)
	}
	if c.Retry.Initial < 0 || c.Retry.Max < 0 || (c.Retry.Max > 0 && c.Retry.Initial > c.Retry.Max) {
		add("retry: initial and max must be positive, initial at most max")
	}
	return errors.Join(errs...)
}

func (s *SyslogConfig) validate() error {
	var errs []error
	switch s.Network {
	case "udp", "tcp", "tls":
	default:
		errs = append(errs, fmt.Errorf("syslog.network %q: must be udp, tcp or tls", s.Network))
	}
	if _, _, err := net.SplitHostPort(s.Address); err != nil {
		errs = append(errs, fmt.Errorf("syslog.address %q: %w", s.Address, err))
	}
	if s.Network != "tls" && s.TLS != (TLSConfig{}) {
		errs = append(errs, errors.New("syslog.tls applies to network tls only"))
	}
	errs = append(errs, s.TLS.validate("syslog.tls"))
	if s.Facility != nil && (*s.Facility < 0 || *s.Facility > 23) {
		errs = append(errs, fmt.Errorf("syslog.facility %d: must be 0 to 23", *s.Facility))
	}
	if !printASCII(s.Hostname, 255) || !printASCII(s.AppName, 48) {
		errs = append(errs, errors.New("syslog.hostname (255) and syslog.appName (48) must be printable ASCII without spaces"))
	}
	if s.ConfirmAfter < 0 {
		errs = append(errs, errors.New("syslog.confirmAfter must not be negative"))
	}
	return errors.Join(errs...)
}

func (w *WebhookConfig) validate() error {
	var errs []error
	u, err := url.Parse(w.URL)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("webhook.url: %w", err))
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		errs = append(errs, fmt.Errorf("webhook.url %q: want an https:// (or http://) URL", w.URL))
	case u.User != nil:
		errs = append(errs, errors.New("webhook.url must not carry credentials: use webhook.tokenFile"))
	}
	for k := range w.Headers {
		lk := strings.ToLower(k)
		if lk == "authorization" || lk == "x-harrier-signature" || lk == "content-length" || lk == "host" {
			errs = append(errs, fmt.Errorf("webhook.headers: %q is set by Harrier (secrets come from tokenFile/hmacKeyFile)", k))
		}
	}
	errs = append(errs, w.TLS.validate("webhook.tls"))
	if w.Timeout < 0 {
		errs = append(errs, errors.New("webhook.timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// formatList names the formats in errors.
const formatList = "json, ocsf, cef, falco or ecs"

// typeList names the destination types in errors.
const typeList = "syslog, webhook, file, otlp, splunk, elasticsearch or kafka"

// kafkaTopicRE is Kafka's rule for topic names.
var kafkaTopicRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)

func (c *KafkaConfig) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one host:port"))
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			errs = append(errs, fmt.Errorf("kafka.brokers %q: %w", b, err))
		}
	}
	if !kafkaTopicRE.MatchString(c.Topic) || c.Topic == "." || c.Topic == ".." {
		errs = append(errs, fmt.Errorf("kafka.topic %q: 1-249 letters, digits, '.', '_' or '-'", c.Topic))
	}
	if c.TLS != nil {
		errs = append(errs, c.TLS.validate("kafka.tls"))
	}
	if sa := c.SASL; sa != nil {
		switch sa.Mechanism {
		case "plain", "scram-sha-256", "scram-sha-512":
		default:
			errs = append(errs, fmt.Errorf("kafka.sasl.mechanism %q: must be plain, scram-sha-256 or scram-sha-512", sa.Mechanism))
		}
		if sa.Username == "" || sa.PasswordFile == "" {
			errs = append(errs, errors.New("kafka.sasl: username and passwordFile are required (the password comes from a file)"))
		}
		if sa.Mechanism == "plain" && c.TLS == nil {
			errs = append(errs, errors.New("kafka.sasl plain sends the password in clear: set kafka.tls"))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("kafka.timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// validateBaseURL checks an http(s) base URL without credentials.
func validateBaseURL(where, raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", where, err)
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		return fmt.Errorf("%s %q: want an https:// (or http://) URL", where, raw)
	case u.User != nil || u.RawQuery != "":
		return fmt.Errorf("%s must not carry credentials or a query: secrets come from files", where)
	}
	return nil
}

func (c *SplunkConfig) validate() error {
	errs := []error{validateBaseURL("splunk.url", c.URL), c.TLS.validate("splunk.tls")}
	if c.TokenFile == "" {
		errs = append(errs, errors.New("splunk.tokenFile is required (the HEC token, from a file)"))
	}
	if c.Timeout < 0 || c.AckTimeout < 0 {
		errs = append(errs, errors.New("splunk.timeout and splunk.ackTimeout must not be negative"))
	}
	if c.AckTimeout != 0 && !c.Ack {
		errs = append(errs, errors.New("splunk.ackTimeout needs splunk.ack: true"))
	}
	return errors.Join(errs...)
}

func (c *ElasticConfig) validate() error {
	errs := []error{validateBaseURL("elasticsearch.url", c.URL), c.TLS.validate("elasticsearch.tls")}
	switch c.Op {
	case "", ElasticOpIndex, ElasticOpCreate:
	default:
		errs = append(errs, fmt.Errorf("elasticsearch.op %q: must be index or create", c.Op))
	}
	if c.Index != "" && (strings.ToLower(c.Index) != c.Index || strings.ContainsAny(c.Index, `\/*?"<>| ,#:`) || strings.HasPrefix(c.Index, "_")) {
		errs = append(errs, fmt.Errorf("elasticsearch.index %q: lowercase, without \\ / * ? \" < > | space , # : and not starting with _", c.Index))
	}
	if c.APIKeyFile != "" && c.Username != "" {
		errs = append(errs, errors.New("elasticsearch: apiKeyFile or username/passwordFile, not both"))
	}
	if (c.Username == "") != (c.PasswordFile == "") {
		errs = append(errs, errors.New("elasticsearch.username and passwordFile go together"))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("elasticsearch.timeout must not be negative"))
	}
	return errors.Join(errs...)
}

func (o *OTLPConfig) validate() error {
	var errs []error
	switch o.Protocol {
	case OTLPGRPC:
		if _, _, err := net.SplitHostPort(o.Endpoint); err != nil {
			errs = append(errs, fmt.Errorf("otlp.endpoint %q: grpc wants host:port: %w", o.Endpoint, err))
		}
	case OTLPHTTP:
		u, err := url.Parse(o.Endpoint)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("otlp.endpoint: %w", err))
		case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
			errs = append(errs, fmt.Errorf("otlp.endpoint %q: http wants the logs URL, e.g. https://collector:4318/v1/logs", o.Endpoint))
		case u.User != nil:
			errs = append(errs, errors.New("otlp.endpoint must not carry credentials: use otlp.headerFiles"))
		}
		if o.Insecure {
			errs = append(errs, errors.New("otlp.insecure applies to grpc (for http, use an http:// URL)"))
		}
	default:
		errs = append(errs, fmt.Errorf("otlp.protocol %q: must be grpc or http", o.Protocol))
	}
	if o.Insecure && o.TLS != (TLSConfig{}) {
		errs = append(errs, errors.New("otlp.tls and otlp.insecure exclude each other"))
	}
	for k := range o.Headers {
		lk := strings.ToLower(k)
		if lk == "authorization" || lk == "content-type" || lk == "content-length" || lk == "host" || strings.HasPrefix(lk, "grpc-") || strings.HasPrefix(lk, ":") {
			errs = append(errs, fmt.Errorf("otlp.headers: %q is set by Harrier or the protocol (secrets go in otlp.headerFiles)", k))
		}
		if _, dup := o.HeaderFiles[k]; dup {
			errs = append(errs, fmt.Errorf("otlp: header %q is in both headers and headerFiles", k))
		}
	}
	for k, p := range o.HeaderFiles {
		if k == "" || p == "" {
			errs = append(errs, errors.New("otlp.headerFiles: a header name and a file path are required"))
		}
	}
	errs = append(errs, o.TLS.validate("otlp.tls"))
	if o.Timeout < 0 {
		errs = append(errs, errors.New("otlp.timeout must not be negative"))
	}
	return errors.Join(errs...)
}

func (t TLSConfig) validate(where string) error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("%s: certFile and keyFile go together", where)
	}
	return nil
}

func printASCII(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

func (c Config) withDefaults() Config {
	if c.Format == "" {
		c.Format = FormatJSON
	}
	if len(c.Filter.Kinds) == 0 {
		c.Filter.Kinds = []Kind{KindAlerts}
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Retry.Initial == 0 {
		c.Retry.Initial = confval.Duration(defaultRetryInitial)
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = confval.Duration(max(defaultRetryMax, c.Retry.Initial.Std()))
	}
	if s := c.Syslog; s != nil {
		cp := *s
		if cp.AppName == "" {
			cp.AppName = "harrier"
		}
		if cp.Facility == nil {
			f := defaultFacility
			cp.Facility = &f
		}
		if cp.ConfirmAfter == 0 && cp.Network != "udp" {
			cp.ConfirmAfter = confval.Duration(defaultConfirmAfter)
		}
		c.Syslog = &cp
	}
	if w := c.Webhook; w != nil && w.Timeout == 0 {
		cp := *w
		cp.Timeout = confval.Duration(defaultWebhookTime)
		c.Webhook = &cp
	}
	if o := c.OTLP; o != nil {
		cp := *o
		if cp.Timeout == 0 {
			cp.Timeout = confval.Duration(defaultWebhookTime)
		}
		if cp.ServiceName == "" {
			cp.ServiceName = "harrier"
		}
		c.OTLP = &cp
	}
	if sp := c.Splunk; sp != nil {
		cp := *sp
		if cp.Timeout == 0 {
			cp.Timeout = confval.Duration(defaultWebhookTime)
		}
		if cp.AckTimeout == 0 {
			cp.AckTimeout = confval.Duration(time.Minute)
		}
		if cp.Source == "" {
			cp.Source = "harrier"
		}
		if cp.SourceType == "" {
			cp.SourceType = "harrier:alert"
		}
		c.Splunk = &cp
	}
	if e := c.Elastic; e != nil {
		cp := *e
		if cp.Timeout == 0 {
			cp.Timeout = confval.Duration(defaultWebhookTime)
		}
		if cp.Index == "" {
			cp.Index = "harrier-alerts"
		}
		if cp.Op == "" {
			cp.Op = ElasticOpIndex
		}
		c.Elastic = &cp
	}
	if k := c.Kafka; k != nil && k.Timeout == 0 {
		cp := *k
		cp.Timeout = confval.Duration(30 * time.Second)
		c.Kafka = &cp
	}
	if f := c.File; f != nil {
		cp := *f
		if cp.MaxBytes == 0 {
			cp.MaxBytes = defaultFileMaxBytes
		}
		if cp.Keep == 0 {
			cp.Keep = defaultFileKeep
		}
		c.File = &cp
	}
	return c
}

// match reports whether a passes f.
// match applies the filter to a record's head. Severity, detections (the
// check IDs of findings) and namespaces apply to alerts, findings and
// vulnerabilities; response and triage records are selected by their kind
// alone.
func (f Filter) match(k Kind, a *api.Alert, minSev api.Severity) bool {
	switch k {
	case KindResponses, KindTriage:
		return true
	case KindEvents: // events have no severity or detection: namespaces only
		return len(f.Namespaces) == 0 || slices.Contains(f.Namespaces, a.GetContainer().GetPodNamespace())
	}
	if a.GetSeverity() < minSev {
		return false
	}
	if len(f.Detections) > 0 && !slices.Contains(f.Detections, a.GetDetectionId()) {
		return false
	}
	if len(f.Namespaces) > 0 && !slices.Contains(f.Namespaces, a.GetContainer().GetPodNamespace()) {
		return false
	}
	return true
}

func kindNames(ks []Kind) string {
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}
