package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model/sample"
)

// ollamaState is what the ollama routes learn once about the served
// model's file.
type ollamaState struct {
	once  sync.Once
	facts *modelFacts

	mu    sync.Mutex
	files map[string]*modelFacts // the models directory's, by path
}

// modelFacts describe the served model as /api/tags, /api/ps and
// /api/show report it. The file's facts (size, time, parameters, digest)
// are those of Options.ModelPath when first asked for; without a path
// they are zero.
type modelFacts struct {
	arch     string
	size     int64
	modified time.Time
	params   int64
	quant    string

	digestDone chan struct{} // closed once digest is set (or failed)
	digest     string
}

// ollamaFacts returns the facts of the served model, gathering them on
// the first call: the file's size, time and tensors at once (its header
// only), its sha256 on a goroutine of its own (a read of the whole file).
func (s *Server) ollamaFacts(served *Served) *modelFacts {
	s.mu.RLock()
	start := s.served
	s.mu.RUnlock()
	if served != start && s.pool != nil {
		if path := s.pool.pathOf(served); path != "" {
			return s.fileFacts(path)
		}
	}
	s.ollama.once.Do(func() {
		f := &modelFacts{arch: served.Model.Config.Arch, digestDone: make(chan struct{})}
		s.ollama.facts = f
		path := s.opts.ModelPath
		hasFT := false
		if v, err := served.Model.Metadata.Uint32(gguf.KeyFileType); err == nil {
			hasFT = true
			f.quant = ollamaQuantName(v)
		}
		if path == "" {
			close(f.digestDone)
			return
		}
		if st, err := os.Stat(path); err == nil {
			f.size, f.modified = st.Size(), st.ModTime()
		} else {
			s.log.Warn("model file facts", "path", path, "err", err)
		}
		if gf, err := gguf.Open(path); err == nil {
			f.params = gf.ParameterCount()
			if !hasFT {
				f.quant = gf.MatrixType().String()
			}
			gf.Close()
		} else {
			s.log.Warn("model file facts", "path", path, "err", err)
		}
		go func() {
			defer close(f.digestDone)
			d, err := fileSHA256(path)
			if err != nil {
				s.log.Warn("model file digest", "path", path, "err", err)
				return
			}
			f.digest = d
		}()
	})
	return s.ollama.facts
}

// listedFacts returns the facts of a listed model: Start's as
// ollamaFacts gives them, a directory file's from its header.
func (s *Server) listedFacts(l listed) *modelFacts {
	if l.served != nil {
		return s.ollamaFacts(l.served)
	}
	return s.fileFacts(l.path)
}

// fileFacts returns the facts of a file of the models directory from its
// header, kept while its size and time stay the same; the digest is
// computed once per version on a goroutine of its own. A file that
// cannot be read has facts with its size and time only (logged).
func (s *Server) fileFacts(path string) *modelFacts {
	st, err := os.Stat(path)
	s.ollama.mu.Lock()
	defer s.ollama.mu.Unlock()
	if s.ollama.files == nil {
		s.ollama.files = map[string]*modelFacts{}
	}
	if f := s.ollama.files[path]; f != nil && err == nil && f.size == st.Size() && f.modified.Equal(st.ModTime()) {
		return f
	}
	f := &modelFacts{digestDone: make(chan struct{})}
	if err != nil {
		close(f.digestDone)
		return f
	}
	f.size, f.modified = st.Size(), st.ModTime()
	if gf, err := gguf.Open(path); err == nil {
		f.arch, _ = gf.Metadata.String("general.architecture")
		f.params = gf.ParameterCount()
		if v, err := gf.Metadata.Uint32(gguf.KeyFileType); err == nil {
			f.quant = ollamaQuantName(v)
		} else {
			f.quant = gf.MatrixType().String()
		}
		gf.Close()
	} else {
		s.log.Warn("model file facts", "path", path, "err", err)
	}
	s.ollama.files[path] = f
	go func() {
		defer close(f.digestDone)
		d, err := fileSHA256(path)
		if err != nil {
			s.log.Warn("model file digest", "path", path, "err", err)
			return
		}
		f.digest = d
	}()
	return f
}

