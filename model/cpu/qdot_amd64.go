package cpu

import (
	"github.com/m40llm/m40llm/gguf"
	"golang.org/x/sys/cpu"
)

// useVNNI selects the VPDPBUSD variants of some four-row kernels
// (AVX512-VNNI on 256-bit registers: AVX512VL).
var useVNNI = useAVX2 && cpu.X86.HasAVX512VNNI && cpu.X86.HasAVX512VL

//go:noescape
func qdotQ4_0AVX2(w *byte, xq *int8, xd *float32, nblocks int) float32

//go:noescape
func qdotQ4_1AVX2(w *byte, xq *int8, xd, xs *float32, nblocks int) float32

//go:noescape
func qdotQ5_0AVX2(w *byte, xq *int8, xd *float32, nblocks int) float32

//go:noescape
func qdotQ5_1AVX2(w *byte, xq *int8, xd, xs *float32, nblocks int) float32

//go:noescape
func qdotIQ4_NLAVX2(w *byte, xq *int8, xd *float32, nblocks int) float32

//go:noescape
func qdotQ8_0AVX2(w *byte, xq *int8, xd *float32, nblocks int) float32

//go:noescape
func qdotQ4_KAVX2(w *byte, xq *int8, xd, xs *float32, nsuper int) float32

//go:noescape
func qdotQ2_KAVX2(w *byte, xq *int8, xd *float32, nsuper int) float32

//go:noescape
func qdotQ3_KAVX2(w *byte, xq *int8, xd *float32, nsuper int) float32

//go:noescape
func qdotQ5_KAVX2(w *byte, xq *int8, xd, xs *float32, nsuper int) float32

//go:noescape
func qdotQ6_KAVX2(w *byte, xq *int8, xd *float32, nsuper int) float32

