package gguf

import "fmt"

// Type is a ggml tensor element type as stored in a GGUF tensor info
// (ggml's enum ggml_type). Numeric values are part of the file format.
type Type uint32

// The ggml tensor types. Gaps in the numbering (4, 5) are types ggml removed
// before GGUF existed; 31–33 and 36–38 are ARM/AVX repacked layouts that ggml
// briefly wrote to files and later dropped. They are listed so that such files
// can still be opened and inspected.
const (
	TypeF32       Type = 0
	TypeF16       Type = 1
	TypeQ4_0      Type = 2
	TypeQ4_1      Type = 3
	TypeQ5_0      Type = 6
	TypeQ5_1      Type = 7
	TypeQ8_0      Type = 8
	TypeQ8_1      Type = 9
	TypeQ2_K      Type = 10
	TypeQ3_K      Type = 11
	TypeQ4_K      Type = 12
	TypeQ5_K      Type = 13
	TypeQ6_K      Type = 14
	TypeQ8_K      Type = 15
	TypeIQ2_XXS   Type = 16
	TypeIQ2_XS    Type = 17
	TypeIQ3_XXS   Type = 18
	TypeIQ1_S     Type = 19
	TypeIQ4_NL    Type = 20
	TypeIQ3_S     Type = 21
	TypeIQ2_S     Type = 22
	TypeIQ4_XS    Type = 23
	TypeI8        Type = 24
	TypeI16       Type = 25
	TypeI32       Type = 26
	TypeI64       Type = 27
	TypeF64       Type = 28
	TypeIQ1_M     Type = 29
	TypeBF16      Type = 30
	TypeQ4_0_4_4  Type = 31
	TypeQ4_0_4_8  Type = 32
	TypeQ4_0_8_8  Type = 33
	TypeTQ1_0     Type = 34
	TypeTQ2_0     Type = 35
	TypeIQ4_NL4_4 Type = 36
	TypeIQ4_NL4_8 Type = 37
	TypeIQ4_NL8_8 Type = 38
	TypeMXFP4     Type = 39
)

// qk is the super-block size of the K-quant and most IQ types.
const qk = 256

// traits describes one ggml type: the single row of the type table.
type traits struct {
	name      string
	blockSize int // elements per block
	typeSize  int // bytes per block
	// dequant converts whole blocks: len(src) is a multiple of typeSize and
	// len(dst) == len(src)/typeSize*blockSize. nil when not implemented.
	dequant func(dst []float32, src []byte)
}

