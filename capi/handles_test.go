package main

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLookup(t *testing.T) {
	_, err := lookup[*loadedModel](0, "model")
	assert.Equal(t, stInvalidArg, statusOf(err, stInternal))
	assert.EqualError(t, err, "model is NULL")

	h, err := newHandle(&session{})
	require.NoError(t, err)
	_, err = lookup[*loadedModel](h, "model")
	assert.Equal(t, stInvalidHandle, statusOf(err, stInternal))
	assert.Regexp(t, `^model 0x[0-9a-f]+ is an m40llm_session handle, not an m40llm_model$`, err.Error())
	s, err := lookup[*session](h, "session")
	require.NoError(t, err)
	assert.NotNil(t, s)

	deleteHandle(h)
	_, err = lookup[*session](h, "session")
	assert.Equal(t, stInvalidHandle, statusOf(err, stInternal))
	assert.Regexp(t, `^session 0x[0-9a-f]+ is not a live m40llm_session handle: the object it named was freed$`, err.Error())

	for _, v := range []uintptr{1, 2, 0x7777777, ^uintptr(0)} {
		_, err = lookupIn[*gpuContext](handles, v, "ctx")
		assert.Equal(t, stInvalidHandle, statusOf(err, stInternal))
		assert.Regexp(t, `^ctx 0x[0-9a-f]+ is not an m40llm_context handle: the library never returned this value$`, err.Error())
	}
}

// obj is a handleObject for table tests.
type obj struct{ n int }

func (*obj) cType() string { return "obj" }

func TestHandleTableReuse(t *testing.T) {
	tab := newHandleTable(0x5a5a5a, 8, 2)
	var hs []uintptr
	for i := range 3 {
		h, err := tab.add(&obj{i})
		require.NoError(t, err)
		hs = append(hs, h)
	}
	require.True(t, tab.remove(hs[0]))
	assert.False(t, tab.remove(hs[0]), "freed twice")
	require.True(t, tab.remove(hs[1]))
	assert.Equal(t, 1, tab.live())

	// Two free slots are kept, so the next object gets a new slot.
	h3, err := tab.add(&obj{3})
	require.NoError(t, err)
	assert.Equal(t, uintptr(3), h3&indexMask)
	require.True(t, tab.remove(hs[2]))
	// Three free: the oldest (slot 0) is reused, with a new generation.
	h4, err := tab.add(&obj{4})
	require.NoError(t, err)
	assert.Equal(t, uintptr(0), h4&indexMask)
	assert.NotEqual(t, hs[0], h4)
	assert.Equal(t, uintptr(1), h4>>indexBits&genMask)
	_, st := tab.get(hs[0])
	assert.Equal(t, handleFreed, st)
	o, st := tab.get(h4)
	assert.Equal(t, handleLive, st)
	assert.Equal(t, 4, o.(*obj).n)
	assert.Len(t, tab.slots, 4)
}

func TestHandleTableBounded(t *testing.T) {
	tab := newHandleTable(0x123, 4, 2)
	var hs []uintptr
	for i := range 4 {
		h, err := tab.add(&obj{i})
		require.NoError(t, err)
		hs = append(hs, h)
	}
	_, err := tab.add(&obj{4})
	assert.Equal(t, stOutOfMemory, statusOf(err, stInternal))
	assert.Contains(t, err.Error(), "4 objects")

	// Full: a freed slot is reused at once, whatever the quarantine.
	require.True(t, tab.remove(hs[2]))
	h, err := tab.add(&obj{5})
	require.NoError(t, err)
	assert.Equal(t, uintptr(2), h&indexMask)

	// Many objects made and freed: the table stays at its peak plus the
	// quarantine, and no handle repeats.
	tab = newHandleTable(0x321, maxHandles, 16)
	seen := map[uintptr]bool{}
	for i := range 10000 {
		h, err := tab.add(&obj{i})
		require.NoError(t, err)
		require.False(t, seen[h], "handle %#x repeated", h)
		seen[h] = true
		require.True(t, tab.remove(h))
	}
	assert.LessOrEqual(t, len(tab.slots), 17)
}

func TestHandleGenerationWraps(t *testing.T) {
	tab := newHandleTable(0x77, 1, 0)
	first, err := tab.add(&obj{})
	require.NoError(t, err)
	require.True(t, tab.remove(first))
	h, err := tab.add(&obj{})
	require.NoError(t, err)
	assert.Equal(t, first+1<<indexBits, h, "the next generation")

	// As after 2^genBits - 2 more reuses of the slot: the generation comes
	// back to the first one's.
	require.True(t, tab.remove(h))
	tab.slots[0].gen = genMask
	h, err = tab.add(&obj{})
	require.NoError(t, err)
	assert.Equal(t, uintptr(genMask), h>>indexBits&genMask)
	require.True(t, tab.remove(h))
	h, err = tab.add(&obj{})
	require.NoError(t, err)
	assert.Equal(t, first, h)
}

func TestHandlesAreNotForgeable(t *testing.T) {
	tab := newHandleTable(randomTag(), maxHandles, handleQuarantine)
	var live []uintptr
	for i := range 1000 {
		h, err := tab.add(&obj{i})
		require.NoError(t, err)
		live = append(live, h)
		assert.NotZero(t, h>>(ptrBits-1), "top bit of %#x", h)
	}
	for _, h := range live[:500] {
		require.True(t, tab.remove(h))
	}
	for v := uintptr(0); v < 1<<16; v++ {
		_, st := tab.get(v)
		require.Equal(t, handleForged, st, "%#x", v)
	}
	// Every handle one bit away from a real one, live or freed.
	for _, h := range live {
		for b := range ptrBits {
			v := h ^ uintptr(1)<<b
			_, st := tab.get(v)
			require.NotEqual(t, handleLive, st, "%#x is %#x with bit %d flipped", v, h, b)
		}
	}
	// Freed handles are freed, not live, even once their slots are reused.
	for i := range 600 {
		_, err := tab.add(&obj{i})
		require.NoError(t, err)
	}
	for _, h := range live[:500] {
		_, st := tab.get(h)
		require.Equal(t, handleFreed, st, "%#x", h)
	}
	n := 0
	for range 1 << 20 {
		if _, st := tab.get(uintptr(rand.Uint64())); st == handleLive {
			n++
		}
	}
	assert.Zero(t, n, "random values taken for handles")
}

func TestHandleTableConcurrent(t *testing.T) {
	tab := newHandleTable(randomTag(), maxHandles, 8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				o := &obj{g*10000 + i}
				h, err := tab.add(o)
				if !assert.NoError(t, err) {
					return
				}
				got, st := tab.get(h)
				assert.Equal(t, handleLive, st)
				assert.Same(t, o, got)
				assert.True(t, tab.remove(h))
				_, st = tab.get(h)
				assert.NotEqual(t, handleLive, st)
			}
		})
	}
	wg.Wait()
	assert.Zero(t, tab.live())
	assert.LessOrEqual(t, len(tab.slots), 16)
}
