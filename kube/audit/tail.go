package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// DefaultMaxLineBytes bounds one line of the audit log.
const DefaultMaxLineBytes = 4 << 20

// Tailer follows the API server's JSON audit log (--audit-log-format=json,
// one event per line). It survives rotation by rename (the old file is read
// to its end, then the new one from its start) and by truncation, and keeps
// its position in StateFile so a restart neither replays nor skips lines.
// With no saved position it starts at the end of an existing log (old
// events are not replayed) or at the start of a log created later.
type Tailer struct {
	Path      string
	StateFile string
	Decoder   Decoder
	Out       chan<- *api.Event
	// Poll is how often the file is checked for more (default 500ms).
	Poll time.Duration
	// MaxLineBytes bounds a line (default DefaultMaxLineBytes); longer
	// lines are skipped and counted as rejected.
	MaxLineBytes int
	Log          *slog.Logger
	n            counters
}

// Stats returns the tailer's counters.
func (t *Tailer) Stats() Stats { return t.n.stats() }

// position is what StateFile holds.
type position struct {
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

// followed is the open log file.
type followed struct {
	f      *os.File
	inode  uint64
	offset int64
	// skipping: inside a line longer than MaxLineBytes.
	skipping bool
	buf      []byte
}

func inodeOf(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// Run follows the log until ctx is done.
func (t *Tailer) Run(ctx context.Context) error {
	poll := t.Poll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	saved, haveSaved := t.load()
	var cur *followed
	defer func() {
		if cur != nil {
			cur.f.Close()
		}
	}()
	first, lastSaved := true, saved
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if cur == nil {
			var err error
			cur, err = t.open(saved, haveSaved, first)
			if err != nil {
				return err
			}
		}
		first = false
		if cur != nil {
			if err := t.drain(ctx, cur); err != nil {
				return err
			}
			next, err := t.checkRotation(cur)
			if err != nil {
				return err
			}
			if next != cur {
				// Renamed away: read what the writer added to the old
				// file since, then follow the new one.
				if err := t.drain(ctx, cur); err != nil {
					return err
				}
				cur.f.Close()
				cur = next
				continue
			}
			if p := (position{Inode: cur.inode, Offset: cur.offset - int64(len(cur.buf))}); p != lastSaved {
				t.save(p)
				lastSaved = p
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// open opens the log (nil while it does not exist) at the saved position,
// at its end on the first open without one, or at its start.
func (t *Tailer) open(saved position, haveSaved, first bool) (*followed, error) {
	f, err := os.Open(t.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	cur := &followed{f: f, inode: inodeOf(fi)}
	switch {
	case haveSaved && first && saved.Inode == cur.inode && saved.Offset <= fi.Size():
		cur.offset = saved.Offset
	case !haveSaved && first:
		cur.offset = fi.Size()
	}
	if _, err := f.Seek(cur.offset, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return cur, nil
}

// checkRotation returns the file to follow next: cur, or the new file at
// Path after a rename. A truncated file is read again from its start.
func (t *Tailer) checkRotation(cur *followed) (*followed, error) {
	fi, err := os.Stat(t.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return cur, nil // renamed, new one not there yet
	}
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if inodeOf(fi) != cur.inode {
		next, err := t.open(position{}, false, false)
		if err != nil || next == nil {
			return cur, err
		}
		t.Log.Info("audit log rotated", "path", t.Path)
		return next, nil
	}
	if fi.Size() < cur.offset {
		t.Log.Info("audit log truncated", "path", t.Path)
		if _, err := cur.f.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		cur.offset, cur.buf, cur.skipping = 0, cur.buf[:0], false
	}
	return cur, nil
}

// drain reads every complete line available.
func (t *Tailer) drain(ctx context.Context, cur *followed) error {
	maxLine := t.MaxLineBytes
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	chunk := make([]byte, 64<<10)
	for {
		n, err := cur.f.Read(chunk)
		if n > 0 {
			data := chunk[:n]
			for len(data) > 0 {
				i := bytes.IndexByte(data, '\n')
				if i < 0 {
					if !cur.skipping {
						cur.buf = append(cur.buf, data...)
						if len(cur.buf) > maxLine {
							cur.skipping, cur.buf = true, cur.buf[:0]
							t.n.rejected.Add(1)
						}
					}
					cur.offset += int64(len(data))
					break
				}
				line := data[:i]
				cur.offset += int64(i + 1)
				data = data[i+1:]
				if cur.skipping {
					cur.skipping = false
					continue
				}
				if len(cur.buf) > 0 {
					line = append(cur.buf, line...)
				}
				if err := t.line(ctx, line); err != nil {
					return err
				}
				cur.buf = cur.buf[:0]
			}
		}
		if errors.Is(err, io.EOF) || n == 0 {
			// The partial last line stays in buf; the saved offset is
			// the end of the last complete line.
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit log: %w", err)
		}
	}
}

func (t *Tailer) line(ctx context.Context, line []byte) error {
	if len(bytes.TrimSpace(line)) == 0 {
		return nil
	}
	ev, err := t.Decoder.DecodeEvent(line)
	if err != nil {
		t.n.rejected.Add(1)
		t.Log.Debug("audit log: bad line", "error", err)
		return nil
	}
	select {
	case t.Out <- ev:
		t.n.events.Add(1)
		return nil
	case <-ctx.Done():
		t.n.dropped.Add(1)
		return nil
	}
}

func (t *Tailer) load() (position, bool) {
	var p position
	if t.StateFile == "" {
		return p, false
	}
	b, err := os.ReadFile(t.StateFile)
	if err != nil || json.Unmarshal(b, &p) != nil {
		return p, false
	}
	return p, true
}

// save writes the position of the last complete line read.
func (t *Tailer) save(p position) {
	if t.StateFile == "" {
		return
	}
	b, _ := json.Marshal(p)
	tmp := t.StateFile + ".tmp"
	if err := os.MkdirAll(filepath.Dir(t.StateFile), 0o700); err != nil {
		t.Log.Warn("audit log position not saved", "error", err)
		return
	}
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Log.Warn("audit log position not saved", "error", err)
		return
	}
	if err := os.Rename(tmp, t.StateFile); err != nil {
		t.Log.Warn("audit log position not saved", "error", err)
	}
}
