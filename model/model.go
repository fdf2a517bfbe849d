package model

import (
	"errors"
	"fmt"
	"time"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model/tokenizer"
)

// Options configures Load.
type Options struct {
	// CtxSize is the number of positions the KV cache holds per slot;
	// 0 means the model's context length, capped at DefaultCtxSize.
	CtxSize int
	// Slots is the number of sequences that can be in flight at once
	// (each with its own KV cache region); 0 means 1.
	Slots int
	// BatchSize is the largest number of tokens one forward pass takes;
	// longer prompts are processed in chunks. 0 means DefaultBatchSize; it
	// must be at least Slots (Load fails with an *OptionError).
	BatchSize int
	// CacheTypeK and CacheTypeV are the types of the cached keys and
	// values; the zero value is CacheF16. Load refuses, before it loads
	// anything, a type the backend cannot run or whose blocks do not
	// divide the model's head dimension (an *OptionError).
	CacheTypeK, CacheTypeV CacheType
	// Progress, when set, is called as tensors are loaded.
	Progress func(done, total int64)
}

// Defaults for Options.
const (
	DefaultCtxSize   = 4096
	DefaultBatchSize = 512
)

// WeightCopier is implemented by backends that copy every weight during
// LoadWeight (a GPU) and so never read the data slice after the call;
// model.Load then closes the file once the weights are loaded. Without it
// (or when CopiesWeights reports false) the file stays mapped for the life
// of the Model, which is what a backend whose weights alias the mapping
// (the CPU backend) needs, and what a decorator that hides the wrapped
// backend's methods gets: the safe choice is the default.
type WeightCopier interface {
	CopiesWeights() bool
}

// Model is a loaded model: hyper-parameters, tokenizer and weights on a
// backend, with a KV cache of Slots × CtxSize positions. A Model runs one
// forward pass at a time; Forward serializes callers.
type Model struct {
	Config    *Config
	Weights   *Weights
	Tokenizer *tokenizer.Tokenizer
	// Metadata is the file's metadata (chat template, names, ...).
	Metadata *gguf.Metadata
	// LoadTime is how long Load took.
	LoadTime time.Duration

	be        Backend
	file      *gguf.File
	act       *activations
	ctxSize   int
	slots     int
	batchSize int
	typeK     CacheType
	typeV     CacheType
	sem       chan struct{}
}

