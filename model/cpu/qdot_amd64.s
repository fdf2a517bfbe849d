#include "textflag.h"

// Integer dot products of quantized weight rows with 8-bit activations
// (layouts in qdot.go). Signed 8-bit products go through VPMADDUBSW, which
// multiplies unsigned by signed bytes: the sign of the weight is moved onto
// the activation with VPSIGNB (|w|·(x·sign w) = w·x), the pairs of 16-bit
// products are summed to 32 bits by VPMADDWD, and the eight lanes of each
// block are converted to float and scaled. No product saturates: |w| ≤ 128
// and |x| ≤ 127, so a pair is at most 2·128·127 = 32512 < 2^15.

// Constants built in registers: Y15 = 0x0f bytes, Y13 = 1 in every 16-bit
// lane, Y14 = 8 bytes (Q4_0), Y12 = 0x03 bytes and Y11 = 32 bytes (Q6_K).
#define MASK0F \
	MOVQ $0x0f0f0f0f0f0f0f0f, AX; \
	VMOVQ AX, X15; \
	VPBROADCASTQ X15, Y15

#define ONES16 \
	VPCMPEQW Y13, Y13, Y13; \
	VPSRLW $15, Y13, Y13

// Macros of qdot4Q4_KAVX2, defined before the functions because go vet
// takes stack offsets in a macro for the function above it. Stack: 0(SP)
// holds d·sc[j]·dx[j] of row t at 32t+4j, 128(SP) the 0x0f mask, 160(SP)
// 1 in every 16-bit lane.

// Q4_K_SUB: acc += d·sc·dx · Σ q·x over one sub-block of one row.
#define Q4_K_SUB(wreg, xaddr, foff, acc) \
	VPMADDUBSW xaddr, wreg, Y14; \
	VPMADDWD 160(SP), Y14, Y14; \
	VCVTDQ2PS Y14, Y14; \
	VBROADCASTSS foff(SP), Y15; \
	VFMADD231PS Y15, Y14, acc

// Q4_K_J: sub-block j (quants in wreg, activations at xoff in every row)
// for the four rows, four independent chains.
#define Q4_K_J(wreg, xoff, f0, f1, f2, f3) \
	Q4_K_SUB(wreg, xoff(DI), f0, Y0); \
	Q4_K_SUB(wreg, xoff(DI)(R9*1), f1, Y1); \
	Q4_K_SUB(wreg, xoff(DI)(R9*2), f2, Y2); \
	Q4_K_SUB(wreg, xoff(DI)(R13*1), f3, Y3)

// Q4_K_ROW: the factors of one row (scales at R12, sums at R12+BX) to
// foff(SP), its min term subtracted lane-wise (lanes are summed at the
// end).
#define Q4_K_ROW(foff, acc) \
	VMULPS (R12), Y4, Y14; \
	VMOVUPS Y14, foff(SP); \
	VMULPS (R12)(BX*1), Y5, Y14; \
	VSUBPS Y14, acc, acc; \
	ADDQ R10, R12

// Q4_K_UNPACK: chunk c of qs (at qoff(SI)) into lo (low nibbles) and hi.
#define Q4_K_UNPACK(qoff, lo, hi) \
	VMOVDQU qoff(SI), lo; \
	VPSRLW $4, lo, hi; \
	VPAND 128(SP), lo, lo; \
	VPAND 128(SP), hi, hi

// REDUCE sums the eight lanes of Y0 into X0.
#define REDUCE \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VHADDPS X0, X0, X0; \
	VHADDPS X0, X0, X0

// Q8DOT: Y4 = eight int32 partial sums of Σ w·x over 32 bytes, w in Y2
// (signed), x in Y3 (signed; clobbered).
#define Q8DOT \
	VPSIGNB Y2, Y2, Y4; \
	VPSIGNB Y2, Y3, Y3; \
	VPMADDUBSW Y3, Y4, Y4; \
	VPMADDWD Y13, Y4, Y4

// SCALE_FMA: acc += float(Y4) · f16(woff(SI)) · xd[doff]
#define SCALE_FMA(woff, doff, acc) \
	VCVTDQ2PS Y4, Y4; \
	VPBROADCASTW woff(SI), X5; \
	VCVTPH2PS X5, Y5; \
	VBROADCASTSS doff(R8), Y6; \
	VMULPS Y6, Y5, Y5; \
	VFMADD231PS Y5, Y4, acc

// NIB32: yd = the 32 nibbles of the 16 bytes at qoff(SI) in element order
// (element j in the low nibble of byte j, j+16 in its high nibble), as
// bytes 0..15; xd is the low half of yd (Y15 = 0x0f bytes; xt clobbered).
#define NIB32(qoff, yd, xd, xt) \
	VMOVDQU qoff(SI), xd; \
	VPSRLW $4, xd, xt; \
	VINSERTI128 $1, xt, yd, yd; \
	VPAND Y15, yd, yd

// Q4_0 block at woff(SI): {f16 d; uint8 qs[16]}: Y2 = the 32 quants minus
// 8, as int8.
#define Q4_0_BLOCK(woff, xoff, doff, acc) \
	NIB32(woff+2, Y2, X2, X3); \
	VPSUBB Y14, Y2, Y2; \
	VMOVDQU xoff(DI), Y3; \
	Q8DOT; \
	SCALE_FMA(woff, doff, acc)

// func qdotQ4_0AVX2(w *byte, xq *int8, xd *float32, nblocks int) float32
TEXT ·qdotQ4_0AVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ nblocks+24(FP), CX
	MASK0F
	ONES16
	MOVQ $0x0808080808080808, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q4_0loop2:
	CMPQ CX, $2
	JL   q4_0loop1
	Q4_0_BLOCK(0, 0, 0, Y0)
	Q4_0_BLOCK(18, 32, 4, Y1)
	ADDQ $36, SI
	ADDQ $64, DI
	ADDQ $8, R8
	SUBQ $2, CX
	JMP  q4_0loop2

q4_0loop1:
	CMPQ CX, $1
	JL   q4_0done
	Q4_0_BLOCK(0, 0, 0, Y0)

q4_0done:
	VADDPS Y1, Y0, Y0
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func qdotRowsQ4_0AVX2(w *byte, xq *int8, xd *float32, nblocks, rows int, out *float32)
// out[r] = qdotQ4_0AVX2 of row r (rows of nblocks blocks, one after the
// other from w) with the same activations, the same bits: one call for a
// worker's range of rows (decode).
TEXT ·qdotRowsQ4_0AVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), R9
	MOVQ xd+16(FP), R10
	MOVQ nblocks+24(FP), R11
	MOVQ rows+32(FP), BX
	MOVQ out+40(FP), DX
	MASK0F
	ONES16
	MOVQ $0x0808080808080808, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14

q4_0rrow:
	TESTQ BX, BX
	JLE   q4_0rdone
	MOVQ  R9, DI
	MOVQ  R10, R8
	MOVQ  R11, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q4_0rloop2:
	CMPQ CX, $2
	JL   q4_0rloop1
	Q4_0_BLOCK(0, 0, 0, Y0)
	Q4_0_BLOCK(18, 32, 4, Y1)
	ADDQ $36, SI
	ADDQ $64, DI
	ADDQ $8, R8
	SUBQ $2, CX
	JMP  q4_0rloop2

q4_0rloop1:
	CMPQ CX, $1
	JL   q4_0rsum
	Q4_0_BLOCK(0, 0, 0, Y0)
	ADDQ $18, SI

q4_0rsum:
	VADDPS Y1, Y0, Y0
	REDUCE
	MOVSS X0, (DX)
	ADDQ  $4, DX
	DECQ  BX
	JMP   q4_0rrow

q4_0rdone:
	VZEROUPPER
	RET

// Q8_0 block at woff(SI): {f16 d; int8 qs[32]}.
#define Q8_0_BLOCK(woff, xoff, doff, acc) \
	VMOVDQU woff+2(SI), Y2; \
	VMOVDQU xoff(DI), Y3; \
	Q8DOT; \
	SCALE_FMA(woff, doff, acc)

// func qdotQ8_0AVX2(w *byte, xq *int8, xd *float32, nblocks int) float32
TEXT ·qdotQ8_0AVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ nblocks+24(FP), CX
	ONES16
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q8_0loop2:
	CMPQ CX, $2
	JL   q8_0loop1
	Q8_0_BLOCK(0, 0, 0, Y0)
	Q8_0_BLOCK(34, 32, 4, Y1)
	ADDQ $68, SI
	ADDQ $64, DI
	ADDQ $8, R8
	SUBQ $2, CX
	JMP  q8_0loop2

q8_0loop1:
	CMPQ CX, $1
	JL   q8_0done
	Q8_0_BLOCK(0, 0, 0, Y0)

q8_0done:
	VADDPS Y1, Y0, Y0
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func qdotRowsQ8_0AVX2(w *byte, xq *int8, xd *float32, nblocks, rows int, out *float32)
// qdotQ8_0AVX2 over consecutive rows (see qdotRowsQ4_0AVX2), the same bits.
TEXT ·qdotRowsQ8_0AVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), R9
	MOVQ xd+16(FP), R10
	MOVQ nblocks+24(FP), R11
	MOVQ rows+32(FP), BX
	MOVQ out+40(FP), DX
	ONES16

q8_0rrow:
	TESTQ BX, BX
	JLE   q8_0rdone
	MOVQ  R9, DI
	MOVQ  R10, R8
	MOVQ  R11, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q8_0rloop2:
	CMPQ CX, $2
	JL   q8_0rloop1
	Q8_0_BLOCK(0, 0, 0, Y0)
	Q8_0_BLOCK(34, 32, 4, Y1)
	ADDQ $68, SI
	ADDQ $64, DI
	ADDQ $8, R8
	SUBQ $2, CX
	JMP  q8_0rloop2

q8_0rloop1:
	CMPQ CX, $1
	JL   q8_0rsum
	Q8_0_BLOCK(0, 0, 0, Y0)
	ADDQ $34, SI

q8_0rsum:
	VADDPS Y1, Y0, Y0
	REDUCE
	MOVSS X0, (DX)
	ADDQ  $4, DX
	DECQ  BX
	JMP   q8_0rrow

q8_0rdone:
	VZEROUPPER
	RET

// Q4_K chunk c of a super-block: qs[32c:32c+32] at qoff(SI) holds
// sub-block 2c in its low nibbles and 2c+1 in its high nibbles (activation
// blocks at xoff(DI) and xoff+32(DI)); the quants 0..15 are the unsigned
// operand of VPMADDUBSW as they are. foff(SP) holds d·sc[2c]·dx[2c] and
// foff+4(SP) the same for 2c+1.
#define Q4_K_CHUNK(qoff, xoff, xoff2, foff, foff2) \
	K4_NIBS(qoff); \
	K4_DOT(xoff, xoff2, foff, foff2)

// K4_NIBS: Y6 = the low nibbles of the 32 bytes at qoff(SI), Y7 the high.
#define K4_NIBS(qoff) \
	VMOVDQU qoff(SI), Y6; \
	VPSRLW $4, Y6, Y7; \
	VPAND Y15, Y6, Y6; \
	VPAND Y15, Y7, Y7

// K4_DOT: Y0 += d·sc·dx · Σ Y6·x over the block at xoff(DI), Y10 the same
// for Y7 and the block at xoff2(DI) (quants unsigned).
#define K4_DOT(xoff, xoff2, foff, foff2) \
	VPMADDUBSW xoff(DI), Y6, Y6; \
	VPMADDWD Y13, Y6, Y6; \
	VCVTDQ2PS Y6, Y6; \
	VBROADCASTSS foff(SP), Y8; \
	VFMADD231PS Y8, Y6, Y0; \
	VPMADDUBSW xoff2(DI), Y7, Y7; \
	VPMADDWD Y13, Y7, Y7; \
	VCVTDQ2PS Y7, Y7; \
	VBROADCASTSS foff2(SP), Y9; \
	VFMADD231PS Y9, Y7, Y10

// K4_SCALES: for the Q4_K/Q5_K super-block at SI, d·sc[j]·dx[j] to
// 0(SP)..28(SP) and Y1 += dmin·m[j]·s[j] (scales and mins unpacked on
// 32-bit words as scalesMinsK4; AX, BX, DX, R10..R13, Y2..Y5 clobbered).
#define K4_SCALES \
	MOVL 4(SI), AX; \
	MOVL 8(SI), BX; \
	MOVL 12(SI), DX; \
	MOVL AX, R10; \
	ANDL $0x3f3f3f3f, R10; \
	MOVL DX, R11; \
	ANDL $0x0f0f0f0f, R11; \
	MOVL AX, R12; \
	SHRL $6, R12; \
	ANDL $0x03030303, R12; \
	SHLL $4, R12; \
	ORL  R12, R11; \
	SHLQ $32, R11; \
	ORQ  R11, R10; \
	MOVL BX, R11; \
	ANDL $0x3f3f3f3f, R11; \
	MOVL DX, R12; \
	SHRL $4, R12; \
	ANDL $0x0f0f0f0f, R12; \
	MOVL BX, R13; \
	SHRL $6, R13; \
	ANDL $0x03030303, R13; \
	SHLL $4, R13; \
	ORL  R13, R12; \
	SHLQ $32, R12; \
	ORQ  R12, R11; \
	VMOVQ R10, X2; \
	VPMOVZXBD X2, Y2; \
	VCVTDQ2PS Y2, Y2; \
	VMOVQ R11, X3; \
	VPMOVZXBD X3, Y3; \
	VCVTDQ2PS Y3, Y3; \
	VPBROADCASTW 0(SI), X4; \
	VCVTPH2PS X4, Y4; \
	VPBROADCASTW 2(SI), X5; \
	VCVTPH2PS X5, Y5; \
	VMULPS (R8), Y2, Y2; \
	VMULPS Y4, Y2, Y2; \
	VMOVUPS Y2, 0(SP); \
	VMULPS (R9), Y3, Y3; \
	VFMADD231PS Y5, Y3, Y1

// func qdotQ4_KAVX2(w *byte, xq *int8, xd, xs *float32, nsuper int) float32
// Per super-block {f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]}: the
// eight 6-bit scales and mins are unpacked on 32-bit words (scalesMinsK4),
// d·sc[j]·dx[j] goes to the stack for broadcasting, and dmin·m[j]·s[j] is
// accumulated in Y1 and subtracted at the end.
TEXT ·qdotQ4_KAVX2(SB), NOSPLIT, $32-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), R9
	MOVQ nsuper+32(FP), CX
	MASK0F
	ONES16
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y10, Y10, Y10

