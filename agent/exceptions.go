package agent

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
)

// exceptionsFile keeps the backend's last alert exceptions applied, so
// that a restarted agent applies them before it reconnects.
const exceptionsFile = "exceptions.json"

// exceptionSink is the analytics engine's runtime exception set.
type exceptionSink interface {
	SetRuntimeExceptions(version uint64, list []analytics.RuntimeException) error
	RuntimeExceptionsVersion() uint64
}

// exceptionsRunner applies the site's alert exceptions, as the backend
// sends them on the control channel, to the analytics engine.
type exceptionsRunner struct {
	engine exceptionSink
	path   string
	log    *slog.Logger
	mu     sync.Mutex // serialises apply: the file and the engine agree
}

// newExceptionsRunner applies the exceptions kept in dir, if any; a file
// that cannot be read is logged and the agent starts without exceptions
// (the backend sends the current version once connected).
func newExceptionsRunner(engine exceptionSink, dir string, log *slog.Logger) *exceptionsRunner {
	x := &exceptionsRunner{engine: engine, path: filepath.Join(dir, exceptionsFile), log: log.With("component", "exceptions")}
	raw, err := os.ReadFile(x.path)
	if errors.Is(err, fs.ErrNotExist) {
		return x
	}
	var b api.ExceptionBundle
	if err == nil {
		err = protojson.Unmarshal(raw, &b)
	}
	if err == nil {
		err = engine.SetRuntimeExceptions(b.GetVersion(), runtimeExceptions(&b))
	}
	if err != nil {
		x.log.Error("alert exceptions kept on disk not applied; none until the backend sends them", "path", x.path, "error", err)
		return x
	}
	x.log.Info("alert exceptions applied from disk", "version", b.GetVersion(), "exceptions", len(b.GetExceptions()))
	return x
}

// apply replaces the engine's runtime exceptions with b's and keeps b; a
// bundle the engine refuses leaves the set in force.
func (x *exceptionsRunner) apply(b *api.ExceptionBundle) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if b.GetVersion() == x.engine.RuntimeExceptionsVersion() {
		return nil // sent again on a new connection: already in force
	}
	if err := x.engine.SetRuntimeExceptions(b.GetVersion(), runtimeExceptions(b)); err != nil {
		x.log.Error("alert exceptions from the backend refused; the set in force stays", "version", b.GetVersion(), "error", err)
		return err
	}
	raw, err := protojson.Marshal(b)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(x.path), 0o700)
	}
	if err == nil {
		err = writeFileAtomic(x.path, raw)
	}
	if err != nil {
		// In force now; only a restart before the next connection loses it.
		x.log.Error("alert exceptions applied but not kept on disk", "version", b.GetVersion(), "error", err)
	}
	x.log.Info("alert exceptions applied", "version", b.GetVersion(), "exceptions", len(b.GetExceptions()))
	return nil
}

func (x *exceptionsRunner) version() uint64 { return x.engine.RuntimeExceptionsVersion() }

func runtimeExceptions(b *api.ExceptionBundle) []analytics.RuntimeException {
	out := make([]analytics.RuntimeException, 0, len(b.GetExceptions()))
	for _, e := range b.GetExceptions() {
		x := analytics.RuntimeException{ID: e.GetId(), Detection: e.GetDetection(), Cluster: e.GetCluster(),
			Namespaces: e.GetNamespaces(), Workloads: e.GetWorkloads(), Images: e.GetImages(), Processes: e.GetProcesses(),
			Commands: e.GetCommands(), Destinations: e.GetDestinations(), Paths: e.GetPaths()}
		if e.GetExpires() != nil {
			x.Expires = e.GetExpires().AsTime()
		}
		out = append(out, x)
	}
	return out
}
