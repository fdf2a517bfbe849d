package tokenizer

// ordered is an element of a minHeap: before reports whether it comes out
// of the heap ahead of other.
type ordered[T any] interface {
	before(other T) bool
}

// minHeap is a binary heap of merge candidates; the first out is the one
// that is before all others. The merge loops of both algorithms use it.
type minHeap[T ordered[T]] []T

func (h *minHeap[T]) push(x T) {
	s := append(*h, x)
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].before(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
	*h = s
}

func (h *minHeap[T]) pop() T {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		c := 2*i + 1
		if c >= len(s) {
			break
		}
		if r := c + 1; r < len(s) && s[r].before(s[c]) {
			c = r
		}
		if !s[c].before(s[i]) {
			break
		}
		s[i], s[c] = s[c], s[i]
		i = c
	}
	*h = s
	return top
}
