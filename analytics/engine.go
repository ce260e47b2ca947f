// Package analytics turns the sensor's event stream into alerts on the node:
// CEL rules indexed by event kind, stateful Go detectors for what one event
// cannot tell, learned per-workload baselines, de-duplication, rate limits and
// redaction of secrets. It consumes api.Event and emits api.Alert; it knows
// nothing of the sensor, the spool or the uplink.
package analytics

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

// Config tunes the engine. Zero values mean the defaults.
type Config struct {
	// RuleFiles are operator rule files, read after the built-in rules.
	RuleFiles []string `json:"ruleFiles,omitempty"`
	// DedupWindow: repeats of a detection on the same container and process
	// lineage within it update one alert (default 10m).
	DedupWindow confval.Duration `json:"dedupWindow,omitempty"`
	// UpdateInterval: how often an alert with new repeats is re-sent with
	// its count and last-seen time (default 30s).
	UpdateInterval confval.Duration `json:"updateInterval,omitempty"`
	// RateLimitPerMinute caps new alerts per detection and container
	// (default 30); the rest are counted as suppressed.
	RateLimitPerMinute int `json:"rateLimitPerMinute,omitempty"`
	// MaxEvidence bounds the events kept in one alert (default 8).
	MaxEvidence int `json:"maxEvidence,omitempty"`
	// MaxOpenAlerts bounds the de-duplication table (default 4096).
	MaxOpenAlerts int `json:"maxOpenAlerts,omitempty"`
	// SequenceWindow bounds multi-step detections such as download → chmod
	// → exec and token read → API call (default 10m).
	SequenceWindow confval.Duration `json:"sequenceWindow,omitempty"`
	// ScanWindow and ScanThreshold: a process that tries this many distinct
	// destinations (ports on one host, or hosts) within the window is scanning
	// (defaults 10s and 20).
	ScanWindow    confval.Duration `json:"scanWindow,omitempty"`
	ScanThreshold int              `json:"scanThreshold,omitempty"`
	// KubernetesAPIServers are the API server endpoints (ip or ip:port); when
	// empty, TCP connects to ports 443 and 6443 count as API calls.
	KubernetesAPIServers []string `json:"kubernetesAPIServers,omitempty"`
	// IOCFiles hold one domain, IP or CIDR per line (# comments); a built-in
	// test domain is always on the list.
	IOCFiles []string `json:"iocFiles,omitempty"`
	// ProxyAddressFiles hold one IP or CIDR per line (# comments): proxies,
	// VPN and Tor exits. Audited API requests from them raise api-from-proxy.
	ProxyAddressFiles []string `json:"proxyAddressFiles,omitempty"`
	// Baseline configures the learned per-workload baselines.
	Baseline BaselineConfig `json:"baseline"`
	// Cluster names the cluster in alerts.
	Cluster string `json:"cluster,omitempty"`
}

const (
	defaultDedupWindow    = 10 * time.Minute
	defaultUpdateInterval = 30 * time.Second
	defaultRateLimit      = 30
	defaultMaxEvidence    = 8
	defaultMaxOpenAlerts  = 4096
	defaultSequenceWindow = 10 * time.Minute
	defaultScanWindow     = 10 * time.Second
	defaultScanThreshold  = 20
)

// WithDefaults fills every unset field.
func (c Config) WithDefaults() Config {
	if c.DedupWindow == 0 {
		c.DedupWindow = confval.Duration(defaultDedupWindow)
	}
	if c.UpdateInterval == 0 {
		c.UpdateInterval = confval.Duration(defaultUpdateInterval)
	}
	if c.RateLimitPerMinute == 0 {
		c.RateLimitPerMinute = defaultRateLimit
	}
	if c.MaxEvidence == 0 {
		c.MaxEvidence = defaultMaxEvidence
	}
	if c.MaxOpenAlerts == 0 {
		c.MaxOpenAlerts = defaultMaxOpenAlerts
	}
	if c.SequenceWindow == 0 {
		c.SequenceWindow = confval.Duration(defaultSequenceWindow)
	}
	if c.ScanWindow == 0 {
		c.ScanWindow = confval.Duration(defaultScanWindow)
	}
	if c.ScanThreshold == 0 {
		c.ScanThreshold = defaultScanThreshold
	}
	c.Baseline = c.Baseline.withDefaults()
	return c
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	for _, d := range []struct {
		name string
		v    confval.Duration
	}{{"dedupWindow", c.DedupWindow}, {"updateInterval", c.UpdateInterval}, {"sequenceWindow", c.SequenceWindow}, {"scanWindow", c.ScanWindow}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("analytics.%s: must not be negative", d.name))
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"rateLimitPerMinute", c.RateLimitPerMinute}, {"maxEvidence", c.MaxEvidence}, {"maxOpenAlerts", c.MaxOpenAlerts}, {"scanThreshold", c.ScanThreshold}} {
		if n.v < 1 {
			errs = append(errs, fmt.Errorf("analytics.%s %d: must be positive", n.name, n.v))
		}
	}
	if err := c.Baseline.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Options are the engine's facts about where it runs.
