package sample

// countWindow fills s.count and s.distinct with the window's tokens whose
// IDs are below limit. s.count is sized to cover only those IDs, so lookups
// must check the bounds (see counted).
func (s *Sampler) countWindow(limit int) {
	if len(s.window) == 0 {
		s.count = s.count[:0]
		return
	}
	size := 0
	for _, id := range s.window {
		if id >= 0 && int(id) < limit {
			size = max(size, int(id)+1)
		}
	}
	// Entries are zero between calls, so reslicing within the capacity
	// needs no clearing.
	if cap(s.count) < size {
		s.count = make([]int32, size)
	} else {
		s.count = s.count[:size]
	}
	for _, id := range s.window {
		if id < 0 || int(id) >= size {
			continue
		}
		if s.count[id] == 0 {
			s.distinct = append(s.distinct, id)
		}
		s.count[id]++
	}
}

// releaseCounts restores the all-zero invariant of s.count.
func (s *Sampler) releaseCounts() {
	for _, id := range s.distinct {
		s.count[id] = 0
	}
	s.distinct = s.distinct[:0]
}

// counted returns the window count of id (0 outside s.count).
func (s *Sampler) counted(id int32) int32 {
	if int(id) >= len(s.count) {
		return 0
	}
	return s.count[id]
}

// penalty applies the three penalties to the logit of a token that occurs n
// (> 0) times in the window, as llama.cpp's penalties sampler does: the
// repeat penalty divides a positive logit and multiplies the others, then
// n*frequency + presence is subtracted.
func (s *Sampler) penalty(logit float32, n int32) float32 {
	if logit <= 0 {
		logit *= s.p.RepeatPenalty
	} else {
		logit /= s.p.RepeatPenalty
	}
	return logit - (float32(n)*s.p.FrequencyPenalty + s.p.PresencePenalty)
}

// penalizeTop replaces the penalised tokens among the raw top candidates c
// by every penalised token with its penalised logit. With m penalised
// tokens and c the raw top k+m, the result holds the true top k after
// penalties whatever their sign: c keeps at least the k best unpenalised
// tokens, whose logits the penalties leave alone, and every penalised token
// is added explicitly.
func (s *Sampler) penalizeTop(c []cand, logits []float32) []cand {
	j := 0
	for _, e := range c {
		if s.counted(e.id) == 0 {
			c[j] = e
			j++
		}
	}
	c = c[:j]
	for _, id := range s.distinct {
		c = append(c, cand{id, s.penalty(logits[id], s.count[id])})
	}
	return c
}
