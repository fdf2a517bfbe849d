package model

import (
	"fmt"
	"strings"

	"github.com/m40llm/m40llm/gguf"
)

// CacheType is the element type of one half (keys or values) of the KV
// cache, with llama.cpp's names and block layouts. The zero value is
// CacheF16, the default of every backend (as in llama.cpp).
//
// Layout of a cached row of n elements (one position of one layer, all KV
// heads side by side), little-endian:
//
//	f32:  n × float32
//	f16:  n × IEEE binary16
//	q8_0: n/32 blocks of {d fp16; qs [32]int8},        34 bytes, x = d·qs[i]
//	q4_0: n/32 blocks of {d fp16; qs [16]byte nibbles}, 18 bytes,
//	      x[i] = d·((qs[i] & 0xF) - 8), x[i+16] = d·((qs[i] >> 4) - 8)
//
// Blocks run along the head dimension, so the head dimension must be a
// multiple of the block size (CheckCacheType).
type CacheType uint8

// The cache types.
const (
	CacheF16 CacheType = iota
	CacheF32
	CacheQ8_0
	CacheQ4_0
)

// cacheTraits is the one table of cache types: name, block size, bytes per
// block and the GGUF type whose encoding the blocks share.
var cacheTraits = [...]struct {
	name       string
	block, typ int
	gguf       gguf.Type
}{
	CacheF32:  {"f32", 1, 4, gguf.TypeF32},
	CacheF16:  {"f16", 1, 2, gguf.TypeF16},
	CacheQ8_0: {"q8_0", 32, 34, gguf.TypeQ8_0},
	CacheQ4_0: {"q4_0", 32, 18, gguf.TypeQ4_0},
}

// cacheOrder is the order in which messages list the types.
var cacheOrder = []CacheType{CacheF32, CacheF16, CacheQ8_0, CacheQ4_0}

// CacheTypes returns every cache type, in the order messages list them.
func CacheTypes() []CacheType { return append([]CacheType(nil), cacheOrder...) }

// CacheTypeNames is the accepted values, comma-separated: "f32, f16, q8_0, q4_0".
func CacheTypeNames() string {
	names := make([]string, len(cacheOrder))
	for i, t := range cacheOrder {
		names[i] = t.String()
	}
	return strings.Join(names, ", ")
}

func (t CacheType) valid() bool { return int(t) < len(cacheTraits) }

// String returns llama.cpp's name of t ("q8_0"), or "cachetype(N)".
func (t CacheType) String() string {
	if !t.valid() {
		return fmt.Sprintf("cachetype(%d)", uint8(t))
	}
	return cacheTraits[t].name
}

// BlockSize is the number of elements one block holds (1 for f32/f16).
// It panics on a value that is not a type.
func (t CacheType) BlockSize() int { return cacheTraits[t].block }

// GGUFType is the tensor type whose encoding t's blocks share.
// It panics on a value that is not a type.
func (t CacheType) GGUFType() gguf.Type { return cacheTraits[t].gguf }

// RowBytes is the size of a cached row of n elements (a multiple of the
// block size). It panics on a value that is not a type.
func (t CacheType) RowBytes(n int) int64 {
	tr := cacheTraits[t]
	return int64(n/tr.block) * int64(tr.typ)
}

// cacheTypeError is the *OptionError of a cache type that cannot work;
// its message lists the accepted values.
func cacheTypeError(option, value, msg string) error {
	return &OptionError{Option: option, Msg: fmt.Sprintf("%s: %s (accepted values: %s)", value, msg, CacheTypeNames())}
}

// ParseCacheType returns the type of a llama.cpp name ("f16", "q8_0";
// case-insensitive). It fails with an *OptionError naming the accepted
// values.
func ParseCacheType(s string) (CacheType, error) {
	for _, t := range cacheOrder {
		if strings.EqualFold(s, t.String()) {
			return t, nil
		}
	}
	return 0, cacheTypeError("cache type", fmt.Sprintf("%q", s), "not a cache type")
}

// CacheTyper is implemented by backends that run cache types other than
// CacheF16. A backend without it runs only CacheF16, the safe default.
type CacheTyper interface {
	SupportsCacheType(t CacheType) bool
}

// CheckCacheType reports whether a backend be can keep option's half of
// the cache in type t for heads of headDim elements: t must be a type,
// be must run it (CacheTyper) and headDim must be a multiple of its
// block size, as llama.cpp asserts. It fails with an *OptionError that
// lists the accepted values.
func CheckCacheType(be Backend, option string, t CacheType, headDim int) error {
	if !t.valid() {
		return cacheTypeError(option, t.String(), "not a cache type")
	}
	ok := t == CacheF16
	if ct, is := be.(CacheTyper); is {
		ok = ct.SupportsCacheType(t)
	}
	if !ok {
		var runs []string
		for _, u := range cacheOrder {
			if ct, is := be.(CacheTyper); (is && ct.SupportsCacheType(u)) || (!is && u == CacheF16) {
				runs = append(runs, u.String())
			}
		}
		return cacheTypeError(option, t.String(), fmt.Sprintf("the %s backend supports %s caches only", be.Name(), strings.Join(runs, ", ")))
	}
	if b := t.BlockSize(); headDim%b != 0 {
		return cacheTypeError(option, t.String(), fmt.Sprintf("the model's head dimension %d is not a multiple of the type's %d-element blocks", headDim, b))
	}
	return nil
}
