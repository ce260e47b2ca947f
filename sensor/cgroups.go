package sensor

import (
	"sync"

	"github.com/harrier-sec/harrier/sensor/container"
)

// cgroupResolver maps kernel cgroup IDs to containers. Exec records carry
// the cgroup path and fill it; other events look their ID up, and a miss
// walks the cgroup hierarchy once (negative results are cached too, since
// cgroup IDs are never reused).
type cgroupResolver struct {
	mountpoint string
	max        int

	mu    sync.Mutex
	known map[uint64]container.Info
}

// maxCgroupWalk bounds the directories visited when resolving an unknown ID.
const maxCgroupWalk = 20000

func newCgroupResolver(mountpoint string, max int) *cgroupResolver {
	return &cgroupResolver{mountpoint: mountpoint, max: max, known: make(map[uint64]container.Info)}
}

// learn records the path the kernel reported for id.
func (r *cgroupResolver) learn(id uint64, path string) container.Info {
	info := container.ParseCgroupPath(path)
	if id == 0 {
		return info
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.put(id, info)
	return info
}

// resolve returns the container of cgroup id, walking the hierarchy on a miss.
func (r *cgroupResolver) resolve(id uint64) container.Info {
	if id == 0 {
		return container.Info{}
	}
	r.mu.Lock()
	info, ok := r.known[id]
	r.mu.Unlock()
	if ok {
		return info
	}
	if r.mountpoint != "" {
		if path, err := container.FindCgroupByID(r.mountpoint, id, maxCgroupWalk); err == nil {
			info = container.ParseCgroupPath(path)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.put(id, info)
	return info
}

// put stores under the lock; at capacity it forgets everything, which costs
// one re-walk per live cgroup and keeps memory bounded under container churn.
func (r *cgroupResolver) put(id uint64, info container.Info) {
	if len(r.known) >= r.max {
		clear(r.known)
	}
	r.known[id] = info
}

func (r *cgroupResolver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.known)
}
