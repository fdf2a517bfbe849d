package cpu

import "encoding/binary"

// The 32-element block types Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL share one
// rule: the block holds a f16 scale d, for Q4_1 and Q5_1 a f16 offset m
// right after it, for Q5_0 and Q5_1 a little-endian uint32 qh of fifth bits,
// and 16 bytes qs of nibbles. Element j (0..15) has the low nibble of qs[j],
// element j+16 the high nibble, and element i the fifth bit (qh >> i) & 1:
//
//	c = nibble | fifth bit << 4                (0..15 or 0..31)
//	q = c − offset, or iq4nlLevels[c] (IQ4_NL)
//	w = d·q (+ m)
//
// The block's sum is d·dx·Σ q·qx (+ m·s, s = dx·Σ qx from qvec).

// q32Layout places the fields of a 32-element block type (rule above).
type q32Layout struct {
	size   int   // bytes per block
	min    bool  // f16 m at byte 2
	qh     int   // byte offset of qh, 0 when the type has no fifth bits
	qs     int   // byte offset of the 16 nibble bytes
	offset int32 // subtracted from the code
	table  bool  // the code indexes iq4nlLevels
}

var (
	q4_0Layout  = q32Layout{size: 18, qs: 2, offset: 8}
	q4_1Layout  = q32Layout{size: 20, min: true, qs: 4}
	q5_0Layout  = q32Layout{size: 22, qh: 2, qs: 6, offset: 16}
	q5_1Layout  = q32Layout{size: 24, min: true, qh: 4, qs: 8}
	iq4nlLayout = q32Layout{size: 18, qs: 2, table: true}
)

// iq4nlLevels are the 16 non-linear levels of IQ4_NL (ggml's
// kvalues_iq4nl); the assembly has the same table (iq4nl<> in
// qdot_amd64.s).
var iq4nlLevels = [16]int32{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// qdot32Go returns row · x for a row of 32-element blocks laid out as l.
// The three loops are the rule's cases (levels, fifth bits, plain
// nibbles), split so that the loop bodies have no branches.
func qdot32Go(l *q32Layout, row []byte, x qvec) float32 {
	var sum, msum float32
	off := l.offset
	for b, dx := range x.d {
		blk := row[b*l.size : (b+1)*l.size : (b+1)*l.size]
		qs := blk[l.qs : l.qs+16 : l.qs+16]
		xs := x.qs[b*32 : b*32+32 : b*32+32]
		var isum int32
		switch {
		case l.table:
			for j, c := range qs {
				isum += iq4nlLevels[c&15]*int32(xs[j]) + iq4nlLevels[c>>4]*int32(xs[j+16])
			}
		case l.qh != 0:
			qh := binary.LittleEndian.Uint32(blk[l.qh:])
			for j, c := range qs {
				lo := int32(c&15) | int32(qh>>j&1)<<4
				hi := int32(c>>4) | int32(qh>>(j+16)&1)<<4
				isum += (lo-off)*int32(xs[j]) + (hi-off)*int32(xs[j+16])
			}
		default:
			for j, c := range qs {
				isum += (int32(c&15)-off)*int32(xs[j]) + (int32(c>>4)-off)*int32(xs[j+16])
			}
		}
		sum += f16At(blk) * dx * float32(isum)
		if l.min {
			msum += f16At(blk[2:]) * x.s[b]
		}
	}
	return sum + msum
}
