package tokenizer

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/require"
)

// vocabPath returns the path of a vocabulary GGUF in the shared test data
// (fixture.Shared: a skip when it is missing, or a failure under
// M40LLM_REQUIRE_TESTDATA=1).
func vocabPath(tb testing.TB, name string) string {
	tb.Helper()
	return fixture.Shared(tb, "vocab/ggml-vocab-"+name+".gguf")
}

var (
	vocabCacheMu sync.Mutex
	vocabCache   = map[string]*Tokenizer{}
)

// openTokenizer loads a tokenizer from a GGUF file, once per test binary.
func openTokenizer(tb testing.TB, path string) *Tokenizer {
	tb.Helper()
	vocabCacheMu.Lock()
	defer vocabCacheMu.Unlock()
	if t, ok := vocabCache[path]; ok {
		return t
	}
	f, err := gguf.Open(path)
	require.NoError(tb, err)
	defer f.Close()
	t, err := New(&f.Metadata)
	require.NoError(tb, err)
	vocabCache[path] = t
	return t
}

// loadVocab loads ggml-vocab-NAME.gguf from the shared test data.
func loadTestVocab(tb testing.TB, name string) *Tokenizer {
	tb.Helper()
	return openTokenizer(tb, vocabPath(tb, name))
}

// vectorCase is one llama.cpp tokenizer test case.
type vectorCase struct {
	text string
	ids  []int32
}

// readVectors reads NAME.inp/.out in llama.cpp's test-tokenizer-0 format:
// inputs separated by "\n__ggml_vocab_test__\n" (the trailing empty piece
// dropped) and one line of space-separated ids per input.
func readVectors(tb testing.TB, inp string) []vectorCase {
	tb.Helper()
	data, err := os.ReadFile(inp)
	require.NoError(tb, err)
	texts := strings.Split(string(data), "\n__ggml_vocab_test__\n")
	if len(texts) > 0 && texts[len(texts)-1] == "" {
		texts = texts[:len(texts)-1]
	}
	out, err := os.Open(strings.TrimSuffix(inp, ".inp") + ".out")
	require.NoError(tb, err)
	defer out.Close()
	var cases []vectorCase
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ids []int32
		for _, f := range strings.Fields(sc.Text()) {
			n, err := strconv.ParseInt(f, 10, 32)
			require.NoError(tb, err)
			ids = append(ids, int32(n))
		}
		cases = append(cases, vectorCase{ids: ids})
	}
	require.NoError(tb, sc.Err())
	require.Len(tb, cases, len(texts), "%s: inputs and outputs differ in number", inp)
	for i := range cases {
		cases[i].text = texts[i]
	}
	return cases
}

// vectorNames lists the NAME of every ggml-vocab-NAME.gguf.inp.
func vectorNames(tb testing.TB) []string {
	tb.Helper()
	var names []string
	for _, f := range fixture.SharedGlob(tb, "vocab/ggml-vocab-*.gguf.inp") {
		names = append(names, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "ggml-vocab-"), ".gguf.inp"))
	}
	sort.Strings(names)
	return names
}

var (
	llama3Mu  sync.Mutex
	llama3Tok *Tokenizer
)

// llama3Tokenizer builds a Llama 3 vocabulary GGUF from the shared
// encoder.json and vocab.bpe (tokenizer.ggml.model "gpt2", pre
// "llama-bpe"), writes it with gguf.NewWriter into the test's TempDir, and
// opens it with gguf.Open. The tokenizer is kept for later tests.
func llama3Tokenizer(tb testing.TB) *Tokenizer {
	tb.Helper()
	dir := fixture.Shared(tb, "vocab/llama3.2-bpe")
	llama3Mu.Lock()
	defer llama3Mu.Unlock()
	if llama3Tok == nil {
		path, err := writeLlama3GGUF(dir, filepath.Join(tb.TempDir(), "llama3-bpe.gguf"))
		require.NoError(tb, err)
		f, err := gguf.Open(path)
		require.NoError(tb, err)
		defer f.Close()
		llama3Tok, err = New(&f.Metadata)
		require.NoError(tb, err)
	}
	return llama3Tok
}

// writeLlama3GGUF writes the Llama 3 vocabulary GGUF and returns its path.
func writeLlama3GGUF(dir, path string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "encoder.json"))
	if err != nil {
		return "", err
	}
	var enc map[string]int32
	if err := json.Unmarshal(data, &enc); err != nil {
		return "", err
	}
	tokens := make([]string, len(enc))
	for s, id := range enc {
		tokens[id] = s
	}
	// The 256 special tokens of Llama 3 follow the 128000 regular ones.
	special := []string{"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
		"<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
		"<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"}
	for i := len(special); i < 256; i++ {
		special = append(special, "<|reserved_special_token_"+strconv.Itoa(i-8)+"|>")
	}
	types := make([]int32, 0, len(tokens)+len(special))
	for range tokens {
		types = append(types, int32(TypeNormal))
	}
	for range special {
		types = append(types, int32(TypeControl))
	}
	tokens = append(tokens, special...)

	merges, err := os.ReadFile(filepath.Join(dir, "vocab.bpe"))
	if err != nil {
		return "", err
	}
	mergeList := strings.Split(strings.TrimRight(string(merges), "\n"), "\n")

	var md gguf.Metadata
	for _, kv := range []struct {
		k string
		v any
	}{
		{"general.architecture", "llama"},
		{"general.name", "llama3.2-bpe test vocabulary"},
		{keyModel, "gpt2"},
		{keyPre, "llama-bpe"},
		{keyTokens, tokens},
		{keyTokenType, types},
		{keyMerges, mergeList},
		{"tokenizer.ggml.bos_token_id", uint32(128000)},
		{"tokenizer.ggml.eos_token_id", uint32(128009)},
	} {
		if err := md.SetAny(kv.k, kv.v); err != nil {
			return "", err
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	w, err := gguf.NewWriter(f, &md, nil)
	if err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return path, f.Close()
}
