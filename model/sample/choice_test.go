package sample

import "testing"

// TestChoiceSeed: choice i > 0 is the i-th SplitMix64 output from seed.
// The seed-0 values are SplitMix64's published first outputs (also the
// seeding test vectors of the xoshiro reference code); the 1234567 ones
// come from an independent Python transcription of the algorithm.
func TestChoiceSeed(t *testing.T) {
	for _, c := range []struct {
		seed uint64
		i    int
		want uint64
	}{
		{0, 0, 0},
		{0, 1, 0xe220a8397b1dcdaf},
		{0, 2, 0x6e789e6aa1b965f4},
		{0, 3, 0x06c45d188009454f},
		{1234567, 0, 1234567},
		{1234567, 1, 0x599ed017fb08fc85},
		{1234567, 2, 0x2c73f08458540fa5},
		{1234567, 3, 0x883ebce5a3f27c77},
		{42, -1, 42},
	} {
		if got := ChoiceSeed(c.seed, c.i); got != c.want {
			t.Errorf("ChoiceSeed(%d, %d) = %#x, want %#x", c.seed, c.i, got, c.want)
		}
	}
}