// Load opens a GGUF model file and makes it ready on be. The Model takes
// ownership of be and closes it in Close.
func Load(path string, be Backend, opts Options) (*Model, error) {
	start := time.Now()
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := newModel(f, be, opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if wc, ok := be.(WeightCopier); ok && wc.CopiesWeights() {
		err := f.Close()
		m.file = nil
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	m.LoadTime = time.Since(start)
	return m, nil
}

// LoadFile makes the model in f ready on be, as Load does for a path: for
// a file already open, or one in memory (gguf.NewFile). The Model takes be
// but not f: f must stay open for as long as the Model is used, since the
// weights of a backend that is not a WeightCopier alias its data; closing
// the Model does not close f. It fails as Load does.
func LoadFile(f *gguf.File, be Backend, opts Options) (*Model, error) {
	start := time.Now()
	m, err := newModel(f, be, opts)
	if err != nil {
		return nil, err
	}
	m.file = nil // the caller's
	m.LoadTime = time.Since(start)
	return m, nil
}

func newModel(f *gguf.File, be Backend, opts Options) (*Model, error) {
	plan, err := PlanFile(f, opts)
	if err != nil {
		return nil, err
	}
	cfg := plan.Config
	tok, err := tokenizer.New(&f.Metadata)
	if err != nil {
		return nil, err
	}
	if tok.VocabSize() != cfg.VocabSize {
		return nil, &ConfigError{Key: "tokenizer.ggml.tokens", Msg: fmt.Sprintf("vocabulary has %d tokens, the model %d", tok.VocabSize(), cfg.VocabSize)}
	}
	m := &Model{Config: cfg, Tokenizer: tok, Metadata: &f.Metadata, be: be, file: f, sem: make(chan struct{}, 1)}
	kv := plan.KV
	m.ctxSize, m.slots, m.batchSize, m.typeK, m.typeV = kv.Ctx, kv.Slots, plan.Bufs[0][0], kv.TypeK, kv.TypeV
	if err := CheckCacheType(be, "CacheTypeK", m.typeK, cfg.HeadDim); err != nil {
		return nil, err
	}
	if err := CheckCacheType(be, "CacheTypeV", m.typeV, cfg.ValueDim); err != nil {
		return nil, err
	}
	if pl, ok := be.(Planner); ok {
		if err := pl.Plan(plan); err != nil {
			return nil, err
		}
	}
	if m.Weights, err = loadWeights(f, cfg, be, opts.Progress); err != nil {
		return nil, err
	}
	if err := be.InitKV(kv); err != nil {
		return nil, fmt.Errorf("allocating the KV cache (%d slots x %d positions): %w", m.slots, m.ctxSize, err)
	}
	if m.act, err = newActivations(be, cfg, m.batchSize); err != nil {
		return nil, err
	}
	return m, nil
}

// PlanPath is PlanFile for the model file at path, which it opens and
// closes; errors about the model name the path.
func PlanPath(path string, opts Options) (*Plan, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := PlanFile(f, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// PlanFile returns what loading the model in f with opts would allocate,
// without a backend: its Config, the file's tensors, the KV cache and the
// activation buffers (the Plan a Planner sees). It reads the metadata and
// checks the tensors' presence and shapes, failing as Load does on the
// file (*ConfigError, *TensorError, *UnsupportedError) and on the options
// (*OptionError); cache types are checked against a backend by Load.
func PlanFile(f *gguf.File, opts Options) (*Plan, error) {
	cfg, err := ConfigFromGGUF(&f.Metadata)
	if err != nil {
		return nil, err
	}
	if err := checkLayers(f, cfg); err != nil {
		return nil, err
	}
	if err := checkShapes(f, cfg); err != nil {
		return nil, err
	}
	ctx := opts.CtxSize
	if ctx <= 0 {
		ctx = min(cfg.ContextLength, DefaultCtxSize)
		if ctx <= 0 {
			ctx = DefaultCtxSize
		}
	}
	slots := max(opts.Slots, 1)
	batch := opts.BatchSize
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	batch = min(batch, ctx*slots)
	if batch < slots {
		return nil, &OptionError{Option: "BatchSize", Msg: fmt.Sprintf("%d is smaller than the %d slots: a step holds the next token of every slot", batch, slots)}
	}
	kv := KVConfig{Layers: cfg.Layers, Slots: slots, Ctx: ctx, KDim: cfg.KVDim(), VDim: cfg.VDim(), TypeK: opts.CacheTypeK, TypeV: opts.CacheTypeV}
	plan := &Plan{Config: cfg, KV: kv, Bufs: activationShapes(cfg, batch)}
	for i := range f.Tensors {
		plan.Tensors = append(plan.Tensors, &f.Tensors[i])
	}
	return plan, nil
}

// kvConfig is the KV cache the model's options ask for.
func (m *Model) kvConfig() KVConfig {
	c := m.Config
	return KVConfig{Layers: c.Layers, Slots: m.slots, Ctx: m.ctxSize, KDim: c.KVDim(), VDim: c.VDim(), TypeK: m.typeK, TypeV: m.typeV}
}

// KV returns the KV cache the model holds: its shape and types.
func (m *Model) KV() KVConfig { return m.kvConfig() }

// Backend returns the backend the model runs on.
func (m *Model) Backend() Backend { return m.be }

// CtxSize returns the KV cache positions per slot.
func (m *Model) CtxSize() int { return m.ctxSize }

// Slots returns the number of KV cache slots.
func (m *Model) Slots() int { return m.slots }

// BatchSize returns the largest batch one forward pass takes.
func (m *Model) BatchSize() int { return m.batchSize }

// Close frees the backend and the file mapping.
func (m *Model) Close() error {
	err := m.be.Close()
	if m.file != nil {
		err = errors.Join(err, m.file.Close())
		m.file = nil
	}
	return err
}

// Forward runs one forward pass over b (at most BatchSize tokens) and, for
// each index j of outRows, writes the logits of batch row outRows[j] to
// logits[j*vocab : (j+1)*vocab]. Positions must be below CtxSize and slots
// below Slots; a token's position must not skip past the ones already in
// its slot's cache. An invalid batch is an error, as is the backend's
// failure; when the backend is unusable the error matches ErrBackendFailed
// (see Err), and Forward then fails at once.
func (m *Model) Forward(b *Batch, outRows []int32, logits []float32) error {
	vocab := m.Config.VocabSize
	if len(logits) < len(outRows)*vocab {
		return fmt.Errorf("model: %d logits for %d output rows of %d", len(logits), len(outRows), vocab)
	}
	return m.forward(b, outRows, len(outRows), func() error {
		if len(outRows) == 0 {
			return m.be.Sync()
		}
		return m.be.Read(logits[:len(outRows)*vocab], m.act.out, len(outRows))
	})
}

// ForwardHidden runs one forward pass over b as Forward does, without the
// classifier: for each index j of rows it writes the hidden state of
// batch row rows[j] after the final norm (output_norm), Dim values, to
// hidden[j*Dim : (j+1)*Dim]. These are the rows embeddings are pooled
// from. It fails as Forward does, and when hidden is too short.
func (m *Model) ForwardHidden(b *Batch, rows []int32, hidden []float32) error {
	dim := m.Config.Dim
	if len(hidden) < len(rows)*dim {
		return fmt.Errorf("model: %d values for the hidden states of %d rows of %d", len(hidden), len(rows), dim)
	}
	return m.forward(b, rows, 0, func() error {
		if len(rows) == 0 {
			return m.be.Sync()
		}
		return m.be.Read(hidden[:len(rows)*dim], m.act.last, len(rows))
	})
}

// forwardMixed is the Batcher's pass: logits (k = 0) or the top k
// candidates (k > 0) of the first logitRows of outRows, into logits or
// ids and vals, and the hidden states of all of outRows into hidden
// (which the logit rows' occupy too, first). Any part may be empty.
func (m *Model) forwardMixed(b *Batch, outRows []int32, logitRows, k int, logits []float32, ids []int32, vals []float32, hidden []float32) error {
	vocab, dim := m.Config.VocabSize, m.Config.Dim
	switch {
	case logitRows < 0 || logitRows > len(outRows) || k < 0 || k > MaxTopK,
		k == 0 && len(logits) < logitRows*vocab,
		k > 0 && (len(ids) < logitRows*k || len(vals) < logitRows*k),
		logitRows < len(outRows) && len(hidden) < len(outRows)*dim:
		return fmt.Errorf("model: %d of %d output rows with logits (k=%d) into %d logits, %d ids, %d hidden values",
			logitRows, len(outRows), k, len(logits), len(ids), len(hidden))
	}
	return m.forward(b, outRows, logitRows, func() error {
		switch {
		case logitRows > 0 && k > 0:
			if err := m.be.ReadTopK(ids, vals, m.act.out, logitRows, k); err != nil {
				return err
			}
		case logitRows > 0:
			if err := m.be.Read(logits[:logitRows*vocab], m.act.out, logitRows); err != nil {
				return err
			}
		}
		if logitRows < len(outRows) {
			return m.be.Read(hidden[:len(outRows)*dim], m.act.last, len(outRows))
		}
		if logitRows == 0 {
			return m.be.Sync()
		}
		return nil
	})
}

// forward validates b and outRows, runs the forward pass (the classifier
// for the first logitRows of outRows) and then read, holding the model
// for both.
func (m *Model) forward(b *Batch, outRows []int32, logitRows int, read func() error) error {
	n := b.Len()
	if n == 0 || n > m.batchSize || len(b.Pos) != n || len(b.Slot) != n {
		return fmt.Errorf("model: batch of %d tokens (%d positions, %d slots); want 1 to %d of each", n, len(b.Pos), len(b.Slot), m.batchSize)
	}
	for i := range n {
		if b.Pos[i] < 0 || int(b.Pos[i]) >= m.ctxSize {
			return fmt.Errorf("%w: position %d is outside the %d-position context", ErrContextFull, b.Pos[i], m.ctxSize)
		}
		if b.Slot[i] < 0 || int(b.Slot[i]) >= m.slots {
			return fmt.Errorf("model: slot %d out of range (have %d)", b.Slot[i], m.slots)
		}
		if b.Tokens[i] < 0 || int(b.Tokens[i]) >= m.Config.VocabSize {
			return fmt.Errorf("model: token id %d out of range (vocabulary %d)", b.Tokens[i], m.Config.VocabSize)
		}
	}
	if len(outRows) > n {
		return fmt.Errorf("model: %d output rows for %d tokens", len(outRows), n)
	}
	for _, r := range outRows {
		if r < 0 || int(r) >= n {
			return fmt.Errorf("model: output row %d out of range", r)
		}
	}
	if err := m.Err(); err != nil {
		return err
	}
	m.sem <- struct{}{}
	defer func() { <-m.sem }()
	if err := forward(m.be, m.Config, m.Weights, m.act, b, outRows, logitRows); err != nil {
		return m.failure(err)
	}
	return m.failure(read())
}

// ForwardTopK is Forward that keeps, for each index j of outRows, only the
// k largest logits of batch row outRows[j]: their token IDs in
// ids[j*k:(j+1)*k] and their values in vals[j*k:(j+1)*k], in descending
// order with ties broken toward the lower ID, as TopK selects them (see
// Backend.ReadTopK: on a GPU only the candidates reach the host). k must
// be in 1..MaxTopK.
func (m *Model) ForwardTopK(b *Batch, outRows []int32, k int, ids []int32, vals []float32) error {
	if k < 1 || k > MaxTopK || len(outRows) == 0 || len(ids) < len(outRows)*k || len(vals) < len(outRows)*k {
		return fmt.Errorf("model: top-%d of %d rows into %d ids and %d values (k must be 1 to %d)", k, len(outRows), len(ids), len(vals), MaxTopK)
	}
	return m.forward(b, outRows, len(outRows), func() error {
		return m.be.ReadTopK(ids, vals, m.act.out, len(outRows), k)
	})
}

// CanCopySlots reports whether the backend copies cached positions
// between slots (SlotCopier), so that CopySlot works.
func (m *Model) CanCopySlots() bool {
	_, ok := m.be.(SlotCopier)
	return ok
}

// CopySlot copies the cached keys and values of positions 0..n-1 of slot
// src over those of slot dst (see SlotCopier), holding the model as a
// forward pass does; the Sessions of those slots are not told (the
// Batcher keeps them in step). It fails with an *UnsupportedError when
// the backend is not a SlotCopier, for slots out of range, dst == src or
// n outside 0..CtxSize, and with the backend's failure (matching
// ErrBackendFailed when it is unusable).
func (m *Model) CopySlot(dst, src, n int) error {
	sc, ok := m.be.(SlotCopier)
	switch {
	case !ok:
		return &UnsupportedError{What: "operation", Value: "KV-cache slot copy", By: m.be.Name() + " backend"}
	case dst < 0 || dst >= m.slots || src < 0 || src >= m.slots || dst == src:
		return fmt.Errorf("model: copy from slot %d to slot %d (have %d)", src, dst, m.slots)
	case n < 0 || n > m.ctxSize:
		return fmt.Errorf("model: copy of %d positions (the context holds %d)", n, m.ctxSize)
	}
	if err := m.Err(); err != nil {
		return err
	}
	m.sem <- struct{}{}
	defer func() { <-m.sem }()
	return m.failure(sc.CopySlot(dst, src, n))
}

// Err returns the failure that has made the model's backend unusable (a
// device fault), matching ErrBackendFailed, or nil while it works; every
// later forward pass fails with it.
func (m *Model) Err() error {
	if err := m.be.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrBackendFailed, err)
	}
	return nil
}

// activationShapes lists the (rows, cols) of the buffers newActivations
// allocates, in the order of the activations fields.
func activationShapes(c *Config, rows int) [][2]int {
	widths := activationWidths(c)
	shapes := make([][2]int, len(widths))
	for i, w := range widths {
		shapes[i] = [2]int{rows, w}
	}
	return shapes
}
