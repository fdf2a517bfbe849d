package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/m40llm/m40llm/model"
)

// MaxEmbeddingInputs bounds the inputs of one embedding request (OpenAI's
// own limit); more get 400.
const MaxEmbeddingInputs = 2048

// EmbeddingRequest is the body of POST /v1/embeddings (OpenAI's shape).
type EmbeddingRequest struct {
	// Input is a string, an array of strings, an array of token ids or an
	// array of arrays of token ids; each is embedded on its own.
	Input json.RawMessage `json:"input"`
	Model string          `json:"model"`
	// EncodingFormat is "float" (the default) or "base64": the vector's
	// float32 values, little-endian, base64-encoded.
	EncodingFormat string `json:"encoding_format,omitempty"`
	// Dimensions must equal the model's embedding width when set (no
	// shortening).
	Dimensions *int `json:"dimensions,omitempty"`
	// User is accepted and not used.
	User string `json:"user,omitempty"`
}

// EmbeddingResponse is the answer of POST /v1/embeddings.
type EmbeddingResponse struct {
	Object string          `json:"object"` // "list"
	Data   []EmbeddingData `json:"data"`
	Model  string          `json:"model"`
	Usage  EmbeddingUsage  `json:"usage"`
}

// EmbeddingData is one input's vector: []float32, or a base64 string with
// encoding_format "base64".
type EmbeddingData struct {
	Object    string `json:"object"` // "embedding"
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

// EmbeddingUsage counts the tokens of every input.
type EmbeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// OllamaEmbedRequest is the body of POST /api/embed.
type OllamaEmbedRequest struct {
	Model string `json:"model"`
	// Input is a string or an array of strings; none ("", [] or absent)
	// answers no embeddings, as ollama does to load a model.
	Input json.RawMessage `json:"input"`
	// Truncate (true when absent) cuts an input longer than the context
	// to its first tokens; false refuses it.
	Truncate *bool `json:"truncate,omitempty"`
	// Dimensions, when set, keeps the first Dimensions values of each
	// vector and normalizes them again (as ollama does).
	Dimensions int `json:"dimensions,omitempty"`
	// Options are checked as for /api/generate; num_ctx bounds the
	// inputs.
	Options map[string]json.RawMessage `json:"options"`
	// KeepAlive is as for /api/generate.
	KeepAlive json.RawMessage `json:"keep_alive,omitempty"`
}

// OllamaEmbedResponse is the answer of POST /api/embed.
type OllamaEmbedResponse struct {
	Model           string        `json:"model"`
	Embeddings      [][]float32   `json:"embeddings"`
	TotalDuration   time.Duration `json:"total_duration,omitempty"`
	PromptEvalCount int           `json:"prompt_eval_count,omitempty"`
}

// OllamaEmbeddingRequest is the body of the legacy POST /api/embeddings.
type OllamaEmbeddingRequest struct {
	Model     string                     `json:"model"`
	Prompt    string                     `json:"prompt"`
	Options   map[string]json.RawMessage `json:"options"`
	KeepAlive json.RawMessage            `json:"keep_alive,omitempty"`
}

// OllamaEmbeddingResponse is the answer of the legacy POST /api/embeddings.
type OllamaEmbeddingResponse struct {
	Embedding []float32 `json:"embedding"`
}

// embedJob is a request's inputs as token ids, with how to pool them.
type embedJob struct {
	inputs  [][]int32
	pooling model.Pooling
}

// embeddingPooling decides whether a model whose file declares pooling
// (model.Config.Pooling) serves embeddings, and with which pooling:
// enabled by the option or by a file that declares mean, cls or last;
// override (when it embeds) wins over the file's, and mean stands in for
// a file that declares none of those.
func embeddingPooling(enable bool, override, file model.Pooling) (bool, model.Pooling) {
	on := enable || file.Embeds()
	switch {
	case override.Embeds():
		return on, override
	case file.Embeds():
		return on, file
	}
	return on, model.PoolingMean
}

// embeddingsDisabled is the 400 of an embedding request to a model that
// does not serve embeddings.
func embeddingsDisabled(s *Served) *Error {
	return badRequest("model", CodeUnsupported,
		"embeddings are not enabled for %q: it declares no pooling type; start the server with --embeddings (and --pooling mean|cls|last)", s.Name)
}

// parseEmbeddingInput reads an embedding request's input: a string or
// strings, and with ids (OpenAI's route; ollama's takes text only) token
// ids or arrays of token ids. Strings are tokenized as prompts are
// (BOS/EOS as the vocabulary asks, control-token text parsed). A missing
// or empty input or item, another JSON type, and more than
// MaxEmbeddingInputs items are 400 *Errors naming input.
func parseEmbeddingInput(raw json.RawMessage, s *Served, ids bool) ([][]int32, error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return nil, badRequest("input", CodeInvalidValue, "input is required")
	}
	tok := s.Model.Tokenizer
	encode := func(i int, text string) ([]int32, error) {
		if text == "" {
			return nil, badRequest("input", CodeInvalidValue, "input[%d] is an empty string", i)
		}
		return tok.Encode(text, true, true), nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		in, err := encode(0, one)
		if err != nil {
			return nil, badRequest("input", CodeInvalidValue, "input is an empty string")
		}
		return [][]int32{in}, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badRequest("input", CodeInvalidValue, "input must be a string, an array of strings, an array of token ids or an array of arrays of token ids")
	}
	if len(list) == 0 {
		return nil, badRequest("input", CodeInvalidValue, "input is an empty array")
	}
	var toks []int32
	if ids && json.Unmarshal(raw, &toks) == nil {
		return [][]int32{toks}, nil
	}
	if len(list) > MaxEmbeddingInputs {
		return nil, badRequest("input", CodeInvalidValue, "input has %d items; at most %d per request", len(list), MaxEmbeddingInputs)
	}
	out := make([][]int32, len(list))
	for i, item := range list {
		var text string
		if err := json.Unmarshal(item, &text); err == nil {
			if out[i], err = encode(i, text); err != nil {
				return nil, err
			}
			continue
		}
		var t []int32
		if !ids || json.Unmarshal(item, &t) != nil {
			if ids {
				return nil, badRequest("input", CodeInvalidValue, "input[%d] must be a string or an array of token ids", i)
			}
			return nil, badRequest("input", CodeInvalidValue, "input[%d] must be a string", i)
		}
		if len(t) == 0 {
			return nil, badRequest("input", CodeInvalidValue, "input[%d] is an empty array of token ids", i)
		}
		out[i] = t
	}
	return out, nil
}

