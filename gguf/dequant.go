package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Dequantize converts the bytes of len(dst) elements of type t, stored as
// in a GGUF tensor, to float32. len(dst) must be a multiple of t's block
// size and src must hold exactly the matching number of blocks.
func Dequantize(dst []float32, src []byte, t Type) error {
	tr, ok := t.traits()
	if !ok {
		return fmt.Errorf("gguf: cannot dequantize unknown type %s", t)
	}
	if tr.dequant == nil {
		return fmt.Errorf("gguf: dequantization of %s is not supported", t)
	}
	if len(dst)%tr.blockSize != 0 {
		return fmt.Errorf("gguf: %d %s elements is not a whole number of %d-element blocks", len(dst), t, tr.blockSize)
	}
	if want := len(dst) / tr.blockSize * tr.typeSize; len(src) != want {
		return fmt.Errorf("gguf: %d %s elements need %d bytes, got %d", len(dst), t, want, len(src))
	}
	tr.dequant(dst, src)
	return nil
}

// DequantizeF16 converts like Dequantize but to IEEE binary16 bit patterns
// (round to nearest even), the storage format of GPU weights.
func DequantizeF16(dst []uint16, src []byte, t Type) error {
	if t == TypeF16 {
		if len(src) != 2*len(dst) {
			return fmt.Errorf("gguf: %d F16 elements need %d bytes, got %d", len(dst), 2*len(dst), len(src))
		}
		for i := range dst {
			dst[i] = binary.LittleEndian.Uint16(src[2*i:])
		}
		return nil
	}
	const chunk = 4096 // a multiple of every block size
	var buf [chunk]float32
	bs := t.BlockSize()
	ts := t.TypeSize()
	if bs == 0 {
		return Dequantize(nil, nil, t) // reports the unknown type
	}
	if len(dst)%bs != 0 {
		return fmt.Errorf("gguf: %d %s elements is not a whole number of %d-element blocks", len(dst), t, bs)
	}
	for start := 0; start < len(dst); start += chunk {
		n := min(chunk, len(dst)-start)
		b0, b1 := start/bs*ts, (start+n)/bs*ts
		if b1 > len(src) {
			return fmt.Errorf("gguf: %d %s elements need %d bytes, got %d", len(dst), t, len(dst)/bs*ts, len(src))
		}
		if err := Dequantize(buf[:n], src[b0:b1], t); err != nil {
			return err
		}
		for i, f := range buf[:n] {
			dst[start+i] = F32ToF16(f)
		}
	}
	if len(dst)/bs*ts != len(src) {
		return fmt.Errorf("gguf: %d %s elements need %d bytes, got %d", len(dst), t, len(dst)/bs*ts, len(src))
	}
	return nil
}

func dequantF32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func dequantF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func dequantBF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// dequantQ8_0: block_q8_0 = { f16 d; int8 qs[32] }, x[i] = d * qs[i].
func dequantQ8_0(dst []float32, src []byte) {
	for b := 0; b < len(dst)/32; b++ {
		blk := src[b*34 : b*34+34]
		d := F16ToF32(binary.LittleEndian.Uint16(blk))
		for i := 0; i < 32; i++ {
			dst[b*32+i] = d * float32(int8(blk[2+i]))
		}
	}
}
