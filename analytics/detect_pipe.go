package analytics

import (
	"slices"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// base64Pipe: `echo … | base64 -d | sh` written in a script. The decoder and
// the shell are sibling processes joined by a pipe, so no command line
// holds the pipeline (base64-exec reads the one that does): what gives it
// away is a decoder and a shell reading its standard input started by the
// same parent within a few seconds, in either order.
type base64Pipe struct {
	shells map[string]bool
	window time.Duration
	// pending is the latest decoder or stdin shell of each parent.
	pending map[pipeKey]pipeHalf
}

type pipeKey struct {
	container string
	ppid      uint32
}

type pipeHalf struct {
	ev      *api.Event
	decoder bool
	at      time.Time
}

// pipeWindow bounds how far apart the two execs of one pipeline may be.
const pipeWindow = 5 * time.Second

const maxPipeParents = 4096

func (*base64Pipe) kinds() []api.EventKind { return []api.EventKind{api.EventKind_EVENT_KIND_EXEC} }

func (d *base64Pipe) observe(c *evalContext, now time.Time) []*api.Event {
	p := c.ev.GetProcess()
	args := p.GetArgs()
	name := c.procNameValue()
	var decoder bool
	switch {
	case isDecoder(name, args):
		decoder = true
	case d.shells[name] && readsStdin(args):
	default:
		return nil
	}
	key := pipeKey{container: c.ev.GetContainer().GetId(), ppid: p.GetPpid()}
	if other, ok := d.pending[key]; ok && other.decoder != decoder && now.Sub(other.at) <= d.window {
		delete(d.pending, key)
		if decoder {
			return []*api.Event{c.ev, other.ev} // the shell stays the trigger
		}
		return []*api.Event{other.ev, c.ev}
	}
	if len(d.pending) >= maxPipeParents {
		clear(d.pending)
	}
	d.pending[key] = pipeHalf{ev: c.ev, decoder: decoder, at: now}
	return nil
}

// isDecoder: base64/base32 decoding, openssl's base64 decoder, or xxd
// reverting a hex dump.
func isDecoder(name string, args []string) bool {
	switch name {
	case "base64", "base32", "basenc":
		return slices.ContainsFunc(args[min(1, len(args)):], func(a string) bool {
			return a == "-d" || a == "--decode" || a == "-D" || a == "-di" || a == "-id"
		})
	case "openssl":
		return len(args) > 2 && (args[1] == "base64" || args[1] == "enc") && slices.Contains(args[2:], "-d")
	case "xxd":
		return slices.ContainsFunc(args[min(1, len(args)):], func(a string) bool { return a == "-r" || a == "-rp" || a == "-pr" })
	}
	return false
}

// readsStdin: a shell given no script and no -c command reads its commands
// from standard input ("sh", "bash -s", "sh -").
func readsStdin(args []string) bool {
	for _, a := range args[min(1, len(args)):] {
		if a == "-" || a == "-s" {
			continue
		}
		// A script operand, or -c alone or among short flags (-ec).
		if len(a) < 2 || a[0] != '-' || a[1] != '-' && strings.ContainsRune(a[1:], 'c') {
			return false
		}
	}
	return true
}
