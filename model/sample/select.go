package sample

import (
	"math"
	"slices"
)

var negInf = float32(math.Inf(-1))

// cand is one candidate token.
type cand struct {
	id    int32
	logit float32
}

// before is the candidate order: higher logit first, then lower ID.
func before(a, b cand) bool {
	return a.logit > b.logit || (a.logit == b.logit && a.id < b.id)
}

func cmpCand(a, b cand) int {
	switch {
	case before(a, b):
		return -1
	case before(b, a):
		return 1
	}
	return 0
}

// argmax returns the lowest ID with the highest logit, ignoring NaN, and
// that logit. It returns NoToken when no logit is above -Inf.
func argmax(logits []float32) (int32, float32) {
	best, bv := -1, negInf
	i := 0
	// Test eight logits against the running maximum with independent,
	// well-predicted branches and look closer only when one is larger;
	// a plain loop carries the maximum from one comparison to the next.
	for ; i+8 <= len(logits); i += 8 {
		c := logits[i : i+8 : i+8]
		if c[0] > bv || c[1] > bv || c[2] > bv || c[3] > bv ||
			c[4] > bv || c[5] > bv || c[6] > bv || c[7] > bv {
			for j, v := range c {
				if v > bv {
					best, bv = i+j, v
				}
			}
		}
	}
	for ; i < len(logits); i++ {
		if v := logits[i]; v > bv {
			best, bv = i, v
		}
	}
	return int32(best), bv
}

// siftDown restores the heap property below i for a heap whose root is the
// candidate that comes last in the candidate order.
func siftDown(h []cand, i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		w := l
		if r := l + 1; r < len(h) && before(h[l], h[r]) {
			w = r
		}
		if !before(h[i], h[w]) {
			return
		}
		h[i], h[w] = h[w], h[i]
		i = w
	}
}

func heapify(h []cand) {
	for i := len(h)/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
}

// topLogits returns dst holding the n first candidates of logits in the
// candidate order, NaN skipped, in heap order (not sorted). It scans the
// logits once and keeps a heap of n entries, so it costs one comparison per
// logit plus O(log n) per replacement.
func topLogits(dst []cand, logits []float32, n int) []cand {
	h := dst[:0]
	i := 0
	for ; i < len(logits) && len(h) < n; i++ {
		if v := logits[i]; v == v {
			h = append(h, cand{int32(i), v})
		}
	}
	if len(h) == 0 {
		return h
	}
	heapify(h)
	// IDs increase during the scan, so a logit equal to the root's never
	// displaces it: the lower ID wins ties.
	low := h[0].logit
	for ; i+8 <= len(logits); i += 8 {
		c := logits[i : i+8 : i+8]
		if c[0] > low || c[1] > low || c[2] > low || c[3] > low ||
			c[4] > low || c[5] > low || c[6] > low || c[7] > low {
			for j, v := range c {
				if v > low {
					h[0] = cand{int32(i + j), v}
					siftDown(h, 0)
					low = h[0].logit
				}
			}
		}
	}
	for ; i < len(logits); i++ {
		if v := logits[i]; v > low {
			h[0] = cand{int32(i), v}
			siftDown(h, 0)
			low = h[0].logit
		}
	}
	return h
}

// topCands moves the n first candidates of c (in the candidate order) to
// c[:n] and returns c[:n], unsorted.
func topCands(c []cand, n int) []cand {
	h := c[:n]
	heapify(h)
	for _, e := range c[n:] {
		if before(e, h[0]) {
			h[0] = e
			siftDown(h, 0)
		}
	}
	return h
}

// sortValid sorts c in the candidate order and drops -Inf and NaN entries.
func sortValid(c []cand) []cand {
	j := 0
	for _, e := range c {
		if e.logit > negInf {
			c[j] = e
			j++
		}
	}
	c = c[:j]
	slices.SortFunc(c, cmpCand)
	return c
}