q4_kloop:
	TESTQ CX, CX
	JLE   q4_kdone
	K4_SCALES
	Q4_K_CHUNK(16, 0, 32, 0, 4)
	Q4_K_CHUNK(48, 64, 96, 8, 12)
	Q4_K_CHUNK(80, 128, 160, 16, 20)
	Q4_K_CHUNK(112, 192, 224, 24, 28)
	ADDQ $144, SI
	ADDQ $256, DI
	ADDQ $32, R8
	ADDQ $32, R9
	DECQ CX
	JMP  q4_kloop

q4_kdone:
	VADDPS Y10, Y0, Y0
	VSUBPS Y1, Y0, Y0
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// func qdotRowsQ4_KAVX2(w *byte, xq *int8, xd, xs *float32, nsuper, rows int, out *float32)
// qdotQ4_KAVX2 over consecutive rows (see qdotRowsQ4_0AVX2), the same bits.
// The row's bases, count and output pointer wait at 32(SP)..72(SP): the
// super-block code takes every free register.
TEXT ·qdotRowsQ4_KAVX2(SB), NOSPLIT, $80-56
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), AX
	MOVQ AX, 32(SP)
	MOVQ xd+16(FP), AX
	MOVQ AX, 40(SP)
	MOVQ xs+24(FP), AX
	MOVQ AX, 48(SP)
	MOVQ nsuper+32(FP), AX
	MOVQ AX, 56(SP)
	MOVQ rows+40(FP), AX
	MOVQ AX, 64(SP)
	MOVQ out+48(FP), AX
	MOVQ AX, 72(SP)
	MASK0F
	ONES16

q4_krrow:
	CMPQ 64(SP), $0
	JLE  q4_krdone
	MOVQ 32(SP), DI
	MOVQ 40(SP), R8
	MOVQ 48(SP), R9
	MOVQ 56(SP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y10, Y10, Y10

q4_krloop:
	TESTQ CX, CX
	JLE   q4_krsum
	K4_SCALES
	Q4_K_CHUNK(16, 0, 32, 0, 4)
	Q4_K_CHUNK(48, 64, 96, 8, 12)
	Q4_K_CHUNK(80, 128, 160, 16, 20)
	Q4_K_CHUNK(112, 192, 224, 24, 28)
	ADDQ $144, SI
	ADDQ $256, DI
	ADDQ $32, R8
	ADDQ $32, R9
	DECQ CX
	JMP  q4_krloop

q4_krsum:
	VADDPS Y10, Y0, Y0
	VSUBPS Y1, Y0, Y0
	REDUCE
	MOVQ  72(SP), AX
	MOVSS X0, (AX)
	ADDQ  $4, 72(SP)
	DECQ  64(SP)
	JMP   q4_krrow

q4_krdone:
	VZEROUPPER
	RET

// Q6_K_DOT: acc += Σ over one activation block of scale·(q−32)·x, q in Y6
// as bytes 0..63 (clobbered), activations at xoff(DI). The two 16-element
// sub-blocks of the block take their int16 scales from soff(SP) and
// soff2(SP) (low and high 128-bit halves of the VPMADDWD operand); foff(SP)
// holds d·dx of the block.
#define Q6_K_DOT(xoff, soff, soff2, foff, acc) \
	VPSUBB Y11, Y6, Y6; \
	K16_DOT(xoff, soff, soff2, foff, acc)

// PAIR16: Y8 = the int16 at soff(SP) in every lane of the low 128-bit
// half and the one at soff2(SP) in the high half (X9 clobbered).
#define PAIR16(soff, soff2) \
	PAIR16TO(soff, soff2, Y8, X8, X9)

// PAIR16TO: PAIR16 into yd (xd its low half; xt clobbered).
#define PAIR16TO(soff, soff2, yd, xd, xt) \
	VPBROADCASTW soff(SP), xd; \
	VPBROADCASTW soff2(SP), xt; \
	VINSERTI128 $1, xt, yd, yd

// K16_DOT (Q2_K, Q3_K, Q6_K): acc += d·dx · Σ_k scale[k]·Σ q·x over one
// activation block, q in Y6 as int8 (clobbered, |q| ≤ 128), activations
// at xoff(DI), the int16 scales of its two 16-element sub-blocks at
// soff(SP) and soff2(SP), d·dx at foff(SP).
#define K16_DOT(xoff, soff, soff2, foff, acc) \
	VMOVDQU xoff(DI), Y7; \
	VPSIGNB Y6, Y7, Y7; \
	VPSIGNB Y6, Y6, Y6; \
	VPMADDUBSW Y7, Y6, Y6; \
	PAIR16(soff, soff2); \
	VPMADDWD Y8, Y6, Y6; \
	VCVTDQ2PS Y6, Y6; \
	VBROADCASTSS foff(SP), Y9; \
	VFMADD231PS Y9, Y6, acc

// Q6_K_HALF: the 128 elements of half h: ql[64h:64h+64] at qloff(SI),
// qh[32h:32h+32] at qhoff(SI); blocks 4h..4h+3 of the super-block.
#define Q6_K_HALF(qloff, qloff2, qhoff, x0, x1, x2, x3, s0, s1, s2, s3, s4, s5, s6, s7, f0, f1, f2, f3) \
	VMOVDQU qloff(SI), Y3; \
	VMOVDQU qloff2(SI), Y4; \
	VMOVDQU qhoff(SI), Y5; \
	VPAND Y15, Y3, Y6; \
	VPAND Y12, Y5, Y7; \
	VPSLLW $4, Y7, Y7; \
	VPOR Y7, Y6, Y6; \
	Q6_K_DOT(x0, s0, s1, f0, Y0); \
	VPAND Y15, Y4, Y6; \
	VPSRLW $2, Y5, Y7; \
	VPAND Y12, Y7, Y7; \
	VPSLLW $4, Y7, Y7; \
	VPOR Y7, Y6, Y6; \
	Q6_K_DOT(x1, s2, s3, f1, Y1); \
	VPSRLW $4, Y3, Y6; \
	VPAND Y15, Y6, Y6; \
	VPSRLW $4, Y5, Y7; \
	VPAND Y12, Y7, Y7; \
	VPSLLW $4, Y7, Y7; \
	VPOR Y7, Y6, Y6; \
	Q6_K_DOT(x2, s4, s5, f2, Y0); \
	VPSRLW $4, Y4, Y6; \
	VPAND Y15, Y6, Y6; \
	VPSRLW $6, Y5, Y7; \
	VPAND Y12, Y7, Y7; \
	VPSLLW $4, Y7, Y7; \
	VPOR Y7, Y6, Y6; \
	Q6_K_DOT(x3, s6, s7, f3, Y1)

// func qdotQ6_KAVX2(w *byte, xq *int8, xd *float32, nsuper int) float32
// Per super-block {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d}:
// d·dx[b] for the eight activation blocks goes to 0(SP), the sixteen
// scales widened to int16 to 32(SP).
TEXT ·qdotQ6_KAVX2(SB), NOSPLIT, $64-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ nsuper+24(FP), CX
	MASK0F
	MOVQ $0x0303030303030303, AX
	VMOVQ AX, X12
	VPBROADCASTQ X12, Y12
	MOVQ $0x2020202020202020, AX
	VMOVQ AX, X11
	VPBROADCASTQ X11, Y11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q6_kloop:
	TESTQ CX, CX
	JLE   q6_kdone
	VPBROADCASTW 208(SI), X2
	VCVTPH2PS X2, Y2
	VMULPS (R8), Y2, Y2
	VMOVUPS Y2, 0(SP)
	VPMOVSXBW 192(SI), Y2
	VMOVDQU Y2, 32(SP)
	Q6_K_HALF(0, 32, 128, 0, 32, 64, 96, 32, 34, 36, 38, 40, 42, 44, 46, 0, 4, 8, 12)
	Q6_K_HALF(64, 96, 160, 128, 160, 192, 224, 48, 50, 52, 54, 56, 58, 60, 62, 16, 20, 24, 28)
	ADDQ $210, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q6_kloop

q6_kdone:
	VADDPS Y1, Y0, Y0
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func qdotRowsQ6_KAVX2(w *byte, xq *int8, xd *float32, nsuper, rows int, out *float32)
// qdotQ6_KAVX2 over consecutive rows (see qdotRowsQ4_0AVX2), the same bits.
TEXT ·qdotRowsQ6_KAVX2(SB), NOSPLIT, $64-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), R9
	MOVQ xd+16(FP), R10
	MOVQ nsuper+24(FP), R11
	MOVQ rows+32(FP), BX
	MOVQ out+40(FP), DX
	MASK0F
	MOVQ $0x0303030303030303, AX
	VMOVQ AX, X12
	VPBROADCASTQ X12, Y12
	MOVQ $0x2020202020202020, AX
	VMOVQ AX, X11
	VPBROADCASTQ X11, Y11

q6_krrow:
	TESTQ BX, BX
	JLE   q6_krdone
	MOVQ  R9, DI
	MOVQ  R10, R8
	MOVQ  R11, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q6_krloop:
	TESTQ CX, CX
	JLE   q6_krsum
	VPBROADCASTW 208(SI), X2
	VCVTPH2PS X2, Y2
	VMULPS (R8), Y2, Y2
	VMOVUPS Y2, 0(SP)
	VPMOVSXBW 192(SI), Y2
	VMOVDQU Y2, 32(SP)
	Q6_K_HALF(0, 32, 128, 0, 32, 64, 96, 32, 34, 36, 38, 40, 42, 44, 46, 0, 4, 8, 12)
	Q6_K_HALF(64, 96, 160, 128, 160, 192, 224, 48, 50, 52, 54, 56, 58, 60, 62, 16, 20, 24, 28)
	ADDQ $210, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q6_krloop

q6_krsum:
	VADDPS Y1, Y0, Y0
	REDUCE
	MOVSS X0, (DX)
	ADDQ  $4, DX
	DECQ  BX
	JMP   q6_krrow

q6_krdone:
	VZEROUPPER
	RET

// Four activation rows at once (qdot4): the weight block is decoded once
// into Y4 (signed quants) and Y5 (their magnitudes), its f16 scale into
// Y6, and each row t accumulates into Yt. The rows' quants are DI, DI+R9,
// DI+2·R9 and DI+R11 (R11 = 3·R9), their scales R8, R8+R10, R8+2·R10 and
// R8+R12.

// QTOK: acc += float(Σ w·x over the block) · dw · dx for one row.
#define QTOK(xaddr, daddr, acc) \
	VMOVDQU xaddr, Y7; \
	VPSIGNB Y4, Y7, Y7; \
	VPMADDUBSW Y7, Y5, Y7; \
	VPMADDWD Y13, Y7, Y7; \
	VCVTDQ2PS Y7, Y7; \
	VBROADCASTSS daddr, Y8; \
	VMULPS Y6, Y8, Y8; \
	VFMADD231PS Y8, Y7, acc

#define QTOK4 \
	VPSIGNB Y4, Y4, Y5; \
	VPBROADCASTW (SI), X6; \
	VCVTPH2PS X6, Y6; \
	QTOK((DI), (R8), Y0); \
	QTOK((DI)(R9*1), (R8)(R10*1), Y1); \
	QTOK((DI)(R9*2), (R8)(R10*2), Y2); \
	QTOK((DI)(R11*1), (R8)(R12*1), Y3)

// QTOKU, QTOK4U: QTOK, QTOK4 for unsigned quants in Y4 (Q4_1, Q5_1), which
// VPMADDUBSW takes as they are.
#define QTOKU(xaddr, daddr, acc) \
	VPMADDUBSW xaddr, Y4, Y7; \
	VPMADDWD Y13, Y7, Y7; \
	VCVTDQ2PS Y7, Y7; \
	VBROADCASTSS daddr, Y8; \
	VMULPS Y6, Y8, Y8; \
	VFMADD231PS Y8, Y7, acc

#define QTOK4U \
	VPBROADCASTW (SI), X6; \
	VCVTPH2PS X6, Y6; \
	QTOKU((DI), (R8), Y0); \
	QTOKU((DI)(R9*1), (R8)(R10*1), Y1); \
	QTOKU((DI)(R9*2), (R8)(R10*2), Y2); \
	QTOKU((DI)(R11*1), (R8)(R12*1), Y3)

// QDOT4_PROLOGUE: with k in R9, the strides R10..R12 and zero
// accumulators.
#define QDOT4_PROLOGUE \
	MOVQ R9, R10; \
	SHRQ $3, R10; \
	LEAQ (R9)(R9*2), R11; \
	LEAQ (R10)(R10*2), R12; \
	ONES16; \
	VXORPS Y0, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VXORPS Y2, Y2, Y2; \
	VXORPS Y3, Y3, Y3

// QDOT4_SUMS: X0 = [Σ Y0, Σ Y1, Σ Y2, Σ Y3].
#define QDOT4_SUMS \
	VHADDPS Y1, Y0, Y0; \
	VHADDPS Y3, Y2, Y2; \
	VHADDPS Y2, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0

// QDOT4_EPILOGUE stores [Σ Y0, Σ Y1, Σ Y2, Σ Y3] to (AX).
#define QDOT4_EPILOGUE \
	QDOT4_SUMS; \
	VMOVUPS X0, (AX); \
	VZEROUPPER

// func qdot4Q4_0AVX2(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)
// Four rows of k quantized activations (row t at xq+t·k, its scales at
// xd+t·k/32) against one Q4_0 weight row.
TEXT ·qdot4Q4_0AVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nblocks+32(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	MOVQ $0x0808080808080808, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14

q4_0x4loop:
	TESTQ CX, CX
	JLE   q4_0x4done
	VMOVDQU 2(SI), X4
	VPSRLW $4, X4, X5
	VINSERTI128 $1, X5, Y4, Y4
	VPAND Y15, Y4, Y4
	VPSUBB Y14, Y4, Y4
	QTOK4
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q4_0x4loop

q4_0x4done:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// func qdot4Q8_0AVX2(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)
// As qdot4Q4_0AVX2 for a Q8_0 weight row.
TEXT ·qdot4Q8_0AVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nblocks+32(FP), CX
	QDOT4_PROLOGUE

q8_0x4loop:
	TESTQ CX, CX
	JLE   q8_0x4done
	VMOVDQU 2(SI), Y4
	QTOK4
	ADDQ $34, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q8_0x4loop

q8_0x4done:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// func qdot4Q4_KAVX2(w *byte, xq *int8, xd, xs *float32, k, nsuper int, out *[4]float32)
// Four rows of k quantized activations (row t at xq+t·k, its scales at
// xd+t·k/32 and sums at xs+t·k/32) against one Q4_K weight row. Each
// super-block is unpacked once (Y6..Y13: the eight sub-blocks' quants,
// Y4 = d·sc[j], Y5 = dmin·m[j]) and each sub-block is taken for the four
// rows in turn, each row into its own accumulator Y0..Y3.
TEXT ·qdot4Q4_KAVX2(SB), NOSPLIT, $192-56
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), BX
	SUBQ R8, BX
	MOVQ k+32(FP), R9
	MOVQ nsuper+40(FP), CX
	MOVQ R9, R10
	SHRQ $3, R10
	MASK0F
	VMOVDQU Y15, 128(SP)
	ONES16
	VMOVDQU Y13, 160(SP)
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

