package container

import (
	"io"

	"github.com/harrier-sec/harrier/internal/mountinfo"
)

// The mountinfo parser lives in internal/mountinfo (response uses it too);
// these names keep the container package's callers as they were.
type (
	Mount       = mountinfo.Mount
	Hierarchies = mountinfo.Hierarchies
)

// ErrMalformed is wrapped by parse errors for /proc mountinfo and cgroup
// files.
var ErrMalformed = mountinfo.ErrMalformed

// ParseMountinfo is mountinfo.ParseMountinfo.
func ParseMountinfo(r io.Reader) ([]Mount, error) { return mountinfo.ParseMountinfo(r) }

// FindHierarchies is mountinfo.FindHierarchies.
func FindHierarchies(mounts []Mount) Hierarchies { return mountinfo.FindHierarchies(mounts) }