//go:noescape
func qdot4Q4_0AVX2(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q8_0AVX2(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q4_KAVX2(w *byte, xq *int8, xd, xs *float32, k, nsuper int, out *[4]float32)

//go:noescape
func qdot4Q4_1AVX2(w *byte, xq *int8, xd, xs *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q5_0AVX2(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q5_1AVX2(w *byte, xq *int8, xd, xs *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4IQ4_NLAVX2(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q2_KAVX2(w *byte, xq *int8, xd *float32, k, nsuper int, out *[4]float32)

//go:noescape
func qdot4Q3_KAVX2(w *byte, xq *int8, xd *float32, k, nsuper int, out *[4]float32)

//go:noescape
func qdot4Q5_KAVX2(w *byte, xq *int8, xd, xs *float32, k, nsuper int, out *[4]float32)

//go:noescape
func qdot4Q4_0VNNI(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q8_0VNNI(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q4_1VNNI(w *byte, xq *int8, xd, xs *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q5_0VNNI(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q5_1VNNI(w *byte, xq *int8, xd, xs *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4IQ4_NLVNNI(w *byte, xq *int8, xd *float32, k, nblocks int, out *[4]float32)

//go:noescape
func qdot4Q4_KVNNI(w *byte, xq *int8, xd, xs *float32, k, nsuper int, out *[4]float32)

//go:noescape
func qdot4Q5_KVNNI(w *byte, xq *int8, xd, xs *float32, k, nsuper int, out *[4]float32)

//go:noescape
func qdot4Q6_KAVX2(w *byte, xq *int8, xd *float32, k, nsuper int, out *[4]float32)

// qdot4 returns row · x for the four activation rows i..i+3 of q, decoding
// each weight block once for the four (every type of hasQDot with AVX2;
// four qdot calls otherwise).
func qdot4(t gguf.Type, row []byte, q *qrows, i int) (out [4]float32) {
	if useAVX2 && qdot4AVX2(t, row, q, i, &out) {
		return out
	}
	for j := range out {
		out[j] = qdot(t, row, q.row(i+j))
	}
	return out
}

// qdot4AVX2 is qdot4 in assembly; it reports false, leaving out alone,
// for a type without a four-row kernel or a row shorter than one block.
// (Called once per weight row and four tokens: the block sizes are
// constants here, not gguf trait lookups.)
func qdot4AVX2(t gguf.Type, row []byte, q *qrows, i int, out *[4]float32) bool {
	k := q.k
	nb, ns := k/qblock, k/256
	if nb == 0 {
		return false
	}
	_ = q.qs[(i+4)*k-1]
	_ = q.d[(i+4)*nb-1]
	_ = q.s[(i+4)*nb-1]
	xq, xd, xs := &q.qs[i*k], &q.d[i*nb], &q.s[i*nb]
	switch t {
	case gguf.TypeQ4_0:
		if useVNNI {
			qdot4Q4_0VNNI(rowStart(row, nb*18), xq, xd, k, nb, out)
		} else {
			qdot4Q4_0AVX2(rowStart(row, nb*18), xq, xd, k, nb, out)
		}
	case gguf.TypeQ4_1:
		if useVNNI {
			qdot4Q4_1VNNI(rowStart(row, nb*20), xq, xd, xs, k, nb, out)
		} else {
			qdot4Q4_1AVX2(rowStart(row, nb*20), xq, xd, xs, k, nb, out)
		}
	case gguf.TypeQ5_0:
		if useVNNI {
			qdot4Q5_0VNNI(rowStart(row, nb*22), xq, xd, k, nb, out)
		} else {
			qdot4Q5_0AVX2(rowStart(row, nb*22), xq, xd, k, nb, out)
		}
	case gguf.TypeQ5_1:
		if useVNNI {
			qdot4Q5_1VNNI(rowStart(row, nb*24), xq, xd, xs, k, nb, out)
		} else {
			qdot4Q5_1AVX2(rowStart(row, nb*24), xq, xd, xs, k, nb, out)
		}
	case gguf.TypeIQ4_NL:
		if useVNNI {
			qdot4IQ4_NLVNNI(rowStart(row, nb*18), xq, xd, k, nb, out)
		} else {
			qdot4IQ4_NLAVX2(rowStart(row, nb*18), xq, xd, k, nb, out)
		}
	case gguf.TypeQ8_0:
		if useVNNI {
			qdot4Q8_0VNNI(rowStart(row, nb*34), xq, xd, k, nb, out)
		} else {
			qdot4Q8_0AVX2(rowStart(row, nb*34), xq, xd, k, nb, out)
		}
	default:
		if ns == 0 {
			return false
		}
		switch t {
		case gguf.TypeQ2_K:
			qdot4Q2_KAVX2(rowStart(row, ns*84), xq, xd, k, ns, out)
		case gguf.TypeQ3_K:
			qdot4Q3_KAVX2(rowStart(row, ns*110), xq, xd, k, ns, out)
		case gguf.TypeQ4_K:
			if useVNNI {
				qdot4Q4_KVNNI(rowStart(row, ns*144), xq, xd, xs, k, ns, out)
			} else {
				qdot4Q4_KAVX2(rowStart(row, ns*144), xq, xd, xs, k, ns, out)
			}
		case gguf.TypeQ5_K:
			if useVNNI {
				qdot4Q5_KVNNI(rowStart(row, ns*176), xq, xd, xs, k, ns, out)
			} else {
				qdot4Q5_KAVX2(rowStart(row, ns*176), xq, xd, xs, k, ns, out)
			}
		case gguf.TypeQ6_K:
			qdot4Q6_KAVX2(rowStart(row, ns*210), xq, xd, k, ns, out)
		default:
			return false
		}
	}
	return true
}

// rowStart returns &row[0] once row is known to hold n > 0 bytes (it
// panics, as indexing does, when it does not).
func rowStart(row []byte, n int) *byte {
	_ = row[n-1]
	return &row[0]
}

// qdot returns row · x for a row stored as t (see hasQDot): the AVX2
// kernels when the CPU has them, else qdotGeneric. The row must hold the
// blocks of len(x.qs) elements.
func qdot(t gguf.Type, row []byte, x qvec) float32 {
	if !useAVX2 || len(x.d) == 0 {
		return qdotGeneric(t, row, x)
	}
	nb := len(x.d)
	_ = x.qs[nb*qblock-1]
	switch t {
	case gguf.TypeQ4_0:
		_ = row[nb*18-1]
		return qdotQ4_0AVX2(&row[0], &x.qs[0], &x.d[0], nb)
	case gguf.TypeQ4_1:
		_ = row[nb*20-1]
		_ = x.s[nb-1]
		return qdotQ4_1AVX2(&row[0], &x.qs[0], &x.d[0], &x.s[0], nb)
	case gguf.TypeQ5_0:
		_ = row[nb*22-1]
		return qdotQ5_0AVX2(&row[0], &x.qs[0], &x.d[0], nb)
	case gguf.TypeQ5_1:
		_ = row[nb*24-1]
		_ = x.s[nb-1]
		return qdotQ5_1AVX2(&row[0], &x.qs[0], &x.d[0], &x.s[0], nb)
	case gguf.TypeIQ4_NL:
		_ = row[nb*18-1]
		return qdotIQ4_NLAVX2(&row[0], &x.qs[0], &x.d[0], nb)
	case gguf.TypeQ8_0:
		_ = row[nb*34-1]
		return qdotQ8_0AVX2(&row[0], &x.qs[0], &x.d[0], nb)
	case gguf.TypeQ2_K:
		ns := nb / 8
		_ = row[ns*84-1]
		return qdotQ2_KAVX2(&row[0], &x.qs[0], &x.d[0], ns)
	case gguf.TypeQ3_K:
		ns := nb / 8
		_ = row[ns*110-1]
		return qdotQ3_KAVX2(&row[0], &x.qs[0], &x.d[0], ns)
	case gguf.TypeQ4_K:
		ns := nb / 8
		_ = row[ns*144-1]
		_ = x.s[ns*8-1]
		return qdotQ4_KAVX2(&row[0], &x.qs[0], &x.d[0], &x.s[0], ns)
	case gguf.TypeQ5_K:
		ns := nb / 8
		_ = row[ns*176-1]
		_ = x.s[ns*8-1]
		return qdotQ5_KAVX2(&row[0], &x.qs[0], &x.d[0], &x.s[0], ns)
	case gguf.TypeQ6_K:
		ns := nb / 8
		_ = row[ns*210-1]
		return qdotQ6_KAVX2(&row[0], &x.qs[0], &x.d[0], ns)
	}
	return qdotGeneric(t, row, x)
}

//go:noescape
func quantizeRowAVX2(x *float32, qs *int8, d, s *float32, nblocks int)

// quantizeRow quantizes x (len a multiple of 32) into dst, as
// quantizeRowGeneric does, bit for bit.
func quantizeRow(dst qvec, x []float32) {
	nb := len(x) / qblock
	if !useAVX2 || nb == 0 {
		quantizeRowGeneric(dst, x)
		return
	}
	_ = dst.qs[nb*qblock-1]
	_ = dst.d[nb-1]
	_ = dst.s[nb-1]
	quantizeRowAVX2(&x[0], &dst.qs[0], &dst.d[0], &dst.s[0], nb)
}

//go:noescape
func qdotRowsQ4_0AVX2(w *byte, xq *int8, xd *float32, nblocks, rows int, out *float32)

//go:noescape
func qdotRowsQ8_0AVX2(w *byte, xq *int8, xd *float32, nblocks, rows int, out *float32)

//go:noescape
func qdotRowsQ4_KAVX2(w *byte, xq *int8, xd, xs *float32, nsuper, rows int, out *float32)

//go:noescape
func qdotRowsQ6_KAVX2(w *byte, xq *int8, xd *float32, nsuper, rows int, out *float32)

// qdotRows sets out[r] = qdot(t, row r, x) for the len(out) rows of
// rowBytes each at the start of raw, in one kernel call, the same bits as
// qdot row by row. It reports false, leaving out alone, for a type
// without such a kernel (every type of hasQDot has one), without AVX2, or
// for rows that are not whole blocks of len(x.qs) elements.
func qdotRows(t gguf.Type, raw []byte, rowBytes int, x qvec, out []float32) bool {
	nb := len(x.d)
	if !useAVX2 || nb == 0 || len(out) == 0 {
		return false
	}
	ns := nb / 8
	var want int
	switch t {
	case gguf.TypeQ4_0, gguf.TypeIQ4_NL:
		want = nb * 18
	case gguf.TypeQ4_1:
		want = nb * 20
	case gguf.TypeQ5_0:
		want = nb * 22
	case gguf.TypeQ5_1:
		want = nb * 24
	case gguf.TypeQ8_0:
		want = nb * 34
	case gguf.TypeQ2_K:
		want = ns * 84
	case gguf.TypeQ3_K:
		want = ns * 110
	case gguf.TypeQ4_K:
		want = ns * 144
	case gguf.TypeQ5_K:
		want = ns * 176
	case gguf.TypeQ6_K:
		want = ns * 210
	default:
		return false
	}
	if rowBytes != want || want == 0 {
		return false
	}
	if nb%8 != 0 {
		switch t {
		case gguf.TypeQ2_K, gguf.TypeQ3_K, gguf.TypeQ4_K, gguf.TypeQ5_K, gguf.TypeQ6_K:
			return false
		}
	}
	_ = raw[len(out)*rowBytes-1]
	_ = x.qs[nb*qblock-1]
	_ = x.s[nb-1]
	w, xq, xd, xs, rows, o := &raw[0], &x.qs[0], &x.d[0], &x.s[0], len(out), &out[0]
	switch t {
	case gguf.TypeQ4_0:
		qdotRowsQ4_0AVX2(w, xq, xd, nb, rows, o)
	case gguf.TypeQ8_0:
		qdotRowsQ8_0AVX2(w, xq, xd, nb, rows, o)
	case gguf.TypeQ4_K:
		qdotRowsQ4_KAVX2(w, xq, xd, xs, ns, rows, o)
	case gguf.TypeQ6_K:
		qdotRowsQ6_KAVX2(w, xq, xd, ns, rows, o)
	case gguf.TypeQ4_1:
		qdotRowsQ4_1AVX2(w, rowBytes, xq, xd, xs, nb, rows, o)
	case gguf.TypeQ5_0:
		qdotRowsQ5_0AVX2(w, rowBytes, xq, xd, nb, rows, o)
	case gguf.TypeQ5_1:
		qdotRowsQ5_1AVX2(w, rowBytes, xq, xd, xs, nb, rows, o)
	case gguf.TypeIQ4_NL:
		qdotRowsIQ4_NLAVX2(w, rowBytes, xq, xd, nb, rows, o)
	case gguf.TypeQ5_K:
		qdotRowsQ5_KAVX2(w, rowBytes, xq, xd, xs, ns, rows, o)
	case gguf.TypeQ3_K:
		qdotRowsQ3_KAVX2(w, rowBytes, xq, xd, ns, rows, o)
	case gguf.TypeQ2_K:
		qdotRowsQ2_KAVX2(w, rowBytes, xq, xd, ns, rows, o)
	}
	return true
}

//go:noescape
func qdotRowsQ4_1AVX2(w *byte, stride int, xq *int8, xd, xs *float32, nblocks, rows int, out *float32)

//go:noescape
func qdotRowsQ5_0AVX2(w *byte, stride int, xq *int8, xd *float32, nblocks, rows int, out *float32)

//go:noescape
func qdotRowsQ5_1AVX2(w *byte, stride int, xq *int8, xd, xs *float32, nblocks, rows int, out *float32)

//go:noescape
func qdotRowsIQ4_NLAVX2(w *byte, stride int, xq *int8, xd *float32, nblocks, rows int, out *float32)

//go:noescape
func qdotRowsQ5_KAVX2(w *byte, stride int, xq *int8, xd, xs *float32, nsuper, rows int, out *float32)

//go:noescape
func qdotRowsQ3_KAVX2(w *byte, stride int, xq *int8, xd *float32, nsuper, rows int, out *float32)

//go:noescape
func qdotRowsQ2_KAVX2(w *byte, stride int, xq *int8, xd *float32, nsuper, rows int, out *float32)

//go:noescape
func qdot4RowsQ4_0AVX2(w *byte, xq *int8, xd *float32, k, nblocks, rows, groups int, out *float32, ostride int)

//go:noescape
func qdot4RowsQ4_0VNNI(w *byte, xq *int8, xd *float32, k, nblocks, rows, groups int, out *float32, ostride int)

// qdot4Rows sets out[(4g+t)·cols + r] = qdot4(t, row r, q, 4g)[t] for the
// rows of rowBytes each at the start of raw (rows of them) and the groups
// of four activation rows of q, in one kernel call, the same bits as
// qdot4 per row and group. It reports false, leaving out alone, for a type
// without such a kernel (Q4_0 only so far), without AVX2, or for rows that
// are not whole blocks of q.k elements.
func qdot4Rows(t gguf.Type, raw []byte, rowBytes, rows int, q *qrows, groups int, out []float32, cols int) bool {
	k := q.k
	nb := k / qblock
	if !useAVX2 || t != gguf.TypeQ4_0 || nb == 0 || rows == 0 || groups == 0 || rowBytes != nb*18 || rows > cols {
		return false
	}
	_ = raw[rows*rowBytes-1]
	_ = q.qs[4*groups*k-1]
	_ = q.d[4*groups*nb-1]
	_ = out[(4*groups-1)*cols+rows-1]
	if useVNNI {
		qdot4RowsQ4_0VNNI(&raw[0], &q.qs[0], &q.d[0], k, nb, rows, groups, &out[0], 4*cols)
	} else {
		qdot4RowsQ4_0AVX2(&raw[0], &q.qs[0], &q.d[0], k, nb, rows, groups, &out[0], 4*cols)
	}
	return true
}
