package tokenizer

import (
	"path/filepath"
	"testing"
)

func TestScratchRoundTrip(t *testing.T) {
	for _, name := range []string{"llama-spm", "phi-3", "gpt-2", "falcon", "refact", "starcoder", "deepseek-llm", "deepseek-coder", "mpt", "llama-bpe"} {
		var tok *Tokenizer
		if name == "llama-bpe" {
			tok = llama3Tokenizer(t)
		} else {
			tok = loadTestVocab(t, name)
		}
		var fails []int
		for i, c := range readVectors(t, filepath.Join(testdataDir(t, "vocab"), "ggml-vocab-"+name+".gguf.inp")) {
			ids := tok.Encode(c.text, false, false)
			d := tok.Decode(ids)
			if d != c.text {
				fails = append(fails, i)
				t.Logf("%s %d raw=%v %q -> %q", name, i, decodeRaw(tok, ids) == c.text, c.text, d)
			}
		}
		t.Log(name, fails)
	}
}
