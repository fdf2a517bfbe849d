#include "textflag.h"

// Constants of the vectorised exp (see expf in exp.go).
DATA expc<>+0(SB)/4, $0x3fb8aa3b  // log2(e)
DATA expc<>+4(SB)/4, $0x3f318000  // ln2 high part
DATA expc<>+8(SB)/4, $0xb95e8083  // ln2 low part
DATA expc<>+12(SB)/4, $0x3ab60b61 // 1/720
DATA expc<>+16(SB)/4, $0x3c088889 // 1/120
DATA expc<>+20(SB)/4, $0x3d2aaaab // 1/24
DATA expc<>+24(SB)/4, $0x3e2aaaab // 1/6
DATA expc<>+28(SB)/4, $0x3f000000 // 1/2
DATA expc<>+32(SB)/4, $0x3f800000 // 1
DATA expc<>+36(SB)/4, $0xc2aea8f6 // -87.33, the smallest argument kept
GLOBL expc<>(SB), RODATA|NOPTR, $40

// func expSubAVX2(x *float32, n int, m float32) float32
// x[i] = e^(x[i]-m) for n elements (a multiple of 8, all x[i] ≤ m), and
// returns their sum. Same method as expf: x = k·ln2 + r, degree-6
// polynomial for e^r, k added to the exponent bits.
TEXT ·expSubAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Y15
	VBROADCASTSS expc<>+0(SB), Y14
	VBROADCASTSS expc<>+4(SB), Y13
	VBROADCASTSS expc<>+8(SB), Y12
	VBROADCASTSS expc<>+12(SB), Y11
	VBROADCASTSS expc<>+16(SB), Y10
	VBROADCASTSS expc<>+20(SB), Y9
	VBROADCASTSS expc<>+24(SB), Y8
	VBROADCASTSS expc<>+28(SB), Y7
	VBROADCASTSS expc<>+32(SB), Y6
	VBROADCASTSS expc<>+36(SB), Y5
	VXORPS Y4, Y4, Y4 // running sum

exploop:
	CMPQ CX, $8
	JL   expdone
	VMOVUPS (SI), Y0
	VSUBPS Y15, Y0, Y0          // y = x - m
	VMAXPS Y5, Y0, Y0           // clamp below
	VMULPS Y14, Y0, Y1          // y·log2e
	VROUNDPS $0, Y1, Y1         // k (nearest)
	VFNMADD231PS Y13, Y1, Y0    // r = y - k·ln2hi
	VFNMADD231PS Y12, Y1, Y0    // r -= k·ln2lo
	VMOVAPS Y11, Y2             // p = 1/720
	VFMADD213PS Y10, Y0, Y2     // p = p·r + 1/120
	VFMADD213PS Y9, Y0, Y2      // p = p·r + 1/24
	VFMADD213PS Y8, Y0, Y2      // p = p·r + 1/6
	VFMADD213PS Y7, Y0, Y2      // p = p·r + 1/2
	VFMADD213PS Y6, Y0, Y2      // p = p·r + 1
	VFMADD213PS Y6, Y0, Y2      // p = p·r + 1
	VCVTPS2DQ Y1, Y1            // k as int32
	VPSLLD $23, Y1, Y1
	VPADDD Y1, Y2, Y2           // p·2^k
	VMOVUPS Y2, (SI)
	VADDPS Y2, Y4, Y4
	ADDQ $32, SI
	SUBQ $8, CX
	JMP  exploop

expdone:
	VEXTRACTF128 $1, Y4, X1
	VADDPS X1, X4, X4
	VHADDPS X4, X4, X4
	VHADDPS X4, X4, X4
	VZEROUPPER
	MOVSS X4, ret+24(FP)
	RET

