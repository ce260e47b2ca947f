package analytics

import (
	"regexp"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// mask replaces a secret.
const mask = "***"

// redactor masks secrets in command lines before events and alerts leave the
// engine. Process blocks are shared between events of the same thread (the
// sensor caches them), so redaction is copy-on-write and its outcome is
// cached per block: the common case, no secret, costs one map lookup.
type redactor struct {
	keyValue   *regexp.Regexp // password=..., token: ..., AWS_SECRET_ACCESS_KEY=...
	urlCreds   *regexp.Regexp // scheme://user:pass@host
	bearer     *regexp.Regexp // Bearer <token>
	awsKeyID   *regexp.Regexp // AKIA...
	jwt        *regexp.Regexp // eyJ...eyJ...
	secretFlag *regexp.Regexp // --password VALUE (value in the next argument)
	seen       map[*api.Process]*api.Process
	seenAnc    map[*api.Ancestor]*api.Ancestor
}

const maxRedactCache = 8192

func newRedactor() *redactor {
	const names = `(?:[A-Za-z0-9_.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|auth))`
	return &redactor{
		keyValue:   regexp.MustCompile(`(?i)(` + names + `\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&;]+)`),
		urlCreds:   regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)`),
		bearer:     regexp.MustCompile(`(?i)(bearer\s+)([A-Za-z0-9._~+/=-]+)`),
		awsKeyID:   regexp.MustCompile(`\b(?:AKIA|ASIA)[0-9A-Z]{16}\b`),
		jwt:        regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`),
		secretFlag: regexp.MustCompile(`(?i)^-{1,2}` + names + `$`),
		seen:       map[*api.Process]*api.Process{},
		seenAnc:    map[*api.Ancestor]*api.Ancestor{},
	}
}

// suspicious is a cheap, allocation-free pre-check: only arguments with one
// of these (ASCII, case-insensitive) hints go through the regular expressions.
func suspicious(s string) bool {
	for _, hint := range [...]string{"pass", "pwd", "secret", "token", "key", "cred", "auth", "bearer", "akia", "asia", "://", "eyj"} {
		if containsFold(s, hint) {
			return true
		}
	}
	return false
}

// containsFold is strings.Contains ignoring ASCII case, for a lower-case needle.
func containsFold(s, lowerNeedle string) bool {
	n := len(lowerNeedle)
	for i := 0; i+n <= len(s); i++ {
		match := true
		for j := 0; j < n; j++ {
			c := s[i+j]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lowerNeedle[j] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// redactArgs returns args with secrets masked, and whether anything changed.
// It never modifies args.
func (r *redactor) redactArgs(args []string) ([]string, bool) {
	var out []string
	for i, a := range args {
		red := a
		if i > 0 && r.secretFlag.MatchString(args[i-1]) && !strings.HasPrefix(a, "-") {
			red = mask
		} else if suspicious(a) {
			red = r.redactString(a)
		}
		if red != a && out == nil {
			out = append(make([]string, 0, len(args)), args[:i]...)
		}
		if out != nil {
			out = append(out, red)
		}
	}
	if out == nil {
		return args, false
	}
	return out, true
}

// redactString masks secrets in free text (a command line, a URL).
func (r *redactor) redactString(s string) string {
	s = r.keyValue.ReplaceAllString(s, "${1}"+mask)
	s = r.urlCreds.ReplaceAllString(s, "${1}"+mask+"${3}")
	s = r.bearer.ReplaceAllString(s, "${1}"+mask)
	s = r.awsKeyID.ReplaceAllString(s, mask)
	return r.jwt.ReplaceAllString(s, mask)
}

// redactEvent masks secrets in the event's process and ancestry, replacing
// (not mutating) the blocks that need it. It reports whether anything changed.
func (r *redactor) redactEvent(ev *api.Event) bool {
	changed := false
	if p := ev.GetProcess(); p != nil {
		clean, ok := r.seen[p]
		if !ok {
			clean = p
			if args, red := r.redactArgs(p.GetArgs()); red {
				clean = proto.Clone(p).(*api.Process)
				clean.Args = args
			}
			if len(r.seen) >= maxRedactCache {
				clear(r.seen)
			}
			r.seen[p] = clean
		}
		if clean != p {
			ev.Process = clean
			changed = true
		}
	}
	anc := ev.GetAncestry()
	copied := false
	for i, a := range anc {
		clean, ok := r.seenAnc[a]
		if !ok {
			clean = a
			if args, red := r.redactArgs(a.GetArgs()); red {
				clean = proto.Clone(a).(*api.Ancestor)
				clean.Args = args
			}
			if len(r.seenAnc) >= maxRedactCache {
				clear(r.seenAnc)
			}
			r.seenAnc[a] = clean
		}
		if clean != a {
			if !copied {
				// The ancestry slice may be shared too: copy it before writing.
				cp := make([]*api.Ancestor, len(anc))
				copy(cp, anc)
				ev.Ancestry, anc, copied = cp, cp, true
			}
			anc[i] = clean
			changed = true
		}
	}
	return changed
}
