package backend

import (
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Payload is an encoded string found in a command line or path, decoded
// for the analyst. Both texts are attacker-controlled: pages escape them.
type Payload struct {
	// Encoding is "base64", "url" or "hex".
	Encoding string `json:"encoding"`
	Raw      string `json:"raw"`
	Decoded  string `json:"decoded"`
	// Nested are payloads found in Decoded (a base64 inside a URL-encoded
	// argument, say), one level deep.
	Nested []Payload `json:"nested,omitempty"`
}

// Bounds of the decoder: what one command line may make it do.
const (
	maxPayloadInput = 64 << 10 // bytes of text scanned
	maxPayloads     = 16       // payloads reported per text
	maxPayloadDepth = 2
	minBase64Len    = 16 // "ZWNobyBoaQ==" (echo hi) is too short to matter
	minHexLen       = 16
)

var (
	base64Token = regexp.MustCompile(`[A-Za-z0-9+/_-]{16,}={0,2}`)
	hexToken    = regexp.MustCompile(`(?:\\x[0-9a-fA-F]{2}){4,}|\b(?:[0-9a-fA-F]{2}){8,}\b`)
	urlToken    = regexp.MustCompile(`[^\s'"]*(?:%[0-9a-fA-F]{2})[^\s'"]*`)
)

// FindPayloads returns the base64, hex and URL-encoded strings in s that
// decode to text, each with its decoding. Input beyond maxPayloadInput is
// not scanned; at most maxPayloads are returned.
func FindPayloads(s string) []Payload {
	return findPayloads(s, 0)
}

func findPayloads(s string, depth int) []Payload {
	if len(s) > maxPayloadInput {
		s = s[:maxPayloadInput]
	}
	var out []Payload
	seen := map[string]bool{}
	add := func(p Payload) {
		if len(out) >= maxPayloads || seen[p.Raw] || p.Decoded == p.Raw {
			return
		}
		seen[p.Raw] = true
		if depth+1 < maxPayloadDepth {
			p.Nested = findPayloads(p.Decoded, depth+1)
		}
		out = append(out, p)
	}
	for _, m := range urlToken.FindAllString(s, maxPayloads) {
		if d, err := url.PathUnescape(m); err == nil && readable(d) {
			add(Payload{Encoding: "url", Raw: m, Decoded: d})
		}
	}
	for _, m := range hexToken.FindAllString(s, maxPayloads) {
		if d, ok := decodeHex(m); ok {
			add(Payload{Encoding: "hex", Raw: m, Decoded: d})
		}
	}
	for _, m := range base64Token.FindAllString(s, maxPayloads) {
		if d, ok := decodeBase64(m); ok {
			add(Payload{Encoding: "base64", Raw: m, Decoded: d})
		}
	}
	return out
}

func decodeHex(m string) (string, bool) {
	if len(m) < minHexLen {
		return "", false
	}
	raw := strings.ReplaceAll(m, `\x`, "")
	b, err := hex.DecodeString(raw)
	if err != nil || !readable(string(b)) {
		return "", false
	}
	return string(b), true
}

// decodeBase64 tries the standard and URL alphabets, padded or not. A word
// that happens to be valid base64 (a long path segment, say) rarely decodes
// to readable text, which is what readable checks.
func decodeBase64(m string) (string, bool) {
	if len(m) < minBase64Len {
		return "", false
	}
	trimmed := strings.TrimRight(m, "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(trimmed); err == nil && readable(string(b)) {
			return string(b), true
		}
	}
	return "", false
}

// readable: valid UTF-8, mostly printable, with some letters — the decoded
// form of a command, a script or a URL, not of random bytes.
func readable(s string) bool {
	if len(s) < 4 || !utf8.ValidString(s) {
		return false
	}
	var printable, letters, n int
	for _, r := range s {
		n++
		if unicode.IsPrint(r) || r == '\n' || r == '\t' || r == '\r' {
			printable++
		}
		if unicode.IsLetter(r) {
			letters++
		}
	}
	return printable*100 >= n*95 && letters*100 >= n*30
}

// quoteIfBinary shows a decoded text as Go would quote it when it holds
// control characters, so that nothing invisible hides in the page.
func quoteIfBinary(s string) string {
	for _, r := range s {
		if r != '\n' && r != '\t' && !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
