package model

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestStopMatcher(t *testing.T) {
	tests := []struct {
		name   string
		stops  []string
		pieces []string
		want   []string // emitted per piece, then the flush
		hit    int      // index of the piece that hits a stop, -1 for none
	}{
		{"no stops", nil, []string{"a", "b"}, []string{"a", "b", ""}, -1},
		{"stop inside one piece", []string{"END"}, []string{"abcENDxyz"}, []string{"abc"}, 0},
		{"stop across pieces", []string{"END"}, []string{"ab E", "N", "Dzz"}, []string{"ab ", "", ""}, 2},
		{"false start released", []string{"END"}, []string{"ab E", "Nx", "y"}, []string{"ab ", "ENx", "y", ""}, -1},
		{"held text flushed at the end", []string{"END"}, []string{"ab EN"}, []string{"ab ", "EN"}, -1},
		{"earliest of two stops", []string{"yz", "x"}, []string{"wxyz"}, []string{"w"}, 0},
		{"empty stop ignored", []string{""}, []string{"abc"}, []string{"abc", ""}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newStopMatcher(tt.stops)
			var got []string
			hit := -1
			for i, p := range tt.pieces {
				out, h := m.add(p)
				got = append(got, out)
				if h {
					hit = i
					break
				}
			}
			if hit < 0 {
				got = append(got, m.flush(""))
			}
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.hit, hit)
			assert.False(t, strings.Contains(strings.Join(got, ""), "END"))
		})
	}
}
