package api

import (
	"unicode/utf8"
)

// Text turns bytes from the kernel or /proc (file names, argv, comm) into a
// string that protobuf accepts. Linux names are arbitrary bytes but protobuf
// strings must be UTF-8: valid input is kept as is, and each invalid byte
// becomes a visible \xNN escape rather than failing the whole event, so a
// hostile file name cannot make an event disappear.
func Text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			out = append(out, `\x`...)
			out = append(out, "0123456789abcdef"[b[0]>>4], "0123456789abcdef"[b[0]&15])
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return string(out)
}

// TextString is Text for a string that may hold invalid UTF-8.
func TextString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return Text([]byte(s))
}
