package sample

// ChoiceSeed returns the seed of choice i (0-based) of a request that
// asks for several independently sampled choices from one seed (the
// OpenAI API's n): choice 0 keeps seed itself, so that a request for one
// choice samples as before, and choice i > 0 takes the i-th output of
// SplitMix64 started at seed (Steele, Lea and Flood, "Fast splittable
// pseudorandom number generators", 2014): the state seed + i·φ, with φ
// the 64-bit golden-ratio increment 0x9e3779b97f4a7c15, through the
// SplitMix64 finalizer. Distinct i give distinct, decorrelated seeds for
// the same seed (the finalizer is a bijection), and the same (seed, i)
// always gives the same seed. i < 0 is treated as 0.
func ChoiceSeed(seed uint64, i int) uint64 {
	if i <= 0 {
		return seed
	}
	z := seed + uint64(i)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