// typeTable is indexed by Type. A zero row (blockSize 0) is an unknown type.
var typeTable = [...]traits{
	TypeF32:       {"F32", 1, 4, dequantF32},
	TypeF16:       {"F16", 1, 2, dequantF16},
	TypeQ4_0:      {"Q4_0", 32, 18, dequantQ4_0},
	TypeQ4_1:      {"Q4_1", 32, 20, dequantQ4_1},
	TypeQ5_0:      {"Q5_0", 32, 22, dequantQ5_0},
	TypeQ5_1:      {"Q5_1", 32, 24, dequantQ5_1},
	TypeQ8_0:      {"Q8_0", 32, 34, dequantQ8_0},
	TypeQ8_1:      {"Q8_1", 32, 36, nil},
	TypeQ2_K:      {"Q2_K", qk, 84, dequantQ2K},
	TypeQ3_K:      {"Q3_K", qk, 110, dequantQ3K},
	TypeQ4_K:      {"Q4_K", qk, 144, dequantQ4K},
	TypeQ5_K:      {"Q5_K", qk, 176, dequantQ5K},
	TypeQ6_K:      {"Q6_K", qk, 210, dequantQ6K},
	TypeQ8_K:      {"Q8_K", qk, 292, dequantQ8K},
	TypeIQ2_XXS:   {"IQ2_XXS", qk, 66, nil},
	TypeIQ2_XS:    {"IQ2_XS", qk, 74, nil},
	TypeIQ3_XXS:   {"IQ3_XXS", qk, 98, nil},
	TypeIQ1_S:     {"IQ1_S", qk, 50, nil},
	TypeIQ4_NL:    {"IQ4_NL", 32, 18, dequantIQ4NL},
	TypeIQ3_S:     {"IQ3_S", qk, 110, nil},
	TypeIQ2_S:     {"IQ2_S", qk, 82, nil},
	TypeIQ4_XS:    {"IQ4_XS", qk, 136, nil},
	TypeI8:        {"I8", 1, 1, nil},
	TypeI16:       {"I16", 1, 2, nil},
	TypeI32:       {"I32", 1, 4, nil},
	TypeI64:       {"I64", 1, 8, nil},
	TypeF64:       {"F64", 1, 8, nil},
	TypeIQ1_M:     {"IQ1_M", qk, 56, nil},
	TypeBF16:      {"BF16", 1, 2, dequantBF16},
	TypeQ4_0_4_4:  {"Q4_0_4_4", 32, 18, nil},
	TypeQ4_0_4_8:  {"Q4_0_4_8", 32, 18, nil},
	TypeQ4_0_8_8:  {"Q4_0_8_8", 32, 18, nil},
	TypeTQ1_0:     {"TQ1_0", qk, 54, nil},
	TypeTQ2_0:     {"TQ2_0", qk, 66, nil},
	TypeIQ4_NL4_4: {"IQ4_NL_4_4", 32, 18, nil},
	TypeIQ4_NL4_8: {"IQ4_NL_4_8", 32, 18, nil},
	TypeIQ4_NL8_8: {"IQ4_NL_8_8", 32, 18, nil},
	TypeMXFP4:     {"MXFP4", 32, 17, dequantMXFP4},
}

func (t Type) traits() (traits, bool) {
	if int(t) >= len(typeTable) || typeTable[t].blockSize == 0 {
		return traits{}, false
	}
	return typeTable[t], true
}

// Known reports whether t is a type this package knows the layout of.
func (t Type) Known() bool {
	_, ok := t.traits()
	return ok
}

// String returns ggml's name for the type ("F16", "Q4_K", ...), or
// "type(N)" for an unknown id.
func (t Type) String() string {
	if tr, ok := t.traits(); ok {
		return tr.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// BlockSize returns the number of elements in one block of t
// (1 for plain scalar types), or 0 for an unknown type.
func (t Type) BlockSize() int {
	tr, _ := t.traits()
	return tr.blockSize
}

// TypeSize returns the number of bytes in one block of t, or 0 for an
// unknown type.
func (t Type) TypeSize() int {
	tr, _ := t.traits()
	return tr.typeSize
}

// CanDequantize reports whether Dequantize supports t.
func (t Type) CanDequantize() bool {
	tr, ok := t.traits()
	return ok && tr.dequant != nil
}

// Quantized reports whether t packs several elements per block.
func (t Type) Quantized() bool {
	return t.BlockSize() > 1
}

// ParseType returns the type whose ggml name is s (case-sensitive, as
// String prints it).
func ParseType(s string) (Type, bool) {
	for i, tr := range typeTable {
		if tr.blockSize != 0 && tr.name == s {
			return Type(i), true
		}
	}
	return 0, false
}

// Types returns every known type in id order.
func Types() []Type {
	var ts []Type
	for i, tr := range typeTable {
		if tr.blockSize != 0 {
			ts = append(ts, Type(i))
		}
	}
	return ts
}

// RowSize returns the number of bytes that n elements of type t occupy.
// n must be a multiple of the block size; ok is false otherwise or for an
// unknown type.
func (t Type) RowSize(n int64) (size int64, ok bool) {
	tr, known := t.traits()
	if !known || n < 0 || n%int64(tr.blockSize) != 0 {
		return 0, false
	}
	blocks := n / int64(tr.blockSize)
	if blocks > (1<<62)/int64(tr.typeSize) {
		return 0, false
	}
	return blocks * int64(tr.typeSize), true
}