type Options struct {
	Node string
	// Supervisors are the processes that may signal Harrier without it being
	// tampering: its parent (service manager, container shim, shell).
	Supervisors []uint32
	Log         *slog.Logger
}

// Stats are the engine's counters since start.
type Stats struct {
	Events       uint64
	RuleMatches  uint64
	Alerts       uint64 // new alerts emitted
	Updates      uint64 // updates of open alerts emitted
	Deduplicated uint64 // repeats folded into an open alert
	Suppressed   map[string]uint64
	Excepted     uint64
	EvalErrors   uint64
	Redacted     uint64
	RulesLoaded  int
	RuleErrors   int
}

// Emit receives alerts; the engine calls it on its own goroutine.
type Emit func(*api.Alert)

// Engine evaluates events. It is not safe for concurrent use: one goroutine
// feeds it, which keeps its state lock-free.
type Engine struct {
	cfg       Config
	opts      Options
	log       *slog.Logger
	rules     map[string]*Rule
	byKind    map[api.EventKind]*ruleIndex
	detectors map[api.EventKind][]*detectorRule
	allDet    []*detectorRule
	ctx       evalContext
	redactor  *redactor
	dedup     *dedupTable
	limits    map[string]*tokenBucket
	baseline  *baselineStore
	stats     Stats
	now       time.Time
	// runtime is the backend's exception set, replaced whole at run time
	// (runtime_exceptions.go).
	runtime atomic.Pointer[runtimeExceptions]
	// rulesVersion fingerprints the running rules (rules_version.go).
	rulesVersion string
}

// NewEngine compiles the rule set. Rules that fail to compile are skipped and
// reported in the returned error alongside a working engine (nil only when
// the engine itself cannot be built).
func NewEngine(cfg Config, rs *RuleSet, opts Options) (*Engine, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	fields := newFields()
	env, err := newCELEnv(fields)
	if err != nil {
		return nil, fmt.Errorf("build CEL environment: %w", err)
	}
	e := &Engine{
		cfg: cfg, opts: opts, log: opts.Log, rules: map[string]*Rule{},
		detectors: map[api.EventKind][]*detectorRule{},
		redactor:  newRedactor(), limits: map[string]*tokenBucket{},
		ctx: evalContext{fields: fields, supervisors: map[uint32]bool{}},
	}
	for _, p := range opts.Supervisors {
		e.ctx.supervisors[p] = true
	}
	// Build outputs are tracked when the rule set names its build tools
	// (the built-in set does; a custom set without the list has no
	// proc.exe_built matches).
	if rs.lists["build_tools"] != nil {
		tools, err := rs.listItems("build_tools", 0)
		if err != nil {
			return nil, fmt.Errorf("list build_tools: %w", err)
		}
		e.ctx.builds = newBuildOutputs(tools)
	}
	e.dedup = newDedupTable(cfg.MaxOpenAlerts)
	var reset *BaselineReset
	e.baseline, err = openBaselines(cfg.Baseline)
	switch {
	case errors.As(err, &reset):
		opts.Log.Warn("baselines reset", "error", err)
	case err != nil:
		return nil, err
	}
	var errs []error
	var compiled []*compiledRule
	var running []*Rule
	for _, r := range rs.Rules {
		e.rules[r.ID] = r
		if !r.Enabled {
			continue
		}
		if r.Detector != "" {
			d, err := e.newDetector(r, rs)
			if err != nil {
				errs = append(errs, &RuleError{File: r.File, Line: r.Line, RuleID: r.ID, Err: err})
				continue
			}
			dr := &detectorRule{rule: r, det: d}
			e.allDet = append(e.allDet, dr)
			for _, k := range d.kinds() {
				e.detectors[k] = append(e.detectors[k], dr)
			}
			e.stats.RulesLoaded++
			running = append(running, r)
			continue
		}
		cr, err := compileRule(env, rs, fields, r)
		if err != nil {
			errs = append(errs, &RuleError{File: r.File, Line: r.Line, RuleID: r.ID, Err: err})
			continue
		}
		compiled = append(compiled, cr)
		e.stats.RulesLoaded++
		running = append(running, r)
	}
	e.rulesVersion = rulesVersion(running, rs)
	e.byKind = kindIndex(compiled)
	e.stats.RuleErrors = len(errs)
	e.stats.Suppressed = map[string]uint64{}
	return e, errors.Join(errs...)
}

