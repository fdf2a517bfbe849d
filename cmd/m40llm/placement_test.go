package main

import (
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1500000000": 1500000000, "8G": 8 << 30, "8GiB": 8 << 30, "8gb": 8e9, "8000M": 8000 << 20,
		"1.5GiB": 3 << 29, "512 KiB": 512 << 10, "2TB": 2e12, "100B": 100,
	} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "G", "8XB", "1e400", "-1G", "8 G B"} {
		_, err := parseSize(in)
		assert.Error(t, err, in)
	}
}

// The placement flags are checked before anything is opened: a usage
// error (exit 2) that names the flag and what it wants.
func TestPlacementFlagErrors(t *testing.T) {
	m := fixture.BundledModel(t)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-ngl", "-3"}, `--n-gpu-layers "-3": want auto or a number of layers ≥ 0`},
		{[]string{"-ngl", "some"}, `--n-gpu-layers "some"`},
		{[]string{"--devices", "0,x"}, `--devices "0,x": want device ordinals`},
		{[]string{"--tensor-split", "1,1"}, `--tensor-split "1,1": 2 shares for 1 devices`},
		{[]string{"--devices", "0,0", "--tensor-split", "0,0"}, "every share is 0"},
		{[]string{"--devices", "0,0", "--tensor-split", "1,-2"}, "want numbers ≥ 0"},
		{[]string{"--gpu-memory-limit", "0"}, `--gpu-memory-limit "0": want a size above 0`},
		{[]string{"--gpu-memory-limit", "12 parsecs"}, `--gpu-memory-limit "12 parsecs"`},
		{[]string{"--backend", "cpu", "-ngl", "4"}, "--n-gpu-layers 4 with --backend cpu"},
	} {
		args := append([]string{"generate", "-m", m, "-p", "x", "-n", "1"}, c.args...)
		_, errs, code := runCLI(t, "", args...)
		assert.Equal(t, 2, code, "%v: %s", c.args, errs)
		assert.Contains(t, errs, c.msg, c.args)
	}
}
