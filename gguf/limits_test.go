package gguf

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tinyPairs returns a GGUF file of n metadata pairs of one byte each, the
// densest metadata a file can hold.
func tinyPairs(t *testing.T, n int) []byte {
	t.Helper()
	var md Metadata
	for i := range n {
		require.NoError(t, md.SetAny(fmt.Sprintf("k%d", i), uint8(1)))
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, &md, nil)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// TestOpenMemoryBound: opening a file of the most metadata pairs allowed
// allocates less than 10× the file (it was 19× with no bound on the pairs,
// and a 19 MB file of a million pairs took 270-410 MB), and one pair more
// is refused before anything is parsed.
func TestOpenMemoryBound(t *testing.T) {
	data := tinyPairs(t, MaxMetadataPairs)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f, err := NewFile(bytes.NewReader(data), int64(len(data)))
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	assert.Equal(t, MaxMetadataPairs, f.Metadata.Len())
	ratio := float64(after.TotalAlloc-before.TotalAlloc) / float64(len(data))
	t.Logf("%d pairs in %d bytes: %.1f× the file allocated", MaxMetadataPairs, len(data), ratio)
	assert.Less(t, ratio, 10.0)

	data = tinyPairs(t, MaxMetadataPairs+1)
	_, err = NewFile(bytes.NewReader(data), int64(len(data)))
	var fe *FormatError
	require.True(t, errors.As(err, &fe), "%v", err)
	assert.Contains(t, err.Error(), "metadata count")
}

// TestSmallInputSmallWindow: a parse allocates no more than the input for
// its read window (a fuzzer's inputs are a few hundred bytes; each used to
// cost a 64 KiB window).
func TestSmallInputSmallWindow(t *testing.T) {
	data := tinyPairs(t, 3)
	allocs := testing.AllocsPerRun(50, func() { _, _ = NewFile(bytes.NewReader(data), int64(len(data))) })
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		_, _ = NewFile(bytes.NewReader(data), int64(len(data)))
	}
	runtime.ReadMemStats(&after)
	perParse := float64(after.TotalAlloc-before.TotalAlloc) / 100
	t.Logf("%d-byte file: %.0f allocations, %.0f bytes per parse", len(data), allocs, perParse)
	assert.Less(t, perParse, float64(4*len(data)+4096))
}