// Rule returns a loaded rule by id (enabled or not), or nil.
func (e *Engine) Rule(id string) *Rule { return e.rules[id] }

// Stats returns a copy of the counters.
func (e *Engine) Stats() Stats {
	s := e.stats
	s.Suppressed = make(map[string]uint64, len(e.stats.Suppressed))
	for k, v := range e.stats.Suppressed {
		s.Suppressed[k] = v
	}
	return s
}

// Process evaluates one event. Secrets in its command lines are masked in
// place (copy-on-write: shared process blocks are never mutated), so the
// event is safe to ship after this call.
func (e *Engine) Process(ev *api.Event, emit Emit) {
	e.stats.Events++
	if e.redactor.redactEvent(ev) {
		e.stats.Redacted++
	}
	if t := ev.GetTime(); t != nil {
		if now := t.AsTime(); now.After(e.now) {
			e.now = now
		}
	}
	kind := ev.GetKind()
	c := &e.ctx
	c.reset(ev, kind.ShortName())
	c.builds.observe(ev)
	for _, cr := range e.byKind[kind].candidates(c) {
		ok, err := cr.matches(c)
		if err != nil {
			e.stats.EvalErrors++
			continue
		}
		if !ok {
			continue
		}
		e.stats.RuleMatches++
		evidence := []*api.Event{ev}
		if cr.rate != nil {
			if evidence = cr.rate.observe(c, e.eventTime(ev), e.cfg.MaxEvidence); evidence == nil {
				continue
			}
			evidence = append([]*api.Event(nil), evidence...)
		}
		e.raise(cr.rule, ev, evidence, renderOutput(cr.output, c), nil, emit)
	}
	detectors := e.detectors[kind]
	var now time.Time
	if len(detectors) > 0 {
		now = e.eventTime(ev)
	}
	for _, dr := range detectors {
		if evidence := dr.det.observe(c, now); len(evidence) > 0 {
			e.stats.RuleMatches++
			shaper, _ := dr.det.(alertShaper)
			e.raise(dr.rule, evidence[len(evidence)-1], evidence, "", shaper, emit)
		}
	}
	c.ev = nil // do not keep the event alive
}

func (e *Engine) eventTime(ev *api.Event) time.Time {
	if t := ev.GetTime(); t != nil {
		return t.AsTime()
	}
	return e.now
}

// alertShaper is a detector whose new alerts take facts from the triggering
// event that the rule cannot state once for all (admission-violation: the
// failed check's severity and the object under review).
type alertShaper interface {
	shape(a *api.Alert, r *Rule, trigger *api.Event)
}

// raise turns a match into a new alert or a repeat of an open one. shaper
// (nil for rules) adjusts a new alert.
func (e *Engine) raise(r *Rule, trigger *api.Event, evidence []*api.Event, output string, shaper alertShaper, emit Emit) {
	now := e.eventTime(trigger)
	if excepted(r, trigger) || e.runtimeExcepted(r.ID, trigger, now) {
		e.stats.Excepted++
		return
	}
	key := dedupKey(r.ID, trigger)
	open := e.dedup.get(key)
	if open != nil && now.Sub(open.alert.GetFirstSeen().AsTime()) >= e.cfg.DedupWindow.Std() {
		if open.dirty { // the closed alert's last repeats must not be lost
			e.sendUpdate(open, now, emit)
		}
		open = nil
	}
	if open != nil {
		open.alert.Count++
		if ts := timestamppb.New(now); now.After(open.alert.GetLastSeen().AsTime()) {
			open.alert.LastSeen = ts
		}
		for _, ev := range evidence {
			if len(open.alert.Evidence) < e.cfg.MaxEvidence {
				open.alert.Evidence = append(open.alert.Evidence, ev)
			}
		}
		open.dirty = true
		e.stats.Deduplicated++
		return
	}
	// One bucket per detection and container: a noisy container must not use
	// up the alerts of the same detection elsewhere on the node.
	limKey := r.ID + "|" + rateScope(trigger)
	lim := e.limits[limKey]
	if lim == nil {
		if len(e.limits) >= maxRateBuckets {
			clear(e.limits)
		}
		lim = newTokenBucket(e.cfg.RateLimitPerMinute, now)
		e.limits[limKey] = lim
	}
	if !lim.take(now) {
		e.stats.Suppressed[r.ID]++
		return
	}
	a := e.newAlert(r, trigger, evidence, output, key, now)
	if shaper != nil {
		shaper.shape(a, r, trigger)
	}
	if evicted := e.dedup.put(key, &openAlert{alert: a, lastSent: now}); evicted != nil && evicted.dirty {
		e.sendUpdate(evicted, now, emit)
	}
	e.stats.Alerts++
	emit(proto.Clone(a).(*api.Alert))
}