q4_kx4loop:
	TESTQ CX, CX
	JLE   q4_kx4done
	// Scales and mins as in qdotQ4_KAVX2, with AX = u0, DX = u1, R13 = u2.
	MOVL 4(SI), AX
	MOVL 8(SI), DX
	MOVL 12(SI), R13
	MOVL AX, R11
	ANDL $0x3f3f3f3f, R11
	MOVL R13, R12
	ANDL $0x0f0f0f0f, R12
	SHRL $6, AX
	ANDL $0x03030303, AX
	SHLL $4, AX
	ORL  AX, R12
	SHLQ $32, R12
	ORQ  R12, R11
	VMOVQ R11, X4
	MOVL DX, R11
	ANDL $0x3f3f3f3f, R11
	SHRL $4, R13
	ANDL $0x0f0f0f0f, R13
	SHRL $6, DX
	ANDL $0x03030303, DX
	SHLL $4, DX
	ORL  DX, R13
	SHLQ $32, R13
	ORQ  R13, R11
	VMOVQ R11, X5
	VPMOVZXBD X4, Y4
	VCVTDQ2PS Y4, Y4
	VPMOVZXBD X5, Y5
	VCVTDQ2PS Y5, Y5
	VPBROADCASTW 0(SI), X14
	VCVTPH2PS X14, Y14
	VMULPS Y14, Y4, Y4
	VPBROADCASTW 2(SI), X14
	VCVTPH2PS X14, Y14
	VMULPS Y14, Y5, Y5
	MOVQ R8, R12
	Q4_K_ROW(0, Y0)
	Q4_K_ROW(32, Y1)
	Q4_K_ROW(64, Y2)
	Q4_K_ROW(96, Y3)
	Q4_K_UNPACK(16, Y6, Y7)
	Q4_K_UNPACK(48, Y8, Y9)
	Q4_K_UNPACK(80, Y10, Y11)
	Q4_K_UNPACK(112, Y12, Y13)
	LEAQ (R9)(R9*2), R13
	Q4_K_J(Y6, 0, 0, 32, 64, 96)
	Q4_K_J(Y7, 32, 4, 36, 68, 100)
	Q4_K_J(Y8, 64, 8, 40, 72, 104)
	Q4_K_J(Y9, 96, 12, 44, 76, 108)
	Q4_K_J(Y10, 128, 16, 48, 80, 112)
	Q4_K_J(Y11, 160, 20, 52, 84, 116)
	Q4_K_J(Y12, 192, 24, 56, 88, 120)
	Q4_K_J(Y13, 224, 28, 60, 92, 124)
	ADDQ $144, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q4_kx4loop

q4_kx4done:
	MOVQ out+48(FP), AX
	QDOT4_EPILOGUE
	RET

// The other 32-element types (rule in qdot32.go). Registers of all of
// them: Y15 = 0x0f bytes, Y13 = 1 in every 16-bit lane, Y14 = 0x10 bytes
// (the fifth bit) or the IQ4_NL levels; Y0 and Y1 accumulate alternate
// blocks, X9 the min terms m·s.

// q5shuf spreads byte i/8 of the broadcast qh word to byte i (VPSHUFB
// works within 128-bit lanes: the low lane takes bytes 0 and 1, the high
// lane bytes 2 and 3); q5bit holds bit i%8 in byte i.
DATA q5shuf<>+0(SB)/8, $0x0000000000000000
DATA q5shuf<>+8(SB)/8, $0x0101010101010101
DATA q5shuf<>+16(SB)/8, $0x0202020202020202
DATA q5shuf<>+24(SB)/8, $0x0303030303030303
GLOBL q5shuf<>(SB), RODATA|NOPTR, $32
DATA q5bit<>+0(SB)/8, $0x8040201008040201
DATA q5bit<>+8(SB)/8, $0x8040201008040201
DATA q5bit<>+16(SB)/8, $0x8040201008040201
DATA q5bit<>+24(SB)/8, $0x8040201008040201
GLOBL q5bit<>(SB), RODATA|NOPTR, $32

// iq4nl: the levels of IQ4_NL (iq4nlLevels in qdot32.go) as int8, in both
// 128-bit lanes: -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38,
// 53, 69, 89, 113.
DATA iq4nl<>+0(SB)/8, $0xf6eaddcfbfad9881
DATA iq4nl<>+8(SB)/8, $0x7159453526190d01
DATA iq4nl<>+16(SB)/8, $0xf6eaddcfbfad9881
DATA iq4nl<>+24(SB)/8, $0x7159453526190d01
GLOBL iq4nl<>(SB), RODATA|NOPTR, $32

#define Q5_CONSTS \
	MASK0F; \
	ONES16; \
	MOVQ $0x1010101010101010, AX; \
	VMOVQ AX, X14; \
	VPBROADCASTQ X14, Y14

// FIFTH: dst = 0xff in byte i where bit i of the uint32 at qhoff(SI) is
// set, else 0.
#define FIFTH(qhoff, dst) \
	VPBROADCASTD qhoff(SI), dst; \
	VPSHUFB q5shuf<>(SB), dst, dst; \
	VPAND q5bit<>(SB), dst, dst; \
	VPCMPEQB q5bit<>(SB), dst, dst

// UDOT: Y4 = eight int32 partial sums of Σ q·x, q in Y2 unsigned (0..31),
// x at xoff(DI).
#define UDOT(xoff) \
	VPMADDUBSW xoff(DI), Y2, Y4; \
	VPMADDWD Y13, Y4, Y4

// MIN_FMA: X9 += f16(moff(SI)) · s[doff] (scalar lane 0).
#define MIN_FMA(moff, doff) \
	VPBROADCASTW moff(SI), X7; \
	VCVTPH2PS X7, X7; \
	VFMADD231SS doff(R9), X7, X9

// Q4_1 block at woff(SI): {f16 d; f16 m; uint8 qs[16]}.
#define Q4_1_BLOCK(woff, xoff, doff, acc) \
	NIB32(woff+4, Y2, X2, X3); \
	UDOT(xoff); \
	SCALE_FMA(woff, doff, acc); \
	MIN_FMA(woff+2, doff)

// Q5_0 block at woff(SI): {f16 d; uint32 qh; uint8 qs[16]}: the quants
// minus 16 are the nibbles minus 16 where the fifth bit is clear.
#define Q5_0_BLOCK(woff, xoff, doff, acc) \
	NIB32(woff+6, Y2, X2, X3); \
	FIFTH(woff+2, Y3); \
	VPANDN Y14, Y3, Y3; \
	VPSUBB Y3, Y2, Y2; \
	VMOVDQU xoff(DI), Y3; \
	Q8DOT; \
	SCALE_FMA(woff, doff, acc)

// Q5_1 block at woff(SI): {f16 d; f16 m; uint32 qh; uint8 qs[16]}.
#define Q5_1_BLOCK(woff, xoff, doff, acc) \
	NIB32(woff+8, Y2, X2, X3); \
	FIFTH(woff+4, Y3); \
	VPAND Y14, Y3, Y3; \
	VPOR Y3, Y2, Y2; \
	UDOT(xoff); \
	SCALE_FMA(woff, doff, acc); \
	MIN_FMA(woff+2, doff)

// IQ4_NL block at woff(SI): {f16 d; uint8 qs[16]}: the nibbles index the
// levels in Y14.
#define IQ4_NL_BLOCK(woff, xoff, doff, acc) \
	NIB32(woff+2, Y2, X2, X3); \
	VPSHUFB Y2, Y14, Y2; \
	VMOVDQU xoff(DI), Y3; \
	Q8DOT; \
	SCALE_FMA(woff, doff, acc)

// func qdotQ4_1AVX2(w *byte, xq *int8, xd, xs *float32, nblocks int) float32
TEXT ·qdotQ4_1AVX2(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), R9
	MOVQ nblocks+32(FP), CX
	MASK0F
	ONES16
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y9, Y9, Y9

q4_1loop2:
	CMPQ CX, $2
	JL   q4_1loop1
	Q4_1_BLOCK(0, 0, 0, Y0)
	Q4_1_BLOCK(20, 32, 4, Y1)
	ADDQ $40, SI
	ADDQ $64, DI
	ADDQ $8, R8
	ADDQ $8, R9
	SUBQ $2, CX
	JMP  q4_1loop2

q4_1loop1:
	CMPQ CX, $1
	JL   q4_1done
	Q4_1_BLOCK(0, 0, 0, Y0)

q4_1done:
	VADDPS Y1, Y0, Y0
	REDUCE
	VADDSS X9, X0, X0
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// func qdotRowsQ4_1AVX2(w *byte, stride int, xq *int8, xd, xs *float32, nblocks, rows int, out *float32)
// qdotQ4_1AVX2 over rows of stride bytes from w (see qdotRowsQ4_0AVX2), the same
// bits; the row state waits on the stack from 0(SP).
TEXT ·qdotRowsQ4_1AVX2(SB), NOSPLIT, $64-64
	MOVQ w+0(FP), AX
	MOVQ AX, 48(SP)
	MOVQ stride+8(FP), AX
	MOVQ AX, 56(SP)
	MOVQ xq+16(FP), AX
	MOVQ AX, 0(SP)
	MOVQ xd+24(FP), AX
	MOVQ AX, 8(SP)
	MOVQ xs+32(FP), AX
	MOVQ AX, 16(SP)
	MOVQ nblocks+40(FP), AX
	MOVQ AX, 24(SP)
	MOVQ rows+48(FP), AX
	MOVQ AX, 32(SP)
	MOVQ out+56(FP), AX
	MOVQ AX, 40(SP)
	MASK0F
	ONES16