// checkInputs refuses token ids outside the vocabulary and inputs longer
// than limit tokens (cut to limit instead with truncate), naming the
// input.
func checkInputs(in [][]int32, param string, vocab, limit int, truncate bool) error {
	for i, t := range in {
		for _, id := range t {
			if id < 0 || int(id) >= vocab {
				return badRequest(param, CodeInvalidValue, "%s[%d] has token id %d, outside the vocabulary of %d", param, i, id, vocab)
			}
		}
		if len(t) > limit {
			if truncate {
				in[i] = t[:limit]
				continue
			}
			return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Code: CodeContextLengthExceeded,
				Message: fmt.Sprintf("%s[%d] has %d tokens; the context holds %d", param, i, len(t), limit)}
		}
	}
	return nil
}

// embed runs every input of job through the scheduler, at most one per
// KV-cache slot at a time, and returns the vectors in order with the
// tokens counted.
func (s *Server) embed(ctx context.Context, sched *scheduler, job *embedJob) ([][]float32, int, error) {
	out := make([][]float32, len(job.inputs))
	tokens := 0
	window := max(sched.m.Slots(), 1)
	jobs := make([]*model.Job, len(job.inputs))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends what was submitted when one fails
	wait := func(i int) error {
		_, res, err := jobs[i].Wait(ctx)
		if err != nil {
			return err
		}
		out[i] = res.Embedding
		tokens += res.PromptTokens
		return nil
	}
	for i, in := range job.inputs {
		if i >= window {
			if err := wait(i - window); err != nil {
				return nil, 0, err
			}
		}
		j, err := sched.submit(ctx, &model.Request{Prompt: in, Embed: &model.EmbedOptions{Pooling: job.pooling}})
		if err != nil {
			return nil, 0, err
		}
		jobs[i] = j
	}
	for i := max(len(job.inputs)-window, 0); i < len(job.inputs); i++ {
		if err := wait(i); err != nil {
			return nil, 0, err
		}
	}
	return out, tokens, nil
}

// encodeBase64 is OpenAI's base64 encoding of a vector: its float32 values,
// little-endian, in standard base64 with padding.
func encodeBase64(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(b)
}