func (e *Engine) newAlert(r *Rule, trigger *api.Event, evidence []*api.Event, output, key string, now time.Time) *api.Alert {
	ts := timestamppb.New(now)
	sum := sha256.Sum256([]byte(key + "|" + e.opts.Node + "|" + strconv.FormatInt(now.UnixNano(), 10)))
	if len(evidence) > e.cfg.MaxEvidence {
		evidence = evidence[len(evidence)-e.cfg.MaxEvidence:]
	}
	tags := map[string]string{}
	for _, t := range r.Tags {
		tags[t] = "true"
	}
	if output == "" {
		output = r.Name
	}
	node := trigger.GetNode()
	if node == "" {
		node = e.opts.Node
	}
	return &api.Alert{
		Id:          hex.EncodeToString(sum[:16]),
		DetectionId: r.ID, Name: r.Name, Severity: r.Severity, Mitre: r.Mitre,
		Description: r.Description, Remediation: r.Remediation, Summary: output,
		FirstSeen: ts, LastSeen: ts, Count: 1,
		Node: node, Cluster: e.cfg.Cluster,
		Container: trigger.GetContainer(), Process: trigger.GetProcess(), Ancestry: trigger.GetAncestry(),
		Evidence: evidence, Tags: tags,
	}
}

// Tick sends updates of open alerts whose count grew, and closes alerts whose
// window has passed. Call it periodically with the wall clock.
func (e *Engine) Tick(now time.Time, emit Emit) {
	if now.Before(e.now) {
		now = e.now
	}
	e.dedup.each(func(key string, o *openAlert) bool {
		expired := now.Sub(o.alert.GetFirstSeen().AsTime()) >= e.cfg.DedupWindow.Std()
		if o.dirty && (expired || now.Sub(o.lastSent) >= e.cfg.UpdateInterval.Std()) {
			e.sendUpdate(o, now, emit)
		}
		return expired // drop closed alerts
	})
	if err := e.baseline.maybeSave(now); err != nil {
		e.log.Warn("saving baselines failed; learning continues in memory", "error", err)
	}
}

func (e *Engine) sendUpdate(o *openAlert, now time.Time, emit Emit) {
	o.dirty, o.lastSent = false, now
	e.stats.Updates++
	emit(proto.Clone(o.alert).(*api.Alert))
}

// Close sends pending updates and saves the baselines.
func (e *Engine) Close(emit Emit) error {
	e.dedup.each(func(_ string, o *openAlert) bool {
		if o.dirty {
			e.sendUpdate(o, e.now, emit)
		}
		return true
	})
	return e.baseline.save()
}

// dedupKey identifies "the same detection on the same container and process
// lineage": detection, container, and the executables of the process and its
// ancestors.
func dedupKey(id string, ev *api.Event) string {
	var b strings.Builder
	b.WriteString(id)
	b.WriteByte('|')
	b.WriteString(ev.GetContainer().GetId())
	b.WriteByte('|')
	p := ev.GetProcess()
	b.WriteString(p.GetExe())
	if multiCall(baseName(p.GetExe())) {
		// busybox applets share one executable; the applet tells them apart.
		b.WriteByte(':')
		b.WriteString(procName(p))
	}
	if a := ev.GetAudit(); a != nil {
		// Audit alerts repeat per actor and object, not per process.
		for _, s := range []string{a.GetUser(), a.GetVerb(), a.GetResource(), a.GetNamespace(), a.GetName()} {
			b.WriteByte('|')
			b.WriteString(s)
		}
	}
	if a := ev.GetAdmission(); a != nil {
		// Admission alerts repeat per check, object and requester: the
		// API server's retries, kubectl apply loops and a controller's pods
		// from one template (one generateName) fold into one alert. The
		// guard's answer is part of it: an attempt refused and an object
		// admitted are different facts.
		for _, s := range []string{a.GetCheckId(), a.GetKind(), a.GetNamespace(), a.GetName(), a.GetContainer(), a.GetUser(), admissionOutcome(a)} {
			b.WriteByte('|')
			b.WriteString(s)
		}
	}
	for _, a := range ev.GetAncestry() {
		b.WriteByte('<')
		b.WriteString(a.GetExe())
		if multiCall(baseName(a.GetExe())) {
			b.WriteByte(':')
			b.WriteString(ancestorName(a))
		}
	}
	return b.String()
}

