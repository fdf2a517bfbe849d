package sysmem

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	return p
}

func TestMemAvailable(t *testing.T) {
	dir := t.TempDir()
	p := write(t, dir, "meminfo", "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   12345678 kB\n")
	v, ok := memAvailable(p)
	require.True(t, ok)
	assert.Equal(t, int64(12345678)<<10, v)
	_, ok = memAvailable(write(t, dir, "bad", "MemAvailable: lots\n"))
	assert.False(t, ok)
	_, ok = memAvailable(filepath.Join(dir, "missing"))
	assert.False(t, ok)
}

func TestCgroupLeft(t *testing.T) {
	v2 := t.TempDir()
	write(t, v2, "memory.max", "1073741824\n")
	write(t, v2, "memory.current", "73741824\n")
	left, ok := cgroupLeft(v2)
	require.True(t, ok)
	assert.Equal(t, int64(1_000_000_000), left)

	unlimited := t.TempDir()
	write(t, unlimited, "memory.max", "max\n")
	write(t, unlimited, "memory.current", "5\n")
	_, ok = cgroupLeft(unlimited)
	assert.False(t, ok)

	v1 := t.TempDir()
	write(t, v1, "memory/memory.limit_in_bytes", "2000\n")
	write(t, v1, "memory/memory.usage_in_bytes", "3000\n")
	left, ok = cgroupLeft(v1)
	require.True(t, ok)
	assert.Zero(t, left, "over the limit leaves nothing")
}

func TestAvailableHere(t *testing.T) {
	v, ok := Available()
	if runtime.GOOS != "linux" {
		assert.False(t, ok)
		return
	}
	require.True(t, ok)
	assert.Positive(t, v)
	t.Logf("available: %.1f GiB", float64(v)/(1<<30))
}
