package gguf_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/m40llm/m40llm/gguf"
)

// TestFileTypeName: the descriptions llama-bench prints for the files of
// the 2026-12-04 comparison ("llama 7B Q4_K - Medium", "llama 1B Q4_0").
func TestFileTypeName(t *testing.T) {
	assert.Equal(t, "Q4_K - Medium", gguf.FileTypeName(15))
	assert.Equal(t, "Q4_0", gguf.FileTypeName(2))
	assert.Equal(t, "Q8_0", gguf.FileTypeName(7))
	assert.Equal(t, "F16", gguf.FileTypeName(1))
	assert.Equal(t, "ftype 99", gguf.FileTypeName(99))
}