q4_1rrow:
	CMPQ 32(SP), $0
	JLE  q4_1rend
	MOVQ 48(SP), SI
	MOVQ 0(SP), DI
	MOVQ 8(SP), R8
	MOVQ 16(SP), R9
	MOVQ 24(SP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y9, Y9, Y9

q4_1loop2r:
	CMPQ CX, $2
	JL   q4_1loop1r
	Q4_1_BLOCK(0, 0, 0, Y0)
	Q4_1_BLOCK(20, 32, 4, Y1)
	ADDQ $40, SI
	ADDQ $64, DI
	ADDQ $8, R8
	ADDQ $8, R9
	SUBQ $2, CX
	JMP  q4_1loop2r

q4_1loop1r:
	CMPQ CX, $1
	JL   q4_1doner
	Q4_1_BLOCK(0, 0, 0, Y0)

q4_1doner:
	VADDPS Y1, Y0, Y0
	REDUCE
	VADDSS X9, X0, X0
	MOVQ  40(SP), AX
	MOVSS X0, (AX)
	ADDQ  $4, 40(SP)
	MOVQ  56(SP), AX
	ADDQ  AX, 48(SP)
	DECQ  32(SP)
	JMP   q4_1rrow

q4_1rend:
	VZEROUPPER
	RET

// func qdotQ5_0AVX2(w *byte, xq *int8, xd *float32, nblocks int) float32
TEXT ·qdotQ5_0AVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ nblocks+24(FP), CX
	Q5_CONSTS
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q5_0loop2:
	CMPQ CX, $2
	JL   q5_0loop1
	Q5_0_BLOCK(0, 0, 0, Y0)
	Q5_0_BLOCK(22, 32, 4, Y1)
	ADDQ $44, SI
	ADDQ $64, DI
	ADDQ $8, R8
	SUBQ $2, CX
	JMP  q5_0loop2

q5_0loop1:
	CMPQ CX, $1
	JL   q5_0done
	Q5_0_BLOCK(0, 0, 0, Y0)

q5_0done:
	VADDPS Y1, Y0, Y0
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func qdotRowsQ5_0AVX2(w *byte, stride int, xq *int8, xd *float32, nblocks, rows int, out *float32)
// qdotQ5_0AVX2 over rows of stride bytes from w (see qdotRowsQ4_0AVX2), the same
// bits; the row state waits on the stack from 0(SP).
TEXT ·qdotRowsQ5_0AVX2(SB), NOSPLIT, $64-56
	MOVQ w+0(FP), AX
	MOVQ AX, 48(SP)
	MOVQ stride+8(FP), AX
	MOVQ AX, 56(SP)
	MOVQ xq+16(FP), AX
	MOVQ AX, 0(SP)
	MOVQ xd+24(FP), AX
	MOVQ AX, 8(SP)
	MOVQ nblocks+32(FP), AX
	MOVQ AX, 24(SP)
	MOVQ rows+40(FP), AX
	MOVQ AX, 32(SP)
	MOVQ out+48(FP), AX
	MOVQ AX, 40(SP)
	Q5_CONSTS

q5_0rrow:
	CMPQ 32(SP), $0
	JLE  q5_0rend
	MOVQ 48(SP), SI
	MOVQ 0(SP), DI
	MOVQ 8(SP), R8
	MOVQ 24(SP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q5_0loop2r:
	CMPQ CX, $2
	JL   q5_0loop1r
	Q5_0_BLOCK(0, 0, 0, Y0)
	Q5_0_BLOCK(22, 32, 4, Y1)
	ADDQ $44, SI
	ADDQ $64, DI
	ADDQ $8, R8
	SUBQ $2, CX
	JMP  q5_0loop2r

q5_0loop1r:
	CMPQ CX, $1
	JL   q5_0doner
	Q5_0_BLOCK(0, 0, 0, Y0)

q5_0doner:
	VADDPS Y1, Y0, Y0
	REDUCE
	MOVQ  40(SP), AX
	MOVSS X0, (AX)
	ADDQ  $4, 40(SP)
	MOVQ  56(SP), AX
	ADDQ  AX, 48(SP)
	DECQ  32(SP)
	JMP   q5_0rrow

q5_0rend:
	VZEROUPPER
	RET

// func qdotQ5_1AVX2(w *byte, xq *int8, xd, xs *float32, nblocks int) float32
TEXT ·qdotQ5_1AVX2(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), R9
	MOVQ nblocks+32(FP), CX
	Q5_CONSTS
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y9, Y9, Y9

q5_1loop2:
	CMPQ CX, $2
	JL   q5_1loop1
	Q5_1_BLOCK(0, 0, 0, Y0)
	Q5_1_BLOCK(24, 32, 4, Y1)
	ADDQ $48, SI
	ADDQ $64, DI
	ADDQ $8, R8
	ADDQ $8, R9
	SUBQ $2, CX
	JMP  q5_1loop2

q5_1loop1:
	CMPQ CX, $1
	JL   q5_1done
	Q5_1_BLOCK(0, 0, 0, Y0)

q5_1done:
	VADDPS Y1, Y0, Y0
	REDUCE
	VADDSS X9, X0, X0
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// func qdotRowsQ5_1AVX2(w *byte, stride int, xq *int8, xd, xs *float32, nblocks, rows int, out *float32)
// qdotQ5_1AVX2 over rows of stride bytes from w (see qdotRowsQ4_0AVX2), the same
// bits; the row state waits on the stack from 0(SP).
TEXT ·qdotRowsQ5_1AVX2(SB), NOSPLIT, $64-64
	MOVQ w+0(FP), AX
	MOVQ AX, 48(SP)
	MOVQ stride+8(FP), AX
	MOVQ AX, 56(SP)
	MOVQ xq+16(FP), AX
	MOVQ AX, 0(SP)
	MOVQ xd+24(FP), AX
	MOVQ AX, 8(SP)
	MOVQ xs+32(FP), AX
	MOVQ AX, 16(SP)
	MOVQ nblocks+40(FP), AX
	MOVQ AX, 24(SP)
	MOVQ rows+48(FP), AX
	MOVQ AX, 32(SP)
	MOVQ out+56(FP), AX
	MOVQ AX, 40(SP)
	Q5_CONSTS

q5_1rrow:
	CMPQ 32(SP), $0
	JLE  q5_1rend
	MOVQ 48(SP), SI
	MOVQ 0(SP), DI
	MOVQ 8(SP), R8
	MOVQ 16(SP), R9
	MOVQ 24(SP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y9, Y9, Y9

q5_1loop2r:
	CMPQ CX, $2
	JL   q5_1loop1r
	Q5_1_BLOCK(0, 0, 0, Y0)
	Q5_1_BLOCK(24, 32, 4, Y1)
	ADDQ $48, SI
	ADDQ $64, DI
	ADDQ $8, R8
	ADDQ $8, R9
	SUBQ $2, CX
	JMP  q5_1loop2r

q5_1loop1r:
	CMPQ CX, $1
	JL   q5_1doner
	Q5_1_BLOCK(0, 0, 0, Y0)

q5_1doner:
	VADDPS Y1, Y0, Y0
	REDUCE
	VADDSS X9, X0, X0
	MOVQ  40(SP), AX
	MOVSS X0, (AX)
	ADDQ  $4, 40(SP)
	MOVQ  56(SP), AX
	ADDQ  AX, 48(SP)
	DECQ  32(SP)
	JMP   q5_1rrow

q5_1rend:
	VZEROUPPER
	RET

// func qdotIQ4_NLAVX2(w *byte, xq *int8, xd *float32, nblocks int) float32
TEXT ·qdotIQ4_NLAVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ nblocks+24(FP), CX
	MASK0F
	ONES16
	VMOVDQU iq4nl<>(SB), Y14
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

iq4nlloop2:
	CMPQ CX, $2
	JL   iq4nlloop1
	IQ4_NL_BLOCK(0, 0, 0, Y0)
	IQ4_NL_BLOCK(18, 32, 4, Y1)
	ADDQ $36, SI
	ADDQ $64, DI
	ADDQ $8, R8
	SUBQ $2, CX
	JMP  iq4nlloop2

iq4nlloop1:
	CMPQ CX, $1
	JL   iq4nldone
	IQ4_NL_BLOCK(0, 0, 0, Y0)

iq4nldone:
	VADDPS Y1, Y0, Y0
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func qdotRowsIQ4_NLAVX2(w *byte, stride int, xq *int8, xd *float32, nblocks, rows int, out *float32)
// qdotIQ4_NLAVX2 over rows of stride bytes from w (see qdotRowsQ4_0AVX2), the same
// bits; the row state waits on the stack from 0(SP).
TEXT ·qdotRowsIQ4_NLAVX2(SB), NOSPLIT, $64-56
	MOVQ w+0(FP), AX
	MOVQ AX, 48(SP)
	MOVQ stride+8(FP), AX
	MOVQ AX, 56(SP)
	MOVQ xq+16(FP), AX
	MOVQ AX, 0(SP)
	MOVQ xd+24(FP), AX
	MOVQ AX, 8(SP)
	MOVQ nblocks+32(FP), AX
	MOVQ AX, 24(SP)
	MOVQ rows+40(FP), AX
	MOVQ AX, 32(SP)
	MOVQ out+48(FP), AX
	MOVQ AX, 40(SP)
	MASK0F
	ONES16
	VMOVDQU iq4nl<>(SB), Y14

iq4nlrrow:
	CMPQ 32(SP), $0
	JLE  iq4nlrend
	MOVQ 48(SP), SI
	MOVQ 0(SP), DI
	MOVQ 8(SP), R8
	MOVQ 24(SP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

iq4nlloop2r:
	CMPQ CX, $2
	JL   iq4nlloop1r
	IQ4_NL_BLOCK(0, 0, 0, Y0)
	IQ4_NL_BLOCK(18, 32, 4, Y1)
	ADDQ $36, SI
	ADDQ $64, DI
	ADDQ $8, R8
	SUBQ $2, CX
	JMP  iq4nlloop2r

iq4nlloop1r:
	CMPQ CX, $1
	JL   iq4nldoner
	IQ4_NL_BLOCK(0, 0, 0, Y0)

iq4nldoner:
	VADDPS Y1, Y0, Y0
	REDUCE
	MOVQ  40(SP), AX
	MOVSS X0, (AX)
	ADDQ  $4, 40(SP)
	MOVQ  56(SP), AX
	ADDQ  AX, 48(SP)
	DECQ  32(SP)
	JMP   iq4nlrrow

iq4nlrend:
	VZEROUPPER
	RET

// Q5_K_BIT: OR the fifth bits of sub-block k (bit k of each qh byte in
// Y11) into the quants in reg as 16: op $n moves bit k to bit 4 (VPSLLW
// by 4−k or VPSRLW by k−4; within each byte, as the mask keeps bit 4).
#define Q5_K_BIT(op, n, reg) \
	op $n, Y11, Y14; \
	VPAND Y12, Y14, Y14; \
	VPOR Y14, reg, reg

// func qdotQ5_KAVX2(w *byte, xq *int8, xd, xs *float32, nsuper int) float32
// Per super-block {f16 d; f16 dmin; uint8 scales[12]; uint8 qh[32];
// uint8 qs[128]}: as qdotQ4_KAVX2 with the fifth bits (Y11) ORed into the
// quants, Y12 = 0x10 bytes.
TEXT ·qdotQ5_KAVX2(SB), NOSPLIT, $32-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), R9
	MOVQ nsuper+32(FP), CX
	MASK0F
	ONES16
	MOVQ $0x1010101010101010, AX
	VMOVQ AX, X12
	VPBROADCASTQ X12, Y12
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y10, Y10, Y10

q5_kloop:
	TESTQ CX, CX
	JLE   q5_kdone
	K4_SCALES
	VMOVDQU 16(SI), Y11
	K4_NIBS(48)
	Q5_K_BIT(VPSLLW, 4, Y6)
	Q5_K_BIT(VPSLLW, 3, Y7)
	K4_DOT(0, 32, 0, 4)
	K4_NIBS(80)
	Q5_K_BIT(VPSLLW, 2, Y6)
	Q5_K_BIT(VPSLLW, 1, Y7)
	K4_DOT(64, 96, 8, 12)
	K4_NIBS(112)
	Q5_K_BIT(VPSRLW, 0, Y6)
	Q5_K_BIT(VPSRLW, 1, Y7)
	K4_DOT(128, 160, 16, 20)
	K4_NIBS(144)
	Q5_K_BIT(VPSRLW, 2, Y6)
	Q5_K_BIT(VPSRLW, 3, Y7)
	K4_DOT(192, 224, 24, 28)
	ADDQ $176, SI
	ADDQ $256, DI
	ADDQ $32, R8
	ADDQ $32, R9
	DECQ CX
	JMP  q5_kloop

q5_kdone:
	VADDPS Y10, Y0, Y0
	VSUBPS Y1, Y0, Y0
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// func qdotRowsQ5_KAVX2(w *byte, stride int, xq *int8, xd, xs *float32, nsuper, rows int, out *float32)
// qdotQ5_KAVX2 over rows of stride bytes from w (see qdotRowsQ4_0AVX2), the same
// bits; the row state waits on the stack from 32(SP).
TEXT ·qdotRowsQ5_KAVX2(SB), NOSPLIT, $96-64
	MOVQ w+0(FP), AX
	MOVQ AX, 80(SP)
	MOVQ stride+8(FP), AX
	MOVQ AX, 88(SP)
	MOVQ xq+16(FP), AX
	MOVQ AX, 32(SP)
	MOVQ xd+24(FP), AX
	MOVQ AX, 40(SP)
	MOVQ xs+32(FP), AX
	MOVQ AX, 48(SP)
	MOVQ nsuper+40(FP), AX
	MOVQ AX, 56(SP)
	MOVQ rows+48(FP), AX
	MOVQ AX, 64(SP)
	MOVQ out+56(FP), AX
	MOVQ AX, 72(SP)
	MASK0F
	ONES16
	MOVQ $0x1010101010101010, AX
	VMOVQ AX, X12
	VPBROADCASTQ X12, Y12

q5_krrow:
	CMPQ 64(SP), $0
	JLE  q5_krend
	MOVQ 80(SP), SI
	MOVQ 32(SP), DI
	MOVQ 40(SP), R8
	MOVQ 48(SP), R9
	MOVQ 56(SP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y10, Y10, Y10

q5_kloopr:
	TESTQ CX, CX
	JLE   q5_kdoner
	K4_SCALES
	VMOVDQU 16(SI), Y11
	K4_NIBS(48)
	Q5_K_BIT(VPSLLW, 4, Y6)
	Q5_K_BIT(VPSLLW, 3, Y7)
	K4_DOT(0, 32, 0, 4)
	K4_NIBS(80)
	Q5_K_BIT(VPSLLW, 2, Y6)
	Q5_K_BIT(VPSLLW, 1, Y7)
	K4_DOT(64, 96, 8, 12)
	K4_NIBS(112)
	Q5_K_BIT(VPSRLW, 0, Y6)
	Q5_K_BIT(VPSRLW, 1, Y7)
	K4_DOT(128, 160, 16, 20)
	K4_NIBS(144)
	Q5_K_BIT(VPSRLW, 2, Y6)
	Q5_K_BIT(VPSRLW, 3, Y7)
	K4_DOT(192, 224, 24, 28)
	ADDQ $176, SI
	ADDQ $256, DI
	ADDQ $32, R8
	ADDQ $32, R9
	DECQ CX
	JMP  q5_kloopr

q5_kdoner:
	VADDPS Y10, Y0, Y0
	VSUBPS Y1, Y0, Y0
	REDUCE
	MOVQ  72(SP), AX
	MOVSS X0, (AX)
	ADDQ  $4, 72(SP)
	MOVQ  88(SP), AX
	ADDQ  AX, 80(SP)
	DECQ  64(SP)
	JMP   q5_krrow

q5_krend:
	VZEROUPPER
	RET

// Q3_K_J: activation block 4h+j of a Q3_K super-block: the low bits
// (Y3 >> lsh) & 3 of qs[32h:32h+32], the third bit 4h+j of hmask (Y5)
// moved to bit 2 by hop $hn (VPSLLW by 2−b or VPSRLW by b−2, within each
// byte as the mask keeps bit 2), q = low | bit<<2, minus 4 (Y10 = 4 bytes,
// Y12 = 3 bytes; Y4 clobbered).
#define Q3_K_J(lsh, hop, hn, xoff, soff, soff2, foff, acc) \
	VPSRLW $lsh, Y3, Y6; \
	VPAND Y12, Y6, Y6; \
	hop $hn, Y5, Y4; \
	VPAND Y10, Y4, Y4; \
	VPOR Y4, Y6, Y6; \
	VPSUBB Y10, Y6, Y6; \
	K16_DOT(xoff, soff, soff2, foff, acc)

// Q3_K_SCALEWORD: the scales 4i..4i+3 (q3KScales in qdotk.go): lo, with
// the nibble shift ls, ORed with the two bits of u2 (DX) at hs, to off
// (t0, t1 clobbered).
#define Q3_K_SCALEWORD(lo, ls, hs, off, t0, t1) \
	MOVL lo, t0; \
	SHRL $ls, t0; \
	ANDL $0x0f0f0f0f, t0; \
	MOVL DX, t1; \
	SHRL $hs, t1; \
	ANDL $0x03030303, t1; \
	SHLL $4, t1; \
	ORL  t1, t0; \
	MOVL t0, off

// func qdotQ3_KAVX2(w *byte, xq *int8, xd *float32, nsuper int) float32
// Per super-block {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; f16 d}:
// d·dx[b] for the eight activation blocks to 0(SP), the sixteen scales
// minus 32 widened to int16 to 32(SP) (bytes first at 64(SP)).
TEXT ·qdotQ3_KAVX2(SB), NOSPLIT, $80-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ nsuper+24(FP), CX
	MOVQ $0x0303030303030303, AX
	VMOVQ AX, X12
	VPBROADCASTQ X12, Y12
	MOVQ $0x0404040404040404, AX
	VMOVQ AX, X10
	VPBROADCASTQ X10, Y10
	MOVQ $0x2020202020202020, AX
	VMOVQ AX, X11
	VPBROADCASTQ X11, Y11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q3_kloop:
	TESTQ CX, CX
	JLE   q3_kdone
	VPBROADCASTW 108(SI), X2
	VCVTPH2PS X2, Y2
	VMULPS (R8), Y2, Y2
	VMOVUPS Y2, 0(SP)
	MOVL 96(SI), AX
	MOVL 100(SI), BX
	MOVL 104(SI), DX
	Q3_K_SCALEWORD(AX, 0, 0, 64(SP), R10, R11)
	Q3_K_SCALEWORD(BX, 0, 2, 68(SP), R10, R11)
	Q3_K_SCALEWORD(AX, 4, 4, 72(SP), R10, R11)
	Q3_K_SCALEWORD(BX, 4, 6, 76(SP), R10, R11)
	VMOVDQU 64(SP), X2
	VPSUBB X11, X2, X2
	VPMOVSXBW X2, Y2
	VMOVDQU Y2, 32(SP)
	VMOVDQU 0(SI), Y5
	VMOVDQU 32(SI), Y3
	Q3_K_J(0, VPSLLW, 2, 0, 32, 34, 0, Y0)
	Q3_K_J(2, VPSLLW, 1, 32, 36, 38, 4, Y1)
	Q3_K_J(4, VPSRLW, 0, 64, 40, 42, 8, Y0)
	Q3_K_J(6, VPSRLW, 1, 96, 44, 46, 12, Y1)
	VMOVDQU 64(SI), Y3
	Q3_K_J(0, VPSRLW, 2, 128, 48, 50, 16, Y0)
	Q3_K_J(2, VPSRLW, 3, 160, 52, 54, 20, Y1)
	Q3_K_J(4, VPSRLW, 4, 192, 56, 58, 24, Y0)
	Q3_K_J(6, VPSRLW, 5, 224, 60, 62, 28, Y1)
	ADDQ $110, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q3_kloop

q3_kdone:
	VADDPS Y1, Y0, Y0
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func qdotRowsQ3_KAVX2(w *byte, stride int, xq *int8, xd *float32, nsuper, rows int, out *float32)
// qdotQ3_KAVX2 over rows of stride bytes from w (see qdotRowsQ4_0AVX2), the same
// bits; the row state waits on the stack from 80(SP).
TEXT ·qdotRowsQ3_KAVX2(SB), NOSPLIT, $144-56
	MOVQ w+0(FP), AX
	MOVQ AX, 128(SP)
	MOVQ stride+8(FP), AX
	MOVQ AX, 136(SP)
	MOVQ xq+16(FP), AX
	MOVQ AX, 80(SP)
	MOVQ xd+24(FP), AX
	MOVQ AX, 88(SP)
	MOVQ nsuper+32(FP), AX
	MOVQ AX, 104(SP)
	MOVQ rows+40(FP), AX
	MOVQ AX, 112(SP)
	MOVQ out+48(FP), AX
	MOVQ AX, 120(SP)
	MOVQ $0x0303030303030303, AX
	VMOVQ AX, X12
	VPBROADCASTQ X12, Y12
	MOVQ $0x0404040404040404, AX
	VMOVQ AX, X10
	VPBROADCASTQ X10, Y10
	MOVQ $0x2020202020202020, AX
	VMOVQ AX, X11
	VPBROADCASTQ X11, Y11

q3_krrow:
	CMPQ 112(SP), $0
	JLE  q3_krend
	MOVQ 128(SP), SI
	MOVQ 80(SP), DI
	MOVQ 88(SP), R8
	MOVQ 104(SP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q3_kloopr:
	TESTQ CX, CX
	JLE   q3_kdoner
	VPBROADCASTW 108(SI), X2
	VCVTPH2PS X2, Y2
	VMULPS (R8), Y2, Y2
	VMOVUPS Y2, 0(SP)
	MOVL 96(SI), AX
	MOVL 100(SI), BX
	MOVL 104(SI), DX
	Q3_K_SCALEWORD(AX, 0, 0, 64(SP), R10, R11)
	Q3_K_SCALEWORD(BX, 0, 2, 68(SP), R10, R11)
	Q3_K_SCALEWORD(AX, 4, 4, 72(SP), R10, R11)
	Q3_K_SCALEWORD(BX, 4, 6, 76(SP), R10, R11)
	VMOVDQU 64(SP), X2
	VPSUBB X11, X2, X2
	VPMOVSXBW X2, Y2
	VMOVDQU Y2, 32(SP)
	VMOVDQU 0(SI), Y5
	VMOVDQU 32(SI), Y3
	Q3_K_J(0, VPSLLW, 2, 0, 32, 34, 0, Y0)
	Q3_K_J(2, VPSLLW, 1, 32, 36, 38, 4, Y1)
	Q3_K_J(4, VPSRLW, 0, 64, 40, 42, 8, Y0)
	Q3_K_J(6, VPSRLW, 1, 96, 44, 46, 12, Y1)
	VMOVDQU 64(SI), Y3
	Q3_K_J(0, VPSRLW, 2, 128, 48, 50, 16, Y0)
	Q3_K_J(2, VPSRLW, 3, 160, 52, 54, 20, Y1)
	Q3_K_J(4, VPSRLW, 4, 192, 56, 58, 24, Y0)
	Q3_K_J(6, VPSRLW, 5, 224, 60, 62, 28, Y1)
	ADDQ $110, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q3_kloopr

q3_kdoner:
	VADDPS Y1, Y0, Y0
	REDUCE
	MOVQ  120(SP), AX
	MOVSS X0, (AX)
	ADDQ  $4, 120(SP)
	MOVQ  136(SP), AX
	ADDQ  AX, 128(SP)
	DECQ  112(SP)
	JMP   q3_krrow

q3_krend:
	VZEROUPPER
	RET

// Q2_K_J: activation block 4h+j of a Q2_K super-block: q = (Y3 >> lsh) & 3
// (qs[32h:32h+32], unsigned), activations at xoff(DI):
// Y0 += d·dx · Σ_k sc[k]·Σ q·x (scales at soff, soff2; d·dx at foff) and
// Y1 += dmin·dx · Σ_k m[k]·Σ x (mins at moff, moff2; dmin·dx at foff2);
// Y14 = 1 bytes.
#define Q2_K_J(lsh, xoff, soff, soff2, moff, moff2, foff, foff2) \
	VPSRLW $lsh, Y3, Y6; \
	VPAND Y12, Y6, Y6; \
	VMOVDQU xoff(DI), Y7; \
	VPMADDUBSW Y7, Y6, Y6; \
	PAIR16(soff, soff2); \
	VPMADDWD Y8, Y6, Y6; \
	VCVTDQ2PS Y6, Y6; \
	VBROADCASTSS foff(SP), Y9; \
	VFMADD231PS Y9, Y6, Y0; \
	VPMADDUBSW Y7, Y14, Y7; \
	PAIR16(moff, moff2); \
	VPMADDWD Y8, Y7, Y7; \
	VCVTDQ2PS Y7, Y7; \
	VBROADCASTSS foff2(SP), Y9; \
	VFMADD231PS Y9, Y7, Y1

// func qdotQ2_KAVX2(w *byte, xq *int8, xd *float32, nsuper int) float32
// Per super-block {uint8 scales[16]; uint8 qs[64]; f16 d; f16 dmin}: d·dx[b]
// to 0(SP), dmin·dx[b] to 32(SP), the sixteen scales (low nibbles) as
// int16 to 64(SP) and the mins (high nibbles) to 96(SP).
TEXT ·qdotQ2_KAVX2(SB), NOSPLIT, $128-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ nsuper+24(FP), CX
	MASK0F
	MOVQ $0x0303030303030303, AX
	VMOVQ AX, X12
	VPBROADCASTQ X12, Y12
	MOVQ $0x0101010101010101, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q2_kloop:
	TESTQ CX, CX
	JLE   q2_kdone
	VPBROADCASTW 80(SI), X2
	VCVTPH2PS X2, Y2
	VMULPS (R8), Y2, Y2
	VMOVUPS Y2, 0(SP)
	VPBROADCASTW 82(SI), X2
	VCVTPH2PS X2, Y2
	VMULPS (R8), Y2, Y2
	VMOVUPS Y2, 32(SP)
	VMOVDQU 0(SI), X2
	VPAND X15, X2, X3
	VPMOVZXBW X3, Y3
	VMOVDQU Y3, 64(SP)
	VPSRLW $4, X2, X3
	VPAND X15, X3, X3
	VPMOVZXBW X3, Y3
	VMOVDQU Y3, 96(SP)
	VMOVDQU 16(SI), Y3
	Q2_K_J(0, 0, 64, 66, 96, 98, 0, 32)
	Q2_K_J(2, 32, 68, 70, 100, 102, 4, 36)
	Q2_K_J(4, 64, 72, 74, 104, 106, 8, 40)
	Q2_K_J(6, 96, 76, 78, 108, 110, 12, 44)
	VMOVDQU 48(SI), Y3
	Q2_K_J(0, 128, 80, 82, 112, 114, 16, 48)
	Q2_K_J(2, 160, 84, 86, 116, 118, 20, 52)
	Q2_K_J(4, 192, 88, 90, 120, 122, 24, 56)
	Q2_K_J(6, 224, 92, 94, 124, 126, 28, 60)
	ADDQ $84, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q2_kloop

q2_kdone:
	VSUBPS Y1, Y0, Y0
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func qdotRowsQ2_KAVX2(w *byte, stride int, xq *int8, xd *float32, nsuper, rows int, out *float32)
// qdotQ2_KAVX2 over rows of stride bytes from w (see qdotRowsQ4_0AVX2), the same
// bits; the row state waits on the stack from 128(SP).
TEXT ·qdotRowsQ2_KAVX2(SB), NOSPLIT, $192-56
	MOVQ w+0(FP), AX
	MOVQ AX, 176(SP)
	MOVQ stride+8(FP), AX
	MOVQ AX, 184(SP)
	MOVQ xq+16(FP), AX
	MOVQ AX, 128(SP)
	MOVQ xd+24(FP), AX
	MOVQ AX, 136(SP)
	MOVQ nsuper+32(FP), AX
	MOVQ AX, 152(SP)
	MOVQ rows+40(FP), AX
	MOVQ AX, 160(SP)
	MOVQ out+48(FP), AX
	MOVQ AX, 168(SP)
	MASK0F
	MOVQ $0x0303030303030303, AX
	VMOVQ AX, X12
	VPBROADCASTQ X12, Y12
	MOVQ $0x0101010101010101, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14

q2_krrow:
	CMPQ 160(SP), $0
	JLE  q2_krend
	MOVQ 176(SP), SI
	MOVQ 128(SP), DI
	MOVQ 136(SP), R8
	MOVQ 152(SP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

q2_kloopr:
	TESTQ CX, CX
	JLE   q2_kdoner
	VPBROADCASTW 80(SI), X2
	VCVTPH2PS X2, Y2
	VMULPS (R8), Y2, Y2
	VMOVUPS Y2, 0(SP)
	VPBROADCASTW 82(SI), X2
	VCVTPH2PS X2, Y2
	VMULPS (R8), Y2, Y2
	VMOVUPS Y2, 32(SP)
	VMOVDQU 0(SI), X2
	VPAND X15, X2, X3
	VPMOVZXBW X3, Y3
	VMOVDQU Y3, 64(SP)
	VPSRLW $4, X2, X3
	VPAND X15, X3, X3
	VPMOVZXBW X3, Y3
	VMOVDQU Y3, 96(SP)
	VMOVDQU 16(SI), Y3
	Q2_K_J(0, 0, 64, 66, 96, 98, 0, 32)
	Q2_K_J(2, 32, 68, 70, 100, 102, 4, 36)
	Q2_K_J(4, 64, 72, 74, 104, 106, 8, 40)
	Q2_K_J(6, 96, 76, 78, 108, 110, 12, 44)
	VMOVDQU 48(SI), Y3
	Q2_K_J(0, 128, 80, 82, 112, 114, 16, 48)
	Q2_K_J(2, 160, 84, 86, 116, 118, 20, 52)
	Q2_K_J(4, 192, 88, 90, 120, 122, 24, 56)
	Q2_K_J(6, 224, 92, 94, 124, 126, 28, 60)
	ADDQ $84, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q2_kloopr

q2_kdoner:
	VSUBPS Y1, Y0, Y0
	REDUCE
	MOVQ  168(SP), AX
	MOVSS X0, (AX)
	ADDQ  $4, 168(SP)
	MOVQ  184(SP), AX
	ADDQ  AX, 176(SP)
	DECQ  160(SP)
	JMP   q2_krrow

q2_krend:
	VZEROUPPER
	RET

// Q5_K4_BIT: Q5_K_BIT for qdot4Q5_KAVX2: qh in Y15, 0x10 bytes at mask
// (a stack slot, named by the caller for go vet), Y14 clobbered.
#define Q5_K4_BIT(op, n, reg, mask) \
	op $n, Y15, Y14; \
	VPAND mask, Y14, Y14; \
	VPOR Y14, reg, reg

// func qdot4Q5_KAVX2(w *byte, xq *int8, xd, xs *float32, k, nsuper int, out *[4]float32)
// As qdot4Q4_KAVX2 for a Q5_K weight row: the fifth bits (qh in Y15 while
// the quants are unpacked) are ORed into the eight sub-blocks' quants.
TEXT ·qdot4Q5_KAVX2(SB), NOSPLIT, $224-56
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), BX
	SUBQ R8, BX
	MOVQ k+32(FP), R9
	MOVQ nsuper+40(FP), CX
	MOVQ R9, R10
	SHRQ $3, R10
	MASK0F
	VMOVDQU Y15, 128(SP)
	ONES16
	VMOVDQU Y13, 160(SP)
	MOVQ $0x1010101010101010, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14
	VMOVDQU Y14, 192(SP)
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

q5_kx4loop:
	TESTQ CX, CX
	JLE   q5_kx4done
	// Scales and mins as in qdotQ4_KAVX2, with AX = u0, DX = u1, R13 = u2.
	MOVL 4(SI), AX
	MOVL 8(SI), DX
	MOVL 12(SI), R13
	MOVL AX, R11
	ANDL $0x3f3f3f3f, R11
	MOVL R13, R12
	ANDL $0x0f0f0f0f, R12
	SHRL $6, AX
	ANDL $0x03030303, AX
	SHLL $4, AX
	ORL  AX, R12
	SHLQ $32, R12
	ORQ  R12, R11
	VMOVQ R11, X4
	MOVL DX, R11
	ANDL $0x3f3f3f3f, R11
	SHRL $4, R13
	ANDL $0x0f0f0f0f, R13
	SHRL $6, DX
	ANDL $0x03030303, DX
	SHLL $4, DX
	ORL  DX, R13
	SHLQ $32, R13
	ORQ  R13, R11
	VMOVQ R11, X5
	VPMOVZXBD X4, Y4
	VCVTDQ2PS Y4, Y4
	VPMOVZXBD X5, Y5
	VCVTDQ2PS Y5, Y5
	VPBROADCASTW 0(SI), X14
	VCVTPH2PS X14, Y14
	VMULPS Y14, Y4, Y4
	VPBROADCASTW 2(SI), X14
	VCVTPH2PS X14, Y14
	VMULPS Y14, Y5, Y5
	MOVQ R8, R12
	Q4_K_ROW(0, Y0)
	Q4_K_ROW(32, Y1)
	Q4_K_ROW(64, Y2)
	Q4_K_ROW(96, Y3)
	VMOVDQU 16(SI), Y15
	Q4_K_UNPACK(48, Y6, Y7)
	Q5_K4_BIT(VPSLLW, 4, Y6, 192(SP))
	Q5_K4_BIT(VPSLLW, 3, Y7, 192(SP))
	Q4_K_UNPACK(80, Y8, Y9)
	Q5_K4_BIT(VPSLLW, 2, Y8, 192(SP))
	Q5_K4_BIT(VPSLLW, 1, Y9, 192(SP))
	Q4_K_UNPACK(112, Y10, Y11)
	Q5_K4_BIT(VPSRLW, 0, Y10, 192(SP))
	Q5_K4_BIT(VPSRLW, 1, Y11, 192(SP))
	Q4_K_UNPACK(144, Y12, Y13)
	Q5_K4_BIT(VPSRLW, 2, Y12, 192(SP))
	Q5_K4_BIT(VPSRLW, 3, Y13, 192(SP))
	LEAQ (R9)(R9*2), R13
	Q4_K_J(Y6, 0, 0, 32, 64, 96)
	Q4_K_J(Y7, 32, 4, 36, 68, 100)
	Q4_K_J(Y8, 64, 8, 40, 72, 104)
	Q4_K_J(Y9, 96, 12, 44, 76, 108)
	Q4_K_J(Y10, 128, 16, 48, 80, 112)
	Q4_K_J(Y11, 160, 20, 52, 84, 116)
	Q4_K_J(Y12, 192, 24, 56, 88, 120)
	Q4_K_J(Y13, 224, 28, 60, 92, 124)
	ADDQ $176, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q5_kx4loop

q5_kx4done:
	MOVQ out+48(FP), AX
	QDOT4_EPILOGUE
	RET

// Q6_K4_ROW: acc += d·dx · Σ_k scale[k]·Σ q·x for one activation row:
// the quants' signs in Y6, their magnitudes in Y5, the scale pair in Y8,
// the activations at xaddr and d·dx at foff(SP).
#define Q6_K4_ROW(xaddr, foff, acc) \
	VMOVDQU xaddr, Y7; \
	VPSIGNB Y6, Y7, Y7; \
	VPMADDUBSW Y7, Y5, Y7; \
	VPMADDWD Y8, Y7, Y7; \
	VCVTDQ2PS Y7, Y7; \
	VBROADCASTSS foff(SP), Y9; \
	VFMADD231PS Y9, Y7, acc

// Q6_K4_BLOCK: one activation block (quants 0..63 in Y6) for the four
// rows; the scales at soff, soff2 (int16), row t's d·dx at f+32t.
#define Q6_K4_BLOCK(xoff, soff, soff2, f) \
	VPSUBB Y11, Y6, Y6; \
	K16X4_BLOCK(xoff, soff, soff2, f)

// K16X4_BLOCK (Q3_K, Q6_K): one activation block, quants as int8 in Y6,
// for the four rows (Y5, Y7..Y9 clobbered).
#define K16X4_BLOCK(xoff, soff, soff2, f) \
	VPSIGNB Y6, Y6, Y5; \
	PAIR16(soff, soff2); \
	Q6_K4_ROW(xoff(DI), f, Y0); \
	Q6_K4_ROW(xoff(DI)(R9*1), f+32, Y1); \
	Q6_K4_ROW(xoff(DI)(R9*2), f+64, Y2); \
	Q6_K4_ROW(xoff(DI)(R13*1), f+96, Y3)

// Q6_K4_HALF: half h of the super-block as Q6_K_HALF (ql in Y4 and Y13,
// qh in Y12; Y15 = 0x0f, Y14 = 0x03, Y11 = 0x20 bytes; Y10 clobbered).
#define Q6_K4_HALF(qloff, qloff2, qhoff, x0, x1, x2, x3, s0, s1, s2, s3, s4, s5, s6, s7, f0, f1, f2, f3) \
	VMOVDQU qloff(SI), Y4; \
	VMOVDQU qloff2(SI), Y13; \
	VMOVDQU qhoff(SI), Y12; \
	VPAND Y15, Y4, Y6; \
	VPAND Y14, Y12, Y10; \
	VPSLLW $4, Y10, Y10; \
	VPOR Y10, Y6, Y6; \
	Q6_K4_BLOCK(x0, s0, s1, f0); \
	VPAND Y15, Y13, Y6; \
	VPSRLW $2, Y12, Y10; \
	VPAND Y14, Y10, Y10; \
	VPSLLW $4, Y10, Y10; \
	VPOR Y10, Y6, Y6; \
	Q6_K4_BLOCK(x1, s2, s3, f1); \
	VPSRLW $4, Y4, Y6; \
	VPAND Y15, Y6, Y6; \
	VPSRLW $4, Y12, Y10; \
	VPAND Y14, Y10, Y10; \
	VPSLLW $4, Y10, Y10; \
	VPOR Y10, Y6, Y6; \
	Q6_K4_BLOCK(x2, s4, s5, f2); \
	VPSRLW $4, Y13, Y6; \
	VPAND Y15, Y6, Y6; \
	VPSRLW $6, Y12, Y10; \
	VPAND Y14, Y10, Y10; \
	VPSLLW $4, Y10, Y10; \
	VPOR Y10, Y6, Y6; \
	Q6_K4_BLOCK(x3, s6, s7, f3)

// Q6_K4_FACTORS: d·dx of the eight blocks of the row at R12 (d in Y9) to
// foff(SP); R12 moves to the next row's scales.
#define Q6_K4_FACTORS(foff) \
	VMULPS (R12), Y9, Y7; \
	VMOVUPS Y7, foff(SP); \
	ADDQ R10, R12

// func qdot4Q6_KAVX2(w *byte, xq *int8, xd *float32, k, nsuper int, out *[4]float32)
// Four rows of k quantized activations (row t at xq+t·k, its scales at
// xd+t·k/32) against one Q6_K weight row: each activation block's quants
// are decoded once and taken for the four rows. Stack: row t's d·dx[b] at
// 32t+4b, the sixteen scales as int16 at 128(SP).
TEXT ·qdot4Q6_KAVX2(SB), NOSPLIT, $160-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nsuper+32(FP), CX
	MOVQ R9, R10
	SHRQ $3, R10
	LEAQ (R9)(R9*2), R13
	MASK0F
	MOVQ $0x0303030303030303, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14
	MOVQ $0x2020202020202020, AX
	VMOVQ AX, X11
	VPBROADCASTQ X11, Y11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

q6_kx4loop:
	TESTQ CX, CX
	JLE   q6_kx4done
	VPBROADCASTW 208(SI), X9
	VCVTPH2PS X9, Y9
	MOVQ R8, R12
	Q6_K4_FACTORS(0)
	Q6_K4_FACTORS(32)
	Q6_K4_FACTORS(64)
	Q6_K4_FACTORS(96)
	VPMOVSXBW 192(SI), Y7
	VMOVDQU Y7, 128(SP)
	Q6_K4_HALF(0, 32, 128, 0, 32, 64, 96, 128, 130, 132, 134, 136, 138, 140, 142, 0, 4, 8, 12)
	Q6_K4_HALF(64, 96, 160, 128, 160, 192, 224, 144, 146, 148, 150, 152, 154, 156, 158, 16, 20, 24, 28)
	ADDQ $210, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q6_kx4loop

q6_kx4done:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// qperm puts the dwords of the packed quants back in element order (after
// VPACKUSDW and VPACKUSWB interleave the 128-bit lanes).
DATA qperm<>+0(SB)/8, $0x0000000400000000
DATA qperm<>+8(SB)/8, $0x0000000500000001
DATA qperm<>+16(SB)/8, $0x0000000600000002
DATA qperm<>+24(SB)/8, $0x0000000700000003
GLOBL qperm<>(SB), RODATA|NOPTR, $32

// QUANT8: reg = the low bytes (0..255 in 32-bit lanes) of
// int32(f + ±0.5), f = reg·id (Y7), the sign of ±0.5 that of f; Y9 += the
// same bytes sign-extended (Y8 clobbered).
#define QUANT8(reg) \
	VMULPS Y7, reg, reg; \
	VANDPS Y14, reg, Y8; \
	VORPS Y13, Y8, Y8; \
	VADDPS Y8, reg, reg; \
	VCVTTPS2DQ reg, reg; \
	VPAND Y12, reg, reg; \
	VPSLLD $24, reg, Y8; \
	VPSRAD $24, Y8, Y8; \
	VPADDD Y8, Y9, Y9

// func quantizeRowAVX2(x *float32, qs *int8, d, s *float32, nblocks int)
// quantizeRowGeneric's operations on eight lanes: amax as the largest
// magnitude bit pattern (VPMAXUD; a NaN wins), id = 127/amax (0 when amax
// is 0), q = int8(int32(x·id ± 0.5)) (the low byte, as Go converts),
// d = amax/127, s = d·Σq.
TEXT ·quantizeRowAVX2(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ qs+8(FP), DI
	MOVQ d+16(FP), R8
	MOVQ s+24(FP), R9
	MOVQ nblocks+32(FP), CX
	MOVL $0x7fffffff, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x80000000, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x3f000000, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	MOVL $0xff, AX
	VMOVD AX, X12
	VPBROADCASTD X12, Y12
	VMOVDQU qperm<>(SB), Y11
	MOVL $0x42fe0000, AX
	VMOVD AX, X10

quantloop:
	TESTQ CX, CX
	JLE   quantdone
	VMOVUPS 0(SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	VPAND Y15, Y0, Y4
	VPAND Y15, Y1, Y5
	VPMAXUD Y5, Y4, Y4
	VPAND Y15, Y2, Y5
	VPMAXUD Y5, Y4, Y4
	VPAND Y15, Y3, Y5
	VPMAXUD Y5, Y4, Y4
	VEXTRACTI128 $1, Y4, X5
	VPMAXUD X5, X4, X4
	VPSHUFD $0x4e, X4, X5
	VPMAXUD X5, X4, X4
	VPSHUFD $0xb1, X4, X5
	VPMAXUD X5, X4, X4
	VXORPS X7, X7, X7
	VUCOMISS X7, X4
	JNE  quantnonzero
	JPS  quantnonzero
	JMP  quantscaled

quantnonzero:
	VDIVSS X4, X10, X7

quantscaled:
	VBROADCASTSS X7, Y7
	VPXOR Y9, Y9, Y9
	QUANT8(Y0)
	QUANT8(Y1)
	QUANT8(Y2)
	QUANT8(Y3)
	VPACKUSDW Y1, Y0, Y0
	VPACKUSDW Y3, Y2, Y2
	VPACKUSWB Y2, Y0, Y0
	VPERMD Y0, Y11, Y0
	VMOVDQU Y0, (DI)
	VEXTRACTI128 $1, Y9, X8
	VPADDD X8, X9, X9
	VPSHUFD $0x4e, X9, X8
	VPADDD X8, X9, X9
	VPSHUFD $0xb1, X9, X8
	VPADDD X8, X9, X9
	VCVTDQ2PS X9, X9
	VDIVSS X10, X4, X5
	VMOVSS X5, (R8)
	VMULSS X9, X5, X5
	VMOVSS X5, (R9)
	ADDQ $128, SI
	ADDQ $32, DI
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ CX
	JMP  quantloop

quantdone:
	VZEROUPPER
	RET

// Four-row kernels of the other 32-element types: the block is decoded
// once into Y4 (as int8, or unsigned for Q4_1 and Q5_1) and QTOK4 (QTOK4U)
// takes it for the four rows. Rows' activation sums (Q4_1, Q5_1) are at BX with the
// scales' strides; X9..X12 accumulate m·s of each row.

// MIN4: X9..X12 += f16(moff(SI)) · s of the four rows.
#define MIN4(moff) \
	VPBROADCASTW moff(SI), X7; \
	VCVTPH2PS X7, X7; \
	VFMADD231SS (BX), X7, X9; \
	VFMADD231SS (BX)(R10*1), X7, X10; \
	VFMADD231SS (BX)(R10*2), X7, X11; \
	VFMADD231SS (BX)(R12*1), X7, X12

// MIN4_SUMS: X9 = [X9, X10, X11, X12] (lane 0 of each).
#define MIN4_SUMS \
	VUNPCKLPS X10, X9, X9; \
	VUNPCKLPS X12, X11, X11; \
	VMOVLHPS X11, X9, X9

// func qdot4Q4_1AVX2(w *byte, xq *int8, xd, xs *float32, k, nblocks int, out *[4]float32)
// As qdot4Q4_0AVX2 for a Q4_1 weight row.
TEXT ·qdot4Q4_1AVX2(SB), NOSPLIT, $0-56
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), BX
	MOVQ k+32(FP), R9
	MOVQ nblocks+40(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12

q4_1x4loop:
	TESTQ CX, CX
	JLE   q4_1x4done
	NIB32(4, Y4, X4, X5)
	QTOK4U
	MIN4(2)
	ADDQ $4, BX
	ADDQ $20, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q4_1x4loop

q4_1x4done:
	MOVQ out+48(FP), AX
	QDOT4_SUMS
	MIN4_SUMS
	VADDPS X9, X0, X0
	VMOVUPS X0, (AX)
	VZEROUPPER
	RET

// func qdot4Q5_0AVX2(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)
// As qdot4Q4_0AVX2 for a Q5_0 weight row.
TEXT ·qdot4Q5_0AVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nblocks+32(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	MOVQ $0x1010101010101010, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14

q5_0x4loop:
	TESTQ CX, CX
	JLE   q5_0x4done
	NIB32(6, Y4, X4, X5)
	FIFTH(2, Y7)
	VPANDN Y14, Y7, Y7
	VPSUBB Y7, Y4, Y4
	QTOK4
	ADDQ $22, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q5_0x4loop

q5_0x4done:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// func qdot4Q5_1AVX2(w *byte, xq *int8, xd, xs *float32, k, nblocks int, out *[4]float32)
// As qdot4Q4_0AVX2 for a Q5_1 weight row.
TEXT ·qdot4Q5_1AVX2(SB), NOSPLIT, $0-56
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), BX
	MOVQ k+32(FP), R9
	MOVQ nblocks+40(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	MOVQ $0x1010101010101010, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12

q5_1x4loop:
	TESTQ CX, CX
	JLE   q5_1x4done
	NIB32(8, Y4, X4, X5)
	FIFTH(4, Y7)
	VPAND Y14, Y7, Y7
	VPOR Y7, Y4, Y4
	QTOK4U
	MIN4(2)
	ADDQ $4, BX
	ADDQ $24, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q5_1x4loop

q5_1x4done:
	MOVQ out+48(FP), AX
	QDOT4_SUMS
	MIN4_SUMS
	VADDPS X9, X0, X0
	VMOVUPS X0, (AX)
	VZEROUPPER
	RET

// func qdot4IQ4_NLAVX2(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)
// As qdot4Q4_0AVX2 for a IQ4_NL weight row.
TEXT ·qdot4IQ4_NLAVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nblocks+32(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	VMOVDQU iq4nl<>(SB), Y14

iq4nlx4loop:
	TESTQ CX, CX
	JLE   iq4nlx4done
	NIB32(2, Y4, X4, X5)
	VPSHUFB Y4, Y14, Y4
	QTOK4
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  iq4nlx4loop

iq4nlx4done:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// Q3_K4_J: Q3_K_J for qdot4Q3_KAVX2: qs half in Y4, hmask in Y12, Y14 = 3
// bytes, Y13 = 4 bytes (Y10 clobbered); the block for the four rows.
#define Q3_K4_J(lsh, hop, hn, xoff, soff, soff2, f) \
	VPSRLW $lsh, Y4, Y6; \
	VPAND Y14, Y6, Y6; \
	hop $hn, Y12, Y10; \
	VPAND Y13, Y10, Y10; \
	VPOR Y10, Y6, Y6; \
	VPSUBB Y13, Y6, Y6; \
	K16X4_BLOCK(xoff, soff, soff2, f)

// func qdot4Q3_KAVX2(w *byte, xq *int8, xd *float32, k, nsuper int, out *[4]float32)
// As qdot4Q6_KAVX2 for a Q3_K weight row (stack: row t's d·dx[b] at
// 32t+4b, the scales as int16 at 128(SP), as bytes at 160(SP)).
TEXT ·qdot4Q3_KAVX2(SB), NOSPLIT, $176-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nsuper+32(FP), CX
	MOVQ R9, R10
	SHRQ $3, R10
	LEAQ (R9)(R9*2), R13
	MOVQ $0x0303030303030303, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14
	MOVQ $0x0404040404040404, AX
	VMOVQ AX, X13
	VPBROADCASTQ X13, Y13
	MOVQ $0x2020202020202020, AX
	VMOVQ AX, X11
	VPBROADCASTQ X11, Y11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

q3_kx4loop:
	TESTQ CX, CX
	JLE   q3_kx4done
	MOVL 96(SI), AX
	MOVL 100(SI), BX
	MOVL 104(SI), DX
	Q3_K_SCALEWORD(AX, 0, 0, 160(SP), R11, R12)
	Q3_K_SCALEWORD(BX, 0, 2, 164(SP), R11, R12)
	Q3_K_SCALEWORD(AX, 4, 4, 168(SP), R11, R12)
	Q3_K_SCALEWORD(BX, 4, 6, 172(SP), R11, R12)
	VMOVDQU 160(SP), X7
	VPSUBB X11, X7, X7
	VPMOVSXBW X7, Y7
	VMOVDQU Y7, 128(SP)
	VPBROADCASTW 108(SI), X9
	VCVTPH2PS X9, Y9
	MOVQ R8, R12
	Q6_K4_FACTORS(0)
	Q6_K4_FACTORS(32)
	Q6_K4_FACTORS(64)
	Q6_K4_FACTORS(96)
	VMOVDQU 0(SI), Y12
	VMOVDQU 32(SI), Y4
	Q3_K4_J(0, VPSLLW, 2, 0, 128, 130, 0)
	Q3_K4_J(2, VPSLLW, 1, 32, 132, 134, 4)
	Q3_K4_J(4, VPSRLW, 0, 64, 136, 138, 8)
	Q3_K4_J(6, VPSRLW, 1, 96, 140, 142, 12)
	VMOVDQU 64(SI), Y4
	Q3_K4_J(0, VPSRLW, 2, 128, 144, 146, 16)
	Q3_K4_J(2, VPSRLW, 3, 160, 148, 150, 20)
	Q3_K4_J(4, VPSRLW, 4, 192, 152, 154, 24)
	Q3_K4_J(6, VPSRLW, 5, 224, 156, 158, 28)
	ADDQ $110, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q3_kx4loop

q3_kx4done:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// Q2_K4_ROW: one row of a Q2_K block: acc += d·dx · Σ_k sc[k]·Σ q·x −
// dmin·dx · Σ_k m[k]·Σ x, q in Y6, the scale pair in Y8, the min pair in
// Y5, Y15 = 1 bytes (Y7, Y9, Y10 clobbered).
#define Q2_K4_ROW(xaddr, f, fm, acc) \
	VMOVDQU xaddr, Y7; \
	VPMADDUBSW Y7, Y6, Y9; \
	VPMADDWD Y8, Y9, Y9; \
	VCVTDQ2PS Y9, Y9; \
	VBROADCASTSS f(SP), Y10; \
	VFMADD231PS Y10, Y9, acc; \
	VPMADDUBSW Y7, Y15, Y7; \
	VPMADDWD Y5, Y7, Y7; \
	VCVTDQ2PS Y7, Y7; \
	VBROADCASTSS fm(SP), Y10; \
	VFNMADD231PS Y10, Y7, acc

// Q2_K4_J: activation block 4h+j (Q2_K_J) for the four rows: qs half in
// Y4, Y14 = 3 bytes.
#define Q2_K4_J(lsh, xoff, soff, soff2, moff, moff2, f, fm) \
	VPSRLW $lsh, Y4, Y6; \
	VPAND Y14, Y6, Y6; \
	PAIR16TO(soff, soff2, Y8, X8, X9); \
	PAIR16TO(moff, moff2, Y5, X5, X9); \
	Q2_K4_ROW(xoff(DI), f, fm, Y0); \
	Q2_K4_ROW(xoff(DI)(R9*1), f+32, fm+32, Y1); \
	Q2_K4_ROW(xoff(DI)(R9*2), f+64, fm+64, Y2); \
	Q2_K4_ROW(xoff(DI)(R13*1), f+96, fm+96, Y3)

// func qdot4Q2_KAVX2(w *byte, xq *int8, xd *float32, k, nsuper int, out *[4]float32)
// As qdot4Q6_KAVX2 for a Q2_K weight row. Stack: row t's d·dx[b] at
// 32t+4b, dmin·dx[b] at 128+32t+4b, the scales as int16 at 256(SP), the
// mins at 288(SP).
TEXT ·qdot4Q2_KAVX2(SB), NOSPLIT, $320-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nsuper+32(FP), CX
	MOVQ R9, R10
	SHRQ $3, R10
	LEAQ (R9)(R9*2), R13
	MOVQ $0x0303030303030303, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14
	MOVQ $0x0101010101010101, AX
	VMOVQ AX, X15
	VPBROADCASTQ X15, Y15
	MOVQ $0x0f0f0f0f0f0f0f0f, AX
	VMOVQ AX, X11
	VPBROADCASTQ X11, Y11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

q2_kx4loop:
	TESTQ CX, CX
	JLE   q2_kx4done
	VPBROADCASTW 80(SI), X9
	VCVTPH2PS X9, Y9
	MOVQ R8, R12
	Q6_K4_FACTORS(0)
	Q6_K4_FACTORS(32)
	Q6_K4_FACTORS(64)
	Q6_K4_FACTORS(96)
	VPBROADCASTW 82(SI), X9
	VCVTPH2PS X9, Y9
	MOVQ R8, R12
	Q6_K4_FACTORS(128)
	Q6_K4_FACTORS(160)
	Q6_K4_FACTORS(192)
	Q6_K4_FACTORS(224)
	VMOVDQU 0(SI), X7
	VPAND X11, X7, X10
	VPMOVZXBW X10, Y10
	VMOVDQU Y10, 256(SP)
	VPSRLW $4, X7, X10
	VPAND X11, X10, X10
	VPMOVZXBW X10, Y10
	VMOVDQU Y10, 288(SP)
	VMOVDQU 16(SI), Y4
	Q2_K4_J(0, 0, 256, 258, 288, 290, 0, 128)
	Q2_K4_J(2, 32, 260, 262, 292, 294, 4, 132)
	Q2_K4_J(4, 64, 264, 266, 296, 298, 8, 136)
	Q2_K4_J(6, 96, 268, 270, 300, 302, 12, 140)
	VMOVDQU 48(SI), Y4
	Q2_K4_J(0, 128, 272, 274, 304, 306, 16, 144)
	Q2_K4_J(2, 160, 276, 278, 308, 310, 20, 148)
	Q2_K4_J(4, 192, 280, 282, 312, 314, 24, 152)
	Q2_K4_J(6, 224, 284, 286, 316, 318, 28, 156)
	ADDQ $84, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q2_kx4loop

q2_kx4done:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// VNNI variants of the hottest four-row kernels (the K-quants of Q4_K_M
// and Q5_K_M prompts): VPDPBUSD sums the four u8·s8 products of each
// 32-bit lane as VPMADDUBSW + VPMADDWD do (no pair saturates: quants ≤ 31),
// so every lane, and the result, is the same.

// Q4_K_SUBV: Q4_K_SUB with VPDPBUSD.
#define Q4_K_SUBV(wreg, xaddr, foff, acc) \
	VPXOR Y14, Y14, Y14; \
	VPDPBUSD xaddr, wreg, Y14; \
	VCVTDQ2PS Y14, Y14; \
	VBROADCASTSS foff(SP), Y15; \
	VFMADD231PS Y15, Y14, acc

#define Q4_K_JV(wreg, xoff, f0, f1, f2, f3) \
	Q4_K_SUBV(wreg, xoff(DI), f0, Y0); \
	Q4_K_SUBV(wreg, xoff(DI)(R9*1), f1, Y1); \
	Q4_K_SUBV(wreg, xoff(DI)(R9*2), f2, Y2); \
	Q4_K_SUBV(wreg, xoff(DI)(R13*1), f3, Y3)

// func qdot4Q4_KVNNI(w *byte, xq *int8, xd, xs *float32, k, nsuper int, out *[4]float32)
// qdot4Q4_KAVX2 with VPDPBUSD (AVX512-VNNI on 256-bit registers) for
// VPMADDUBSW + VPMADDWD: the same int32 lanes, so the same bits.
TEXT ·qdot4Q4_KVNNI(SB), NOSPLIT, $192-56
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), BX
	SUBQ R8, BX
	MOVQ k+32(FP), R9
	MOVQ nsuper+40(FP), CX
	MOVQ R9, R10
	SHRQ $3, R10
	MASK0F
	VMOVDQU Y15, 128(SP)
	ONES16
	VMOVDQU Y13, 160(SP)
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

q4_kx4vloop:
	TESTQ CX, CX
	JLE   q4_kx4vdone
	// Scales and mins as in qdotQ4_KAVX2, with AX = u0, DX = u1, R13 = u2.
	MOVL 4(SI), AX
	MOVL 8(SI), DX
	MOVL 12(SI), R13
	MOVL AX, R11
	ANDL $0x3f3f3f3f, R11
	MOVL R13, R12
	ANDL $0x0f0f0f0f, R12
	SHRL $6, AX
	ANDL $0x03030303, AX
	SHLL $4, AX
	ORL  AX, R12
	SHLQ $32, R12
	ORQ  R12, R11
	VMOVQ R11, X4
	MOVL DX, R11
	ANDL $0x3f3f3f3f, R11
	SHRL $4, R13
	ANDL $0x0f0f0f0f, R13
	SHRL $6, DX
	ANDL $0x03030303, DX
	SHLL $4, DX
	ORL  DX, R13
	SHLQ $32, R13
	ORQ  R13, R11
	VMOVQ R11, X5
	VPMOVZXBD X4, Y4
	VCVTDQ2PS Y4, Y4
	VPMOVZXBD X5, Y5
	VCVTDQ2PS Y5, Y5
	VPBROADCASTW 0(SI), X14
	VCVTPH2PS X14, Y14
	VMULPS Y14, Y4, Y4
	VPBROADCASTW 2(SI), X14
	VCVTPH2PS X14, Y14
	VMULPS Y14, Y5, Y5
	MOVQ R8, R12
	Q4_K_ROW(0, Y0)
	Q4_K_ROW(32, Y1)
	Q4_K_ROW(64, Y2)
	Q4_K_ROW(96, Y3)
	Q4_K_UNPACK(16, Y6, Y7)
	Q4_K_UNPACK(48, Y8, Y9)
	Q4_K_UNPACK(80, Y10, Y11)
	Q4_K_UNPACK(112, Y12, Y13)
	LEAQ (R9)(R9*2), R13
	Q4_K_JV(Y6, 0, 0, 32, 64, 96)
	Q4_K_JV(Y7, 32, 4, 36, 68, 100)
	Q4_K_JV(Y8, 64, 8, 40, 72, 104)
	Q4_K_JV(Y9, 96, 12, 44, 76, 108)
	Q4_K_JV(Y10, 128, 16, 48, 80, 112)
	Q4_K_JV(Y11, 160, 20, 52, 84, 116)
	Q4_K_JV(Y12, 192, 24, 56, 88, 120)
	Q4_K_JV(Y13, 224, 28, 60, 92, 124)
	ADDQ $144, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q4_kx4vloop

q4_kx4vdone:
	MOVQ out+48(FP), AX
	QDOT4_EPILOGUE
	RET

// func qdot4Q5_KVNNI(w *byte, xq *int8, xd, xs *float32, k, nsuper int, out *[4]float32)
// qdot4Q5_KAVX2 with VPDPBUSD (AVX512-VNNI on 256-bit registers) for
// VPMADDUBSW + VPMADDWD: the same int32 lanes, so the same bits.
TEXT ·qdot4Q5_KVNNI(SB), NOSPLIT, $224-56
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), BX
	SUBQ R8, BX
	MOVQ k+32(FP), R9
	MOVQ nsuper+40(FP), CX
	MOVQ R9, R10
	SHRQ $3, R10
	MASK0F
	VMOVDQU Y15, 128(SP)
	ONES16
	VMOVDQU Y13, 160(SP)
	MOVQ $0x1010101010101010, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14
	VMOVDQU Y14, 192(SP)
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

q5_kx4vloop:
	TESTQ CX, CX
	JLE   q5_kx4vdone
	// Scales and mins as in qdotQ4_KAVX2, with AX = u0, DX = u1, R13 = u2.
	MOVL 4(SI), AX
	MOVL 8(SI), DX
	MOVL 12(SI), R13
	MOVL AX, R11
	ANDL $0x3f3f3f3f, R11
	MOVL R13, R12
	ANDL $0x0f0f0f0f, R12
	SHRL $6, AX
	ANDL $0x03030303, AX
	SHLL $4, AX
	ORL  AX, R12
	SHLQ $32, R12
	ORQ  R12, R11
	VMOVQ R11, X4
	MOVL DX, R11
	ANDL $0x3f3f3f3f, R11
	SHRL $4, R13
	ANDL $0x0f0f0f0f, R13
	SHRL $6, DX
	ANDL $0x03030303, DX
	SHLL $4, DX
	ORL  DX, R13
	SHLQ $32, R13
	ORQ  R13, R11
	VMOVQ R11, X5
	VPMOVZXBD X4, Y4
	VCVTDQ2PS Y4, Y4
	VPMOVZXBD X5, Y5
	VCVTDQ2PS Y5, Y5
	VPBROADCASTW 0(SI), X14
	VCVTPH2PS X14, Y14
	VMULPS Y14, Y4, Y4
	VPBROADCASTW 2(SI), X14
	VCVTPH2PS X14, Y14
	VMULPS Y14, Y5, Y5
	MOVQ R8, R12
	Q4_K_ROW(0, Y0)
	Q4_K_ROW(32, Y1)
	Q4_K_ROW(64, Y2)
	Q4_K_ROW(96, Y3)
	VMOVDQU 16(SI), Y15
	Q4_K_UNPACK(48, Y6, Y7)
	Q5_K4_BIT(VPSLLW, 4, Y6, 192(SP))
	Q5_K4_BIT(VPSLLW, 3, Y7, 192(SP))
	Q4_K_UNPACK(80, Y8, Y9)
	Q5_K4_BIT(VPSLLW, 2, Y8, 192(SP))
	Q5_K4_BIT(VPSLLW, 1, Y9, 192(SP))
	Q4_K_UNPACK(112, Y10, Y11)
	Q5_K4_BIT(VPSRLW, 0, Y10, 192(SP))
	Q5_K4_BIT(VPSRLW, 1, Y11, 192(SP))
	Q4_K_UNPACK(144, Y12, Y13)
	Q5_K4_BIT(VPSRLW, 2, Y12, 192(SP))
	Q5_K4_BIT(VPSRLW, 3, Y13, 192(SP))
	LEAQ (R9)(R9*2), R13
	Q4_K_JV(Y6, 0, 0, 32, 64, 96)
	Q4_K_JV(Y7, 32, 4, 36, 68, 100)
	Q4_K_JV(Y8, 64, 8, 40, 72, 104)
	Q4_K_JV(Y9, 96, 12, 44, 76, 108)
	Q4_K_JV(Y10, 128, 16, 48, 80, 112)
	Q4_K_JV(Y11, 160, 20, 52, 84, 116)
	Q4_K_JV(Y12, 192, 24, 56, 88, 120)
	Q4_K_JV(Y13, 224, 28, 60, 92, 124)
	ADDQ $176, SI
	ADDQ $256, DI
	ADDQ $32, R8
	DECQ CX
	JMP  q5_kx4vloop

q5_kx4vdone:
	MOVQ out+48(FP), AX
	QDOT4_EPILOGUE
	RET


// QTOKV, QTOK4V: QTOK, QTOK4 with VPDPBUSD (no pair saturates: |w| ≤ 128,
// |x| ≤ 127).
#define QTOKV(xaddr, daddr, acc) \
	VMOVDQU xaddr, Y7; \
	VPSIGNB Y4, Y7, Y7; \
	VPXOR Y9, Y9, Y9; \
	VPDPBUSD Y7, Y5, Y9; \
	VCVTDQ2PS Y9, Y9; \
	VBROADCASTSS daddr, Y8; \
	VMULPS Y6, Y8, Y8; \
	VFMADD231PS Y8, Y9, acc

#define QTOK4V \
	VPSIGNB Y4, Y4, Y5; \
	VPBROADCASTW (SI), X6; \
	VCVTPH2PS X6, Y6; \
	QTOKV((DI), (R8), Y0); \
	QTOKV((DI)(R9*1), (R8)(R10*1), Y1); \
	QTOKV((DI)(R9*2), (R8)(R10*2), Y2); \
	QTOKV((DI)(R11*1), (R8)(R12*1), Y3)

// func qdot4Q4_0VNNI(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)
// qdot4Q4_0AVX2 with VPDPBUSD (same bits).
TEXT ·qdot4Q4_0VNNI(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nblocks+32(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	MOVQ $0x0808080808080808, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14

q4_0x4vloop:
	TESTQ CX, CX
	JLE   q4_0x4vdone
	VMOVDQU 2(SI), X4
	VPSRLW $4, X4, X5
	VINSERTI128 $1, X5, Y4, Y4
	VPAND Y15, Y4, Y4
	VPSUBB Y14, Y4, Y4
	QTOK4V
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q4_0x4vloop

q4_0x4vdone:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// func qdot4Q8_0VNNI(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)
// qdot4Q8_0AVX2 with VPDPBUSD (same bits).
TEXT ·qdot4Q8_0VNNI(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nblocks+32(FP), CX
	QDOT4_PROLOGUE

q8_0x4vloop:
	TESTQ CX, CX
	JLE   q8_0x4vdone
	VMOVDQU 2(SI), Y4
	QTOK4V
	ADDQ $34, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q8_0x4vloop

q8_0x4vdone:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET


// QTOKUV, QTOK4UV: QTOKU, QTOK4U with VPDPBUSD (Y5 the integer sums).
#define QTOKUV(xaddr, daddr, acc) \
	VPXOR Y5, Y5, Y5; \
	VPDPBUSD xaddr, Y4, Y5; \
	VCVTDQ2PS Y5, Y5; \
	VBROADCASTSS daddr, Y8; \
	VMULPS Y6, Y8, Y8; \
	VFMADD231PS Y8, Y5, acc

#define QTOK4UV \
	VPBROADCASTW (SI), X6; \
	VCVTPH2PS X6, Y6; \
	QTOKUV((DI), (R8), Y0); \
	QTOKUV((DI)(R9*1), (R8)(R10*1), Y1); \
	QTOKUV((DI)(R9*2), (R8)(R10*2), Y2); \
	QTOKUV((DI)(R11*1), (R8)(R12*1), Y3)

// func qdot4Q4_1VNNI(w *byte, xq *int8, xd, xs *float32, k, nblocks int, out *[4]float32)
// qdot4Q4_1AVX2 with VPDPBUSD (same bits).
TEXT ·qdot4Q4_1VNNI(SB), NOSPLIT, $0-56
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), BX
	MOVQ k+32(FP), R9
	MOVQ nblocks+40(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12

q4_1x4vloop:
	TESTQ CX, CX
	JLE   q4_1x4vdone
	NIB32(4, Y4, X4, X5)
	QTOK4UV
	MIN4(2)
	ADDQ $4, BX
	ADDQ $20, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q4_1x4vloop

q4_1x4vdone:
	MOVQ out+48(FP), AX
	QDOT4_SUMS
	MIN4_SUMS
	VADDPS X9, X0, X0
	VMOVUPS X0, (AX)
	VZEROUPPER
	RET

// func qdot4Q5_0VNNI(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)
// qdot4Q5_0AVX2 with VPDPBUSD (same bits).
TEXT ·qdot4Q5_0VNNI(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nblocks+32(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	MOVQ $0x1010101010101010, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14

q5_0x4vloop:
	TESTQ CX, CX
	JLE   q5_0x4vdone
	NIB32(6, Y4, X4, X5)
	FIFTH(2, Y7)
	VPANDN Y14, Y7, Y7
	VPSUBB Y7, Y4, Y4
	QTOK4V
	ADDQ $22, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q5_0x4vloop

q5_0x4vdone:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// func qdot4Q5_1VNNI(w *byte, xq *int8, xd, xs *float32, k, nblocks int, out *[4]float32)
// qdot4Q5_1AVX2 with VPDPBUSD (same bits).
TEXT ·qdot4Q5_1VNNI(SB), NOSPLIT, $0-56
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ xs+24(FP), BX
	MOVQ k+32(FP), R9
	MOVQ nblocks+40(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	MOVQ $0x1010101010101010, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12

q5_1x4vloop:
	TESTQ CX, CX
	JLE   q5_1x4vdone
	NIB32(8, Y4, X4, X5)
	FIFTH(4, Y7)
	VPAND Y14, Y7, Y7
	VPOR Y7, Y4, Y4
	QTOK4UV
	MIN4(2)
	ADDQ $4, BX
	ADDQ $24, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  q5_1x4vloop

q5_1x4vdone:
	MOVQ out+48(FP), AX
	QDOT4_SUMS
	MIN4_SUMS
	VADDPS X9, X0, X0
	VMOVUPS X0, (AX)
	VZEROUPPER
	RET

// func qdot4IQ4_NLVNNI(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)
// qdot4IQ4_NLAVX2 with VPDPBUSD (same bits).
TEXT ·qdot4IQ4_NLVNNI(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ nblocks+32(FP), CX
	QDOT4_PROLOGUE
	MASK0F
	VMOVDQU iq4nl<>(SB), Y14

iq4nlx4vloop:
	TESTQ CX, CX
	JLE   iq4nlx4vdone
	NIB32(2, Y4, X4, X5)
	VPSHUFB Y4, Y14, Y4
	QTOK4V
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  iq4nlx4vloop

iq4nlx4vdone:
	MOVQ out+40(FP), AX
	QDOT4_EPILOGUE
	RET

// func qdot4RowsQ4_0AVX2(w *byte, xq *int8, xd *float32, k, nblocks, rows, groups int, out *float32, ostride int)
// The four-row kernel (QTOK4) for every group of four activation rows and
// every weight row of a worker's range, rows outer: out[(4g+t)·ostride/4 +
// r] = row r · token 4g+t, the same bits as a call per row and group.
// Stack: 0(SP) the row, 8(SP) rows left, 16(SP) the row's first output,
// 24(SP) groups left, 32(SP) and 40(SP) the group's quants and scales.
TEXT ·qdot4RowsQ4_0AVX2(SB), NOSPLIT, $48-72
	MOVQ w+0(FP), AX
	MOVQ AX, 0(SP)
	MOVQ rows+40(FP), AX
	MOVQ AX, 8(SP)
	MOVQ out+56(FP), AX
	MOVQ AX, 16(SP)
	MOVQ k+24(FP), R9
	MOVQ ostride+64(FP), BX
	QDOT4_PROLOGUE
	MASK0F
	MOVQ $0x0808080808080808, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14

r4arow:
	CMPQ 8(SP), $0
	JLE  r4aend
	MOVQ groups+48(FP), AX
	MOVQ AX, 24(SP)
	MOVQ xq+8(FP), AX
	MOVQ AX, 32(SP)
	MOVQ xd+16(FP), AX
	MOVQ AX, 40(SP)
	MOVQ 16(SP), DX

r4agroup:
	CMPQ 24(SP), $0
	JLE  r4anext
	MOVQ 0(SP), SI
	MOVQ 32(SP), DI
	MOVQ 40(SP), R8
	MOVQ nblocks+32(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

r4aloop:
	TESTQ CX, CX
	JLE   r4asum
	VMOVDQU 2(SI), X4
	VPSRLW $4, X4, X5
	VINSERTI128 $1, X5, Y4, Y4
	VPAND Y15, Y4, Y4
	VPSUBB Y14, Y4, Y4
	QTOK4
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  r4aloop

r4asum:
	QDOT4_SUMS
	VMOVSS X0, (DX)
	ADDQ BX, DX
	VEXTRACTPS $1, X0, (DX)
	ADDQ BX, DX
	VEXTRACTPS $2, X0, (DX)
	ADDQ BX, DX
	VEXTRACTPS $3, X0, (DX)
	ADDQ BX, DX
	MOVQ R9, AX
	SHLQ $2, AX
	ADDQ AX, 32(SP)
	MOVQ R10, AX
	SHLQ $2, AX
	ADDQ AX, 40(SP)
	DECQ 24(SP)
	JMP  r4agroup

r4anext:
	MOVQ SI, 0(SP)
	ADDQ $4, 16(SP)
	DECQ 8(SP)
	JMP  r4arow

r4aend:
	VZEROUPPER
	RET

// func qdot4RowsQ4_0VNNI(w *byte, xq *int8, xd *float32, k, nblocks, rows, groups int, out *float32, ostride int)
// The four-row kernel (QTOK4V) for every group of four activation rows and
// every weight row of a worker's range, rows outer: out[(4g+t)·ostride/4 +
// r] = row r · token 4g+t, the same bits as a call per row and group.
// Stack: 0(SP) the row, 8(SP) rows left, 16(SP) the row's first output,
// 24(SP) groups left, 32(SP) and 40(SP) the group's quants and scales.
TEXT ·qdot4RowsQ4_0VNNI(SB), NOSPLIT, $48-72
	MOVQ w+0(FP), AX
	MOVQ AX, 0(SP)
	MOVQ rows+40(FP), AX
	MOVQ AX, 8(SP)
	MOVQ out+56(FP), AX
	MOVQ AX, 16(SP)
	MOVQ k+24(FP), R9
	MOVQ ostride+64(FP), BX
	QDOT4_PROLOGUE
	MASK0F
	MOVQ $0x0808080808080808, AX
	VMOVQ AX, X14
	VPBROADCASTQ X14, Y14

r4vrow:
	CMPQ 8(SP), $0
	JLE  r4vend
	MOVQ groups+48(FP), AX
	MOVQ AX, 24(SP)
	MOVQ xq+8(FP), AX
	MOVQ AX, 32(SP)
	MOVQ xd+16(FP), AX
	MOVQ AX, 40(SP)
	MOVQ 16(SP), DX

r4vgroup:
	CMPQ 24(SP), $0
	JLE  r4vnext
	MOVQ 0(SP), SI
	MOVQ 32(SP), DI
	MOVQ 40(SP), R8
	MOVQ nblocks+32(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

r4vloop:
	TESTQ CX, CX
	JLE   r4vsum
	VMOVDQU 2(SI), X4
	VPSRLW $4, X4, X5
	VINSERTI128 $1, X5, Y4, Y4
	VPAND Y15, Y4, Y4
	VPSUBB Y14, Y4, Y4
	QTOK4V
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $4, R8
	DECQ CX
	JMP  r4vloop

r4vsum:
	QDOT4_SUMS
	VMOVSS X0, (DX)
	ADDQ BX, DX
	VEXTRACTPS $1, X0, (DX)
	ADDQ BX, DX
	VEXTRACTPS $2, X0, (DX)
	ADDQ BX, DX
	VEXTRACTPS $3, X0, (DX)
	ADDQ BX, DX
	MOVQ R9, AX
	SHLQ $2, AX
	ADDQ AX, 32(SP)
	MOVQ R10, AX
	SHLQ $2, AX
	ADDQ AX, 40(SP)
	DECQ 24(SP)
	JMP  r4vgroup

r4vnext:
	MOVQ SI, 0(SP)
	ADDQ $4, 16(SP)
	DECQ 8(SP)
	JMP  r4vrow

r4vend:
	VZEROUPPER
	RET
