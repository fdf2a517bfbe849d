package model_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/errclass"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
)

// FuzzLoad loads the bundled model with fuzzed hyper-parameters and
// tokenizer arrays (a valid header, then the model's own checks): it must
// fail with a classified error of one line or load, in which case one
// forward pass runs; nothing may panic or allocate what the file does not
// justify (a failure to allocate would kill the fuzzer).
func FuzzLoad(f *testing.F) {
	data, err := os.ReadFile(fixture.BundledModel(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint64(5), uint64(64), uint64(172), uint64(8), uint64(4), uint64(0), uint64(2048), float32(1e-5), float32(10000), uint64(8), uint16(512), uint16(512), int64(1), []byte(""), "llama")
	f.Add(uint64(1<<31), uint64(64), uint64(172), uint64(8), uint64(4), uint64(0), uint64(2048), float32(1e-5), float32(10000), uint64(8), uint16(512), uint16(512), int64(1), []byte(""), "llama")
	f.Add(uint64(5), uint64(1<<40), uint64(172), uint64(8), uint64(4), uint64(8), uint64(1<<62), float32(0), float32(-1), uint64(7), uint16(3), uint16(2), int64(1<<40), []byte("<s>\x00\xff"), "gpt2")
	f.Add(uint64(5), uint64(64), uint64(172), uint64(16), uint64(16), uint64(4), uint64(0), float32(1e-6), float32(1e6), uint64(4), uint16(511), uint16(512), int64(-5), []byte("</s><0x0A>"), "llama")
	f.Fuzz(func(t *testing.T, layers, dim, ffn, heads, kvHeads, keyLen, ctxLen uint64, eps, ropeBase float32, ropeDim uint64,
		nTokens, nScores uint16, bos int64, token []byte, tokModel string) {
		gf, err := gguf.NewFile(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		md := &gf.Metadata
		set := func(k string, v any) {
			if err := md.SetAny(k, v); err != nil {
				t.Fatal(err)
			}
		}
		set("llama.block_count", layers)
		set("llama.embedding_length", dim)
		set("llama.feed_forward_length", ffn)
		set("llama.attention.head_count", heads)
		set("llama.attention.head_count_kv", kvHeads)
		if keyLen > 0 {
			set("llama.attention.key_length", keyLen)
		}
		set("llama.context_length", ctxLen)
		set("llama.attention.layer_norm_rms_epsilon", eps)
		set("llama.rope.freq_base", ropeBase)
		set("llama.rope.dimension_count", ropeDim)
		set("tokenizer.ggml.bos_token_id", bos)
		set("tokenizer.ggml.model", tokModel)
		tokens, err := md.Strings("tokenizer.ggml.tokens")
		if err != nil {
			t.Fatal(err)
		}
		tokens = append([]string(nil), tokens[:min(int(nTokens), len(tokens))]...)
		if len(tokens) > 3 {
			tokens[3] = string(token) // a byte token replaced: duplicates, invalid UTF-8, empty
		}
		set("tokenizer.ggml.tokens", tokens)
		scores, err := md.Float32s("tokenizer.ggml.scores")
		if err != nil {
			t.Fatal(err)
		}
		set("tokenizer.ggml.scores", append([]float32(nil), scores[:min(int(nScores), len(scores))]...))

		m, err := model.LoadFile(gf, cpu.New(cpu.Options{Threads: 1}), model.Options{CtxSize: 32})
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("an error of several lines: %q", err)
			}
			if errclass.Of(err) == errclass.Internal {
				t.Fatalf("an unclassified error: %v", err)
			}
			return
		}
		defer m.Close()
		b := &model.Batch{Tokens: []int32{0, int32(m.Config.VocabSize - 1)}, Pos: []int32{0, 1}, Slot: []int32{0, 0}}
		logits := make([]float32, m.Config.VocabSize)
		if err := m.Forward(b, []int32{1}, logits); err != nil {
			t.Fatalf("the model loaded, but a forward pass failed: %v", err)
		}
	})
}