func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	var req EmbeddingRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	u, err := s.pick(r.Context(), req.Model, false)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer u.done(-1)
	served := u.served
	if err := checkModel(req.Model, served); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	if !served.Embeddings {
		s.writeError(w, r, embeddingsDisabled(served))
		return
	}
	switch req.EncodingFormat {
	case "", "float", "base64":
	default:
		s.writeError(w, r, badRequest("encoding_format", CodeInvalidValue, "encoding_format must be \"float\" or \"base64\", got %q", req.EncodingFormat))
		return
	}
	dim := served.Model.Config.Dim
	if req.Dimensions != nil && *req.Dimensions != dim {
		s.writeError(w, r, badRequest("dimensions", CodeUnsupported, "dimensions %d: the model's embeddings have %d dimensions and cannot be shortened", *req.Dimensions, dim))
		return
	}
	inputs, err := parseEmbeddingInput(req.Input, served, true)
	if err == nil {
		err = checkInputs(inputs, "input", served.Model.Config.VocabSize, served.Model.CtxSize(), false)
	}
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	vecs, tokens, err := s.embed(r.Context(), u.sched, &embedJob{inputs: inputs, pooling: served.Pooling})
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	noteUsage(r, &model.Result{PromptTokens: tokens})
	resp := EmbeddingResponse{Object: "list", Model: served.Name, Data: make([]EmbeddingData, len(vecs)),
		Usage: EmbeddingUsage{PromptTokens: tokens, TotalTokens: tokens}}
	for i, v := range vecs {
		resp.Data[i] = EmbeddingData{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			resp.Data[i].Embedding = encodeBase64(v)
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// ollamaEmbedPrep checks what /api/embed and /api/embeddings share: the
// model, embeddings enabled, keep_alive, the options (num_ctx bounds the
// inputs). It returns the served model's name as ollama writes it and the
// input limit.
func ollamaEmbedPrep(name string, served *Served, keepAlive json.RawMessage, options map[string]json.RawMessage) (string, int, error) {
	mname, err := checkOllamaModel(name, served)
	if err != nil {
		return "", 0, err
	}
	if !served.Embeddings {
		return "", 0, embeddingsDisabled(served)
	}
	if _, err := parseKeepAlive(keepAlive); err != nil {
		return "", 0, err
	}
	o, err := parseOllamaOptions(options, 0, served.Model.CtxSize())
	if err != nil {
		return "", 0, err
	}
	limit := served.Model.CtxSize()
	if o.numCtx > 0 {
		limit = min(limit, o.numCtx)
	}
	return mname, limit, nil
}

func (s *Server) handleOllamaEmbed(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req OllamaEmbedRequest
	if err := decodeOllama(r, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	u, err := s.pick(r.Context(), req.Model, true)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer func() { u.done(keepAliveOf(&OllamaCommonFields{KeepAlive: req.KeepAlive})) }()
	served := u.served
	name, limit, err := ollamaEmbedPrep(req.Model, served, req.KeepAlive, req.Options)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	dim := served.Model.Config.Dim
	if req.Dimensions < 0 || req.Dimensions > dim {
		s.writeError(w, r, badRequest("dimensions", CodeInvalidValue, "dimensions must be in [1, %d], got %d", dim, req.Dimensions))
		return
	}
	if in := bytes.TrimSpace(req.Input); isNull(in) || string(in) == `""` || string(in) == "[]" {
		// No input loads the model, as ollama answers it.
		writeJSON(w, http.StatusOK, OllamaEmbedResponse{Model: name, Embeddings: [][]float32{}, TotalDuration: time.Since(start)})
		return
	}
	inputs, err := parseEmbeddingInput(req.Input, served, false)
	if err == nil {
		err = checkInputs(inputs, "input", served.Model.Config.VocabSize, limit, req.Truncate == nil || *req.Truncate)
	}
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	vecs, tokens, err := s.embed(r.Context(), u.sched, &embedJob{inputs: inputs, pooling: served.Pooling})
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	noteUsage(r, &model.Result{PromptTokens: tokens})
	if d := req.Dimensions; d > 0 && d < dim {
		for i, v := range vecs {
			vecs[i] = renormalize(v[:d])
		}
	}
	writeJSON(w, http.StatusOK, OllamaEmbedResponse{Model: name, Embeddings: vecs, TotalDuration: time.Since(start),
		PromptEvalCount: tokens})
}

func (s *Server) handleOllamaEmbeddings(w http.ResponseWriter, r *http.Request) {
	var req OllamaEmbeddingRequest
	if err := decodeOllama(r, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	u, err := s.pick(r.Context(), req.Model, true)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer func() { u.done(keepAliveOf(&OllamaCommonFields{KeepAlive: req.KeepAlive})) }()
	served := u.served
	_, limit, err := ollamaEmbedPrep(req.Model, served, req.KeepAlive, req.Options)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	if req.Prompt == "" {
		// ollama answers an empty prompt with an empty embedding (a load).
		writeJSON(w, http.StatusOK, OllamaEmbeddingResponse{Embedding: []float32{}})
		return
	}
	inputs := [][]int32{served.Model.Tokenizer.Encode(req.Prompt, true, true)}
	if err := checkInputs(inputs, "prompt", served.Model.Config.VocabSize, limit, false); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	vecs, tokens, err := s.embed(r.Context(), u.sched, &embedJob{inputs: inputs, pooling: served.Pooling})
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	noteUsage(r, &model.Result{PromptTokens: tokens})
	writeJSON(w, http.StatusOK, OllamaEmbeddingResponse{Embedding: vecs[0]})
}

// renormalize divides v by its Euclidean norm, in place.
func renormalize(v []float32) []float32 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	if ss > 0 {
		inv := 1 / math.Sqrt(ss)
		for i, x := range v {
			v[i] = float32(float64(x) * inv)
		}
	}
	return v
}
