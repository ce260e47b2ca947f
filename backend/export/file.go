package export

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"
)

// fileSink appends one record per line and rotates by size: path.1 is the
// newest rotated file, path.<keep> the oldest kept.
type fileSink struct {
	cfg   FileConfig
	f     *os.File
	size  int64
	reply string
}

func newFileSink(c FileConfig) *fileSink { return &fileSink{cfg: c} }

func (s *fileSink) open() error {
	if s.f != nil {
		return nil
	}
	f, err := os.OpenFile(s.cfg.Path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("file sink: %w", err)
	}
	s.f, s.size = f, st.Size()
	// A process killed in the middle of a write leaves a torn last line:
	// end it, so the next record starts a line of its own.
	if s.size > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], s.size-1); err == nil && last[0] != '\n' {
			if _, err := f.Write([]byte{'\n'}); err != nil {
				return s.fail(err)
			}
			s.size++
		}
	}
	return nil
}

func (s *fileSink) rotate() error {
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	s.f = nil
	name := func(i int) string { return s.cfg.Path + "." + strconv.Itoa(i) }
	if err := os.Remove(name(s.cfg.Keep)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file sink: rotate: %w", err)
	}
	for i := s.cfg.Keep - 1; i >= 1; i-- {
		if err := os.Rename(name(i), name(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("file sink: rotate: %w", err)
		}
	}
	if err := os.Rename(s.cfg.Path, name(1)); err != nil {
		return fmt.Errorf("file sink: rotate: %w", err)
	}
	return s.open()
}

func (s *fileSink) send(_ context.Context, msgs []message) (int, error) {
	if err := s.open(); err != nil {
		return 0, err
	}
	var buf []byte
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		n, err := s.f.Write(buf)
		s.size += int64(n)
		buf = buf[:0]
		return err
	}
	for _, m := range msgs {
		line := int64(len(m.body) + 1)
		if s.size+int64(len(buf))+line > s.cfg.MaxBytes && s.size+int64(len(buf)) > 0 {
			if err := flush(); err != nil {
				return 0, s.fail(err)
			}
			if err := s.f.Sync(); err != nil {
				return 0, s.fail(err)
			}
			if err := s.rotate(); err != nil {
				return 0, s.fail(err)
			}
		}
		buf = append(append(buf, m.body...), '\n')
	}
	if err := flush(); err != nil {
		return 0, s.fail(err)
	}
	if err := s.f.Sync(); err != nil {
		return 0, s.fail(err)
	}
	s.reply = fmt.Sprintf("appended %d line(s) to %s", len(msgs), s.cfg.Path)
	return len(msgs), nil
}

// fail closes the file after an error: the batch is written again (at
// least once) into the reopened file.
func (s *fileSink) fail(err error) error {
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
	return fmt.Errorf("file sink %s: %w", s.cfg.Path, err)
}

func (s *fileSink) confirmAfter() time.Duration { return 0 }
func (s *fileSink) check() error                { return nil }
func (s *fileSink) lastReply() string           { return s.reply }
func (s *fileSink) close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