// func scoresAVX2(q, k *float32, stride, hd, nblocks int, scale float32, out *float32)
// For nblocks blocks of 8 keys (rows stride bytes apart, hd a multiple of
// 8): out[j] = scale·(q · key j). Eight dot products run side by side and
// are folded into one vector of eight sums.
TEXT ·scoresAVX2(SB), NOSPLIT, $0-56
	MOVQ q+0(FP), SI
	MOVQ k+8(FP), DI
	MOVQ stride+16(FP), R8
	MOVQ hd+24(FP), R14
	MOVQ nblocks+32(FP), DX
	VBROADCASTSS scale+40(FP), Y15
	MOVQ out+48(FP), R9
	LEAQ (R8)(R8*2), R12       // 3·stride
	SHLQ $2, R14               // hd in bytes

blockloop:
	CMPQ DX, $0
	JE   scoresdone
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	XORQ R10, R10              // byte offset within the head

chunkloop:
	CMPQ R10, R14
	JGE  fold
	VMOVUPS (SI)(R10*1), Y8
	LEAQ (DI)(R10*1), R11      // key 0, this chunk
	LEAQ (R11)(R8*4), R13      // key 4, this chunk
	VFMADD231PS (R11), Y8, Y0
	VFMADD231PS (R11)(R8*1), Y8, Y1
	VFMADD231PS (R11)(R8*2), Y8, Y2
	VFMADD231PS (R11)(R12*1), Y8, Y3
	VFMADD231PS (R13), Y8, Y4
	VFMADD231PS (R13)(R8*1), Y8, Y5
	VFMADD231PS (R13)(R8*2), Y8, Y6
	VFMADD231PS (R13)(R12*1), Y8, Y7
	ADDQ $32, R10
	JMP  chunkloop

fold:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	VHADDPS Y2, Y0, Y0         // [s0 s1 s2 s3 | s0' s1' s2' s3']
	VHADDPS Y6, Y4, Y4         // [s4 s5 s6 s7 | s4' s5' s6' s7']
	VPERM2F128 $0x20, Y4, Y0, Y1
	VPERM2F128 $0x31, Y4, Y0, Y2
	VADDPS Y2, Y1, Y1
	VMULPS Y15, Y1, Y1
	VMOVUPS Y1, (R9)
	ADDQ $32, R9
	LEAQ (DI)(R8*8), DI
	DECQ DX
	JMP  blockloop

scoresdone:
	VZEROUPPER
	RET

// func wsumAVX2(out, v *float32, stride, hd int, w *float32, npos int)
// out[0:hd] = Σ_p w[p]·v[p·stride bytes][0:hd], hd a multiple of 8, for
// each 8-wide chunk of the head in turn, two positions per step.
TEXT ·wsumAVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), R9
	MOVQ v+8(FP), DI
	MOVQ stride+16(FP), R8
	MOVQ hd+24(FP), R14
	MOVQ w+32(FP), SI
	MOVQ npos+40(FP), DX
	SHLQ $2, R14
	XORQ R10, R10

wchunk:
	CMPQ R10, R14
	JGE  wdone
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	LEAQ (DI)(R10*1), R11      // value row 0, this chunk
	XORQ AX, AX                // position
	MOVQ DX, CX

wpos2:
	CMPQ CX, $2
	JL   wpos1
	VBROADCASTSS (SI)(AX*4), Y2
	VBROADCASTSS 4(SI)(AX*4), Y3
	VFMADD231PS (R11), Y2, Y0
	VFMADD231PS (R11)(R8*1), Y3, Y1
	LEAQ (R11)(R8*2), R11
	ADDQ $2, AX
	SUBQ $2, CX
	JMP  wpos2

wpos1:
	CMPQ CX, $1
	JL   wstore
	VBROADCASTSS (SI)(AX*4), Y2
	VFMADD231PS (R11), Y2, Y0

wstore:
	VADDPS Y1, Y0, Y0
	VMOVUPS Y0, (R9)(R10*1)
	ADDQ $32, R10
	JMP  wchunk

wdone:
	VZEROUPPER
	RET