// excepted reports whether one of the rule's exceptions covers the event.
func excepted(r *Rule, ev *api.Event) bool {
	for _, x := range r.Exceptions {
		if x.covers(ev) {
			return true
		}
	}
	return false
}

func (x Exception) covers(ev *api.Event) bool {
	c := ev.GetContainer()
	p := ev.GetProcess()
	return matchAny(x.Namespaces, eventNamespace(ev)) &&
		matchAny(x.Images, c.GetImage()) &&
		(matchAny(x.Containers, c.GetId()) || matchAny(x.Containers, c.GetName())) &&
		(matchAny(x.Processes, p.GetExe()) || matchAny(x.Processes, procName(p))) &&
		matchAny(x.Paths, filePath(ev))
}

// rateScope is what one rate-limit bucket covers: the event's container,
// or for the admission guard's events (no container yet) the object's
// namespace, so that one team's rollout cannot use up another's alerts.
func rateScope(ev *api.Event) string {
	if a := ev.GetAdmission(); a != nil {
		return "ns:" + a.GetNamespace()
	}
	return ev.GetContainer().GetId()
}

// eventNamespace is the Kubernetes namespace an event concerns: its pod's,
// or for control-plane events the object's.
func eventNamespace(ev *api.Event) string {
	if ns := ev.GetContainer().GetPodNamespace(); ns != "" {
		return ns
	}
	if a := ev.GetAudit(); a != nil {
		return a.GetNamespace()
	}
	return ev.GetAdmission().GetNamespace()
}

// matchAny: an empty pattern list matches anything; a pattern ending in "/"
// is a prefix; otherwise a path.Match glob.
func matchAny(patterns []string, s string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if strings.HasSuffix(p, "/") && strings.HasPrefix(s, p) {
			return true
		}
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

// maxRateBuckets bounds the rate-limit table.
const maxRateBuckets = 4096

// tokenBucket limits new alerts per detection and container.
type tokenBucket struct {
	perMinute int
	tokens    float64
	last      time.Time
}

func newTokenBucket(perMinute int, now time.Time) *tokenBucket {
	return &tokenBucket{perMinute: perMinute, tokens: float64(perMinute), last: now}
}

func (b *tokenBucket) take(now time.Time) bool {
	if d := now.Sub(b.last); d > 0 {
		b.tokens += d.Minutes() * float64(b.perMinute)
		if b.tokens > float64(b.perMinute) {
			b.tokens = float64(b.perMinute)
		}
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// openAlert is an alert inside its de-duplication window.
type openAlert struct {
	alert    *api.Alert
	lastSent time.Time
	dirty    bool
}

// dedupTable is a bounded map of open alerts; when full, the oldest goes.
type dedupTable struct {
	max   int
	m     map[string]*openAlert
	order []string
}

func newDedupTable(max int) *dedupTable {
	return &dedupTable{max: max, m: map[string]*openAlert{}}
}

func (t *dedupTable) get(key string) *openAlert { return t.m[key] }

// put stores an alert and returns the one evicted to make room, if any.
func (t *dedupTable) put(key string, o *openAlert) *openAlert {
	var evicted *openAlert
	if _, exists := t.m[key]; !exists {
		if len(t.m) >= t.max {
			for len(t.order) > 0 && evicted == nil {
				oldest := t.order[0]
				t.order = t.order[1:]
				if old, ok := t.m[oldest]; ok {
					evicted = old
					delete(t.m, oldest)
				}
			}
		}
		t.order = append(t.order, key)
	}
	t.m[key] = o
	return evicted
}

// each visits every open alert; fn returns true to remove it.
func (t *dedupTable) each(fn func(string, *openAlert) bool) {
	kept := t.order[:0]
	for _, k := range t.order {
		o, ok := t.m[k]
		if !ok {
			continue
		}
		if fn(k, o) {
			delete(t.m, k)
			continue
		}
		kept = append(kept, k)
	}
	t.order = kept
}
