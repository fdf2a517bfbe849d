// Package sysmem tells how much memory the process may still allocate on
// the host, so that big allocations (a CPU KV cache of a context the user
// asked for) can be refused with an error instead of the runtime's fatal
// "out of memory", which no caller can recover from.
package sysmem

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Available returns the bytes the process may still allocate: the
// kernel's MemAvailable (/proc/meminfo), lowered to what the cgroup's
// memory.max leaves (cgroup v2, or v1's memory.limit_in_bytes). ok is false
// where neither can be read (not Linux); callers then skip their check.
func Available() (bytes int64, ok bool) {
	avail, ok := memAvailable("/proc/meminfo")
	if !ok {
		return 0, false
	}
	if left, ok := cgroupLeft("/sys/fs/cgroup"); ok && left < avail {
		avail = left
	}
	return avail, true
}

// memAvailable reads MemAvailable (in kB) from a meminfo file.
func memAvailable(path string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, found := strings.CutPrefix(line, "MemAvailable:"); found {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, false
			}
			return kb << 10, true
		}
	}
	return 0, false
}

// cgroupLeft returns the cgroup's limit less its usage, when it has a
// limit: cgroup v2 (memory.max, memory.current under root) or v1
// (memory/memory.limit_in_bytes and memory.usage_in_bytes).
func cgroupLeft(root string) (int64, bool) {
	for _, p := range [][2]string{
		{root + "/memory.max", root + "/memory.current"},
		{root + "/memory/memory.limit_in_bytes", root + "/memory/memory.usage_in_bytes"},
	} {
		limit, ok := readInt(p[0])
		if !ok || limit <= 0 || limit >= 1<<60 { // "max", or v1's "no limit"
			continue
		}
		used, ok := readInt(p[1])
		if !ok {
			continue
		}
		return max(limit-used, 0), true
	}
	return 0, false
}

func readInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	return v, err == nil
}