// Digest returns the file's sha256 in hex once known (as ollama writes
// digests, without "sha256:"), else "".
func (f *modelFacts) Digest() string {
	select {
	case <-f.digestDone:
		return f.digest
	default:
		return ""
	}
}

// fileSHA256 returns the sha256 of the file at path in hex.
func fileSHA256(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (f *modelFacts) details() OllamaModelDetails {
	return OllamaModelDetails{Format: "gguf", Family: f.arch, Families: []string{f.arch},
		ParameterSize: parameterSize(f.params), QuantizationLevel: f.quant}
}

// parameterSize writes a parameter count as ollama does ("6.7B", "494.0M");
// "" when unknown.
func parameterSize(n int64) string {
	switch {
	case n <= 0:
		return ""
	case n >= 1e9:
		return fmt.Sprintf("%.1fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	}
	return fmt.Sprintf("%.1fK", float64(n)/1e3)
}

// ollamaQuantNames are llama.cpp's LLAMA_FTYPE values by the short names
// ollama reports as quantization_level.
var ollamaQuantNames = map[uint32]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
	10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
	19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S",
	27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}

// ollamaQuantName names file type ft ("Q4_K_M" for 15); an unknown one
// by llama.cpp's description.
func ollamaQuantName(ft uint32) string {
	if s, ok := ollamaQuantNames[ft]; ok {
		return s
	}
	return gguf.FileTypeName(ft)
}

// ollamaShow builds the /api/show answer: the model's metadata as
// model_info (the arrays, such as the vocabulary, only when verbose), its
// chat template, the server's sampling defaults as parameters.
func (s *Server) ollamaShow(served *Served, verbose bool) *OllamaShowResponse {
	f := s.ollamaFacts(served)
	info := map[string]any{}
	for _, kv := range served.Model.Metadata.KVs() {
		if a, ok := kv.Value.Array(); ok {
			if verbose {
				info[kv.Key] = jsonSafe(a.Data)
			}
			continue
		}
		info[kv.Key] = jsonSafe(kv.Value.Any())
	}
	if _, ok := info["general.parameter_count"]; !ok && f.params > 0 {
		info["general.parameter_count"] = f.params
	}
	p := sample.DefaultParams()
	params := fmt.Sprintf("%-30s %v\n%-30s %v\n%-30s %v\n%-30s %v\n%-30s %v\n%-30s %v",
		"temperature", p.Temperature, "top_k", p.TopK, "top_p", p.TopP, "min_p", p.MinP,
		"repeat_penalty", p.RepeatPenalty, "repeat_last_n", p.RepeatLastN)
	var mf strings.Builder
	fmt.Fprintf(&mf, "# The model m40llm serves as %q; its chat template is Jinja (see template).\n", served.Name)
	path := s.opts.ModelPath
	if s.pool != nil {
		if p := s.pool.pathOf(served); p != "" {
			path = p
		}
	}
	if path != "" {
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		fmt.Fprintf(&mf, "FROM %s\n", path)
	}
	for _, line := range strings.Split(params, "\n") {
		fmt.Fprintf(&mf, "PARAMETER %s\n", strings.Join(strings.Fields(line), " "))
	}
	var tmpl string
	if served.Template != nil {
		tmpl = served.Template.Source()
	}
	caps := []string{"completion"}
	if served.Embeddings {
		caps = append(caps, "embedding")
	}
	return &OllamaShowResponse{
		Modelfile: mf.String(), Parameters: params, Template: tmpl, Details: f.details(), ModelInfo: info,
		Capabilities: caps, ModifiedAt: f.modified,
	}
}

// jsonSafe returns v with the floats JSON cannot hold (NaN, ±Inf) as
// strings; nested arrays are converted element by element.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case float32:
		return safeFloat(float64(x))
	case float64:
		return safeFloat(x)
	case []float32:
		out := make([]any, len(x))
		for i, f := range x {
			out[i] = safeFloat(float64(f))
		}
		return out
	case []float64:
		out := make([]any, len(x))
		for i, f := range x {
			out[i] = safeFloat(f)
		}
		return out
	case []gguf.Array:
		out := make([]any, len(x))
		for i, a := range x {
			out[i] = jsonSafe(a.Data)
		}
		return out
	}
	return v
}

func safeFloat(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Sprint(f)
	}
	return f
}
