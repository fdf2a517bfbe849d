// Package hostile writes a corpus of malformed and hostile model files for
// tests: the bundled model with its metadata set to values that break an
// assumption (a layer count of 2^31, NaN epsilon, a vocabulary of the wrong
// type, ...), cut short, or with bytes of its header changed. Every file
// must end in a one-line error or a normal run, quickly and in bounded
// memory, wherever it is opened (inspect, Load, Generate).
package hostile

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
)

// Case is one file of the corpus.
type Case struct {
	Name string
	Path string
}

// edit is a change to the bundled model's metadata: a value to set, or nil
// to delete the key.
type edit map[string]any

var edits = []struct {
	name string
	set  edit
}{
	{"block_count 2^31", edit{"llama.block_count": uint32(1 << 31)}},
	{"block_count max u32", edit{"llama.block_count": uint32(math.MaxUint32)}},
	{"block_count 2^40 as u64", edit{"llama.block_count": uint64(1 << 40)}},
	{"block_count 0", edit{"llama.block_count": uint32(0)}},
	{"block_count more than the tensors", edit{"llama.block_count": uint32(64)}},
	{"block_count a string", edit{"llama.block_count": "five"}},
	{"embedding_length 2^31", edit{"llama.embedding_length": uint32(1 << 31)}},
	{"embedding_length 0", edit{"llama.embedding_length": uint32(0)}},
	{"embedding_length 1", edit{"llama.embedding_length": uint32(1)}},
	{"feed_forward_length 2^40", edit{"llama.feed_forward_length": uint64(1 << 40)}},
	{"head_count 0", edit{"llama.attention.head_count": uint32(0)}},
	{"head_count 2^30", edit{"llama.attention.head_count": uint32(1 << 30)}},
	{"head_count_kv does not divide", edit{"llama.attention.head_count_kv": uint32(3)}},
	{"head_count_kv above head_count", edit{"llama.attention.head_count_kv": uint32(16)}},
	{"key_length 2^30", edit{"llama.attention.key_length": uint32(1 << 30)}},
	{"value_length 0", edit{"llama.attention.value_length": uint32(0)}},
	{"context_length 2^62", edit{"llama.context_length": uint64(1 << 62)}},
	{"context_length 0", edit{"llama.context_length": uint32(0)}},
	{"rope.dimension_count odd", edit{"llama.rope.dimension_count": uint32(7)}},
	{"rope.dimension_count huge", edit{"llama.rope.dimension_count": uint32(1 << 20)}},
	{"rms epsilon NaN", edit{"llama.attention.layer_norm_rms_epsilon": float32(math.NaN())}},
	{"rms epsilon 0", edit{"llama.attention.layer_norm_rms_epsilon": float32(0)}},
	{"rms epsilon missing", edit{"llama.attention.layer_norm_rms_epsilon": nil}},
	{"rope base 0", edit{"llama.rope.freq_base": float32(0)}},
	{"rope base +Inf", edit{"llama.rope.freq_base": float32(math.Inf(1))}},
	{"rope base NaN", edit{"llama.rope.freq_base": float32(math.NaN())}},
	{"rope scaling yarn", edit{"llama.rope.scaling.type": "yarn"}},
	{"rope scaling factor 0", edit{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": float32(0)}},
	{"rope scaling factor NaN", edit{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": float32(math.NaN())}},
	{"vocab_size 2^31", edit{"llama.vocab_size": uint32(1 << 31)}},
	{"architecture unknown", edit{"general.architecture": "mamba"}},
	{"architecture a number", edit{"general.architecture": uint32(7)}},
	{"architecture missing", edit{"general.architecture": nil}},
	{"tokenizer model unknown", edit{"tokenizer.ggml.model": "nonsense"}},
	{"tokenizer model bert", edit{"tokenizer.ggml.model": "bert"}},
	{"tokenizer model missing", edit{"tokenizer.ggml.model": nil}},
	{"tokens missing", edit{"tokenizer.ggml.tokens": nil}},
	{"tokens numbers", edit{"tokenizer.ggml.tokens": []uint32{1, 2, 3}}},
	{"tokens empty", edit{"tokenizer.ggml.tokens": []string{}}},
	{"tokens too few", edit{"tokenizer.ggml.tokens": []string{"<unk>", "<s>", "</s>"}}},
	{"scores too few", edit{"tokenizer.ggml.scores": []float32{0, 1}}},
	{"scores NaN", edit{"tokenizer.ggml.scores": nanScores()}},
	{"token types too few", edit{"tokenizer.ggml.token_type": []int32{1}}},
	{"bos 2^31", edit{"tokenizer.ggml.bos_token_id": uint32(1 << 31)}},
	{"eos 2^40", edit{"tokenizer.ggml.eos_token_id": uint64(1 << 40)}},
	{"bos a string", edit{"tokenizer.ggml.bos_token_id": "one"}},
	{"chat template recursive", edit{"tokenizer.chat_template": "{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}"}},
	{"chat template unclosed", edit{"tokenizer.chat_template": "{% for m in messages %}{{ m.content "}},
}

func nanScores() []float32 {
	s := make([]float32, 512)
	for i := range s {
		s[i] = float32(math.NaN())
	}
	return s
}

// Corpus writes the corpus to a temporary directory of t and returns its
// cases. It fails t when the bundled model cannot be read or a file cannot
// be written.
func Corpus(t testing.TB) []Case {
	t.Helper()
	src := fixture.BundledModel(t)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("hostile: %v", err)
	}
	dir := t.TempDir()
	var cases []Case
	add := func(name string, b []byte) {
		p := filepath.Join(dir, sanitize(name)+".gguf")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatalf("hostile: %v", err)
		}
		cases = append(cases, Case{Name: name, Path: p})
	}
	for _, e := range edits {
		f, err := gguf.NewFile(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("hostile: %v", err)
		}
		for k, v := range e.set {
			if v == nil {
				f.Metadata.Delete(k)
				continue
			}
			if err := f.Metadata.SetAny(k, v); err != nil {
				t.Fatalf("hostile: %s: %v", e.name, err)
			}
		}
		var buf bytes.Buffer
		if err := gguf.Copy(&buf, f); err != nil {
			t.Fatalf("hostile: %s: %v", e.name, err)
		}
		add(e.name, buf.Bytes())
	}
	for _, n := range []int{0, 3, 4, 8, 23, 100, len(data) / 3, len(data) / 2, len(data) - 1} {
		add("cut at "+strconv.Itoa(n), data[:n])
	}
	// Header bytes changed at random (a fixed seed: the same corpus each
	// run), where the counts, lengths, types and offsets are.
	header := headerSize(data)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		b := bytes.Clone(data)
		for range 1 + i%4 {
			b[r.IntN(header)] = byte(r.IntN(256))
		}
		add("header bytes changed "+strconv.Itoa(i), b)
	}
	add("random bytes", randomBytes(r, 4096))
	add("magic then random bytes", append([]byte("GGUF\x03\x00\x00\x00"), randomBytes(r, 4096)...))
	return cases
}

// headerSize is where the tensor data of the file starts (the whole file
// when it does not parse).
func headerSize(data []byte) int {
	f, err := gguf.NewFile(bytes.NewReader(data), int64(len(data)))
	if err != nil || f.DataOffset <= 0 || f.DataOffset > int64(len(data)) {
		return len(data)
	}
	return int(f.DataOffset)
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}
