package model

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/m40llm/m40llm/gguf"
)

// BufWriter is implemented by backends that fill a buffer from host
// memory: Write copies src into the first len(src)/dst.Cols() rows of dst
// once the work recorded before it is done. It fails as Sync does, or
// when src does not fit dst. A Split moves activations between its stages
// with Read and Write.
type BufWriter interface {
	Write(dst Buf, src []float32) error
}

// WeightStreamer is implemented by backends that run a product with a
// matrix held in host memory, copying its stored bytes for that product
// only: a GPU running the prompt products of layers placed on the CPU, as
// llama.cpp does. StreamMatMul is MatMul (no bias) with the matrix ti
// whose bytes, as the file stores them, are data; it returns false,
// having done nothing, when it cannot take the matrix (no room, a type it
// does not run), and fails as Sync does.
type WeightStreamer interface {
	StreamMatMul(dst, x Buf, ti *gguf.TensorInfo, data []byte, n int) (bool, error)
}

// StreamMinRows is the smallest batch whose products with weights of a
// stage that is not a WeightStreamer run on a streaming stage instead
// (llama.cpp's threshold for running CPU-held weights on the GPU): large
// enough that the product's arithmetic outweighs copying the matrix.
const StreamMinRows = 32

// Stage is one backend's share of a Split: Layers consecutive layers of
// the model. The stages of a Split hold the layers in order: the first
// stage layers 0..Layers-1, the next the following ones, and so on.
type Stage struct {
	Backend Backend
	Layers  int
}

// MaxStages bounds the stages of a Split.
const MaxStages = 64

// Split is a Backend that runs one model over several backends, each
// holding consecutive layers with their weights and KV cache (llama.cpp's
// layer split): the forward pass is written once, and Split sends each op
// to the stage that holds its weight or its layer's cache. The token
// embedding lives on the first stage, the final norm and the classifier
// on the output stage (with tied embeddings the table is loaded on both).
//
// Every activation buffer exists on every stage; a buffer remembers which
// stages hold its current values, and an op on a stage that does not
// first copies the rows it reads there (Read from the stage that has them,
// Write to the one that needs them). In a forward pass that happens only
// where one stage's layers end and the next one's begin, and for the
// classifier's input when the output stage differs from the last layer's.
//
// Errors: a failed copy fails the step (returned by the next Read,
// ReadTopK or Sync, cleared by SetBatch); a stage that has become
// unusable makes Err report it.
type Split struct {
	stages []splitStage
	owner  []int // layer → stage
	output int   // stage of output_norm and output
	tied   bool  // the file has no output.weight: token_embd is the classifier

	cur   int          // stage of the last op, -1 after SetBatch
	host  []float32    // staging for copies between stages
	err   error        // the step's first copy failure
	ropes []RopeParams // by stage: Rope's parameters with the stage's factors

	copies   int   // rows-copies between stages, for Transfers
	bytes    int64 // bytes moved between stages
	streamed int   // products run by StreamMatMul
	streamer int   // the stage that streams, -1 for none
}

// splitStage is one stage; it does not change after NewSplit, so that the
// methods other goroutines may call (Err, MemoryUsage, Name) read it while
// a forward pass runs.
type splitStage struct {
	be            Backend
	w             BufWriter
	first, layers int
}

// splitWeight is a tensor with a copy on each stage that holds it.
type splitWeight struct {
	rows, cols int
	home       int      // the first stage that holds it
	on         []Weight // by stage; nil where not held
	// ti and data are the tensor and its bytes when the home stage's
	// copy aliases the file's mapping, which stays for the model's life:
	// a streaming stage can then run its products.
	ti   *gguf.TensorInfo
	data []byte
}

func (w *splitWeight) Shape() (int, int) { return w.rows, w.cols }

// splitBuf is an activation buffer with one copy per stage; valid has bit
// s set when stage s's copy holds the current values of the rows the last
// op wrote.
type splitBuf struct {
	rows, cols int
	on         []Buf
	valid      uint64
}

func (b *splitBuf) Rows() int { return b.rows }
func (b *splitBuf) Cols() int { return b.cols }

var (
	_ Backend        = (*Split)(nil)
	_ Planner        = (*Split)(nil)
	_ CacheTyper     = (*Split)(nil)
	_ MemoryReporter = (*Split)(nil)
	_ WeightCopier   = (*Split)(nil)
)

// NewSplit returns a Split over stages, in layer order, with the final norm
// and the classifier on stages[output]. The Split takes ownership of the
// backends and closes them in Close. It fails when there are no stages or
// more than MaxStages, a backend is nil or cannot Write (BufWriter), a
// layer count is negative, or output is not a stage; the layer counts must
// add up to the model's (Plan and InitKV check that).
func NewSplit(stages []Stage, output int) (*Split, error) {
	if len(stages) == 0 || len(stages) > MaxStages {
		return nil, fmt.Errorf("model: a split of %d stages: want 1 to %d", len(stages), MaxStages)
	}
	if output < 0 || output >= len(stages) {
		return nil, fmt.Errorf("model: split output stage %d of %d stages", output, len(stages))
	}
	layers := make([]int, len(stages))
	for i, st := range stages {
		if st.Layers < 0 {
			return nil, fmt.Errorf("model: split stage %d holds %d layers", i, st.Layers)
		}
		layers[i] = st.Layers
	}
	s := splitOf(layers, output)
	for i, st := range stages {
		if st.Backend == nil {
			return nil, fmt.Errorf("model: split stage %d has no backend", i)
		}
		w, ok := st.Backend.(BufWriter)
		if !ok {
			return nil, fmt.Errorf("model: split stage %d: the %s backend cannot take host data (no Write)", i, st.Backend.Name())
		}
		s.stages[i].be, s.stages[i].w = st.Backend, w
		if _, ok := st.Backend.(WeightStreamer); ok && s.streamer < 0 {
			s.streamer = i
		}
	}
	return s, nil
}

// splitOf returns a Split of stages holding layers[i] each, without
// backends: enough to route tensors and plans (Fit).
func splitOf(layers []int, output int) *Split {
	s := &Split{output: output, cur: -1, tied: true, streamer: -1, ropes: make([]RopeParams, len(layers))}
	for i, n := range layers {
		s.stages = append(s.stages, splitStage{first: len(s.owner), layers: n})
		for range n {
			s.owner = append(s.owner, i)
		}
	}
	return s
}

// Stages returns the stages, in layer order.
func (s *Split) Stages() []Stage {
	out := make([]Stage, len(s.stages))
	for i, st := range s.stages {
		out[i] = Stage{Backend: st.be, Layers: st.layers}
	}
	return out
}

// OutputStage returns the index of the stage that holds the classifier.
func (s *Split) OutputStage() int { return s.output }

// Placement describes, in one line, which stage holds which layers and the
// classifier: "layers 0-9 on cpu, layers 10-21 and the output on cuda:0".
func (s *Split) Placement() string {
	var parts []string
	for i, st := range s.stages {
		var what []string
		switch st.layers {
		case 0:
		case 1:
			what = append(what, fmt.Sprintf("layer %d", st.first))
		default:
			what = append(what, fmt.Sprintf("layers %d-%d", st.first, st.first+st.layers-1))
		}
		if i == s.output {
			what = append(what, "the output")
		}
		if len(what) > 0 {
			parts = append(parts, strings.Join(what, " and ")+" on "+st.be.Name())
		}
	}
	return strings.Join(parts, ", ")
}

// LayersByDevice returns how many layers each backend of be holds, by
// backend name: a Split's stages (stages of one name summed), else every
// layer on be.
func LayersByDevice(be Backend, layers int) map[string]int {
	sp, ok := be.(*Split)
	if !ok {
		return map[string]int{be.Name(): layers}
	}
	out := map[string]int{}
	for _, st := range sp.stages {
		out[st.be.Name()] += st.layers
	}
	return out
}

// Transfers returns how many buffer copies between stages the Split has
// made and the bytes they moved.
func (s *Split) Transfers() (copies int, bytes int64) { return s.copies, s.bytes }

// Streamed returns how many products a streaming stage has run with
// weights of another stage (see WeightStreamer).
func (s *Split) Streamed() int { return s.streamed }

// Name joins the stages' names with "+": "cpu+cuda:0".
func (s *Split) Name() string {
	names := make([]string, len(s.stages))
	for i, st := range s.stages {
		names[i] = st.be.Name()
	}
	return strings.Join(names, "+")
}

// homes returns the stages that hold the tensor named name: a layer's on
// the layer's stage, the token embedding on the first (and on the output
// stage when it is also the classifier), the final norm and the classifier
// on the output stage, the RoPE factors on every stage. A layer the model
// does not have is on none.
func (s *Split) homes(name string) []int {
	switch name {
	case "token_embd.weight":
		if s.tied && s.output != 0 {
			return []int{0, s.output}
		}
		return []int{0}
	case "output_norm.weight", "output.weight":
		return []int{s.output}
	case "rope_freqs.weight":
		all := make([]int, len(s.stages))
		for i := range all {
			all[i] = i
		}
		return all
	}
	if rest, ok := strings.CutPrefix(name, "blk."); ok {
		num, _, _ := strings.Cut(rest, ".")
		l, err := strconv.Atoi(num)
		if err != nil || l < 0 || l >= len(s.owner) {
			return nil
		}
		return []int{s.owner[l]}
	}
	return []int{0}
}

// checkLayers fails unless the stages hold the model's layers.
func (s *Split) checkLayers(layers int) error {
	if len(s.owner) != layers {
		return &OptionError{Option: "split", Msg: fmt.Sprintf("the stages hold %d layers, the model has %d", len(s.owner), layers)}
	}
	return nil
}

// Plan checks each stage's share of p with the stage's Planner, if it has
// one: the tensors it holds, its layers' KV cache and every buffer.
func (s *Split) Plan(p *Plan) error {
	if err := s.checkLayers(p.Config.Layers); err != nil {
		return err
	}
	for i, sub := range s.plans(p) {
		if pl, ok := s.stages[i].be.(Planner); ok {
			if err := pl.Plan(sub); err != nil {
				return fmt.Errorf("split stage %d (%d layers from %d) on %s: %w", i, s.stages[i].layers, s.stages[i].first, s.stages[i].be.Name(), err)
			}
		}
	}
	return nil
}

// plans splits p into each stage's plan, and learns from p's tensors
// whether the embeddings are tied.
func (s *Split) plans(p *Plan) []*Plan {
	s.tied = true
	for _, ti := range p.Tensors {
		if ti.Name == "output.weight" {
			s.tied = false
		}
	}
	subs := make([]*Plan, len(s.stages))
	for i, st := range s.stages {
		kv := p.KV
		kv.Layers = st.layers
		subs[i] = &Plan{Config: p.Config, KV: kv, Bufs: p.Bufs}
	}
	for _, ti := range p.Tensors {
		for _, h := range s.homes(ti.Name) {
			subs[h].Tensors = append(subs[h].Tensors, ti)
		}
	}
	return subs
}

// LoadWeight loads the tensor on every stage that holds it.
func (s *Split) LoadWeight(ti *gguf.TensorInfo, data []byte) (Weight, error) {
	homes := s.homes(ti.Name)
	if len(homes) == 0 {
		return nil, fmt.Errorf("model: split: tensor %q belongs to no layer of the %d", ti.Name, len(s.owner))
	}
	w := &splitWeight{rows: int(ti.Rows()), cols: int(ti.Dims[0]), home: homes[0], on: make([]Weight, len(s.stages))}
	for _, h := range homes {
		sw, err := s.stages[h].be.LoadWeight(ti, data)
		if err != nil {
			return nil, err
		}
		w.on[h] = sw
	}
	if wc, ok := s.stages[w.home].be.(WeightCopier); (!ok || !wc.CopiesWeights()) && !s.CopiesWeights() {
		w.ti, w.data = ti, data
	}
	return w, nil
}

// NewBuf allocates the buffer on every stage.
func (s *Split) NewBuf(rows, cols int) (Buf, error) {
	b := &splitBuf{rows: rows, cols: cols, on: make([]Buf, len(s.stages))}
	for i, st := range s.stages {
		sb, err := st.be.NewBuf(rows, cols)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", st.be.Name(), err)
		}
		b.on[i] = sb
	}
	b.valid = 1<<len(s.stages) - 1 // all zero alike
	return b, nil
}

// InitKV allocates each stage's layers of the cache on it.
func (s *Split) InitKV(cfg KVConfig) error {
	if err := s.checkLayers(cfg.Layers); err != nil {
		return err
	}
	for _, st := range s.stages {
		if st.layers == 0 {
			continue
		}
		c := cfg
		c.Layers = st.layers
		if err := st.be.InitKV(c); err != nil {
			return fmt.Errorf("%s: %w", st.be.Name(), err)
		}
	}
	return nil
}

// SupportsCacheType reports whether every stage runs t.
func (s *Split) SupportsCacheType(t CacheType) bool {
	for _, st := range s.stages {
		ct, ok := st.be.(CacheTyper)
		if ok && !ct.SupportsCacheType(t) || !ok && t != CacheF16 {
			return false
		}
	}
	return true
}

// CopiesWeights reports whether every stage copies its weights, so that
// the file need not stay mapped.
func (s *Split) CopiesWeights() bool {
	for _, st := range s.stages {
		if wc, ok := st.be.(WeightCopier); !ok || !wc.CopiesWeights() {
			return false
		}
	}
	return true
}

// MemoryUsage sums the device memory of the stages that hold some; the
// device fields are the first such stage's.
func (s *Split) MemoryUsage() MemoryUsage {
	var u MemoryUsage
	for _, st := range s.stages {
		mr, ok := st.be.(MemoryReporter)
		if !ok {
			continue
		}
		m := mr.MemoryUsage()
		u.Weights += m.Weights
		u.KV += m.KV
		u.Activations += m.Activations
		u.Scratch += m.Scratch
		if u.DeviceTotal == 0 {
			u.DeviceUsed, u.DeviceTotal = m.DeviceUsed, m.DeviceTotal
		}
	}
	return u
}

// SetBatch sets the batch on every stage and starts a new step.
func (s *Split) SetBatch(b *Batch) error {
	s.err, s.cur = nil, -1
	for _, st := range s.stages {
		if err := st.be.SetBatch(b); err != nil {
			return err
		}
	}
	return nil
}

// weight returns the stage an op with weight w runs on (the current
// stage when it holds a copy, else the weight's first) and that copy.
func (s *Split) weight(w Weight) (int, Weight) {
	sw := w.(*splitWeight)
	if s.cur >= 0 && sw.on[s.cur] != nil {
		return s.cur, sw.on[s.cur]
	}
	return sw.home, sw.on[sw.home]
}

// on returns stage st's copy of w, which must be there.
func (s *Split) on(w Weight, st int) Weight {
	if w == nil {
		return nil
	}
	sw := w.(*splitWeight).on[st]
	if sw == nil {
		panic(fmt.Sprintf("model: split: a weight of stage %d used on stage %d", w.(*splitWeight).home, st))
	}
	return sw
}

// here returns the stage an op without weights runs on: the current one,
// else one that holds x.
func (s *Split) here(x Buf) int {
	if s.cur >= 0 {
		return s.cur
	}
	return bits.TrailingZeros64(x.(*splitBuf).valid)
}

// need makes the first n rows of x current on stage st, copying them from
// a stage that has them, and returns st's copy.
func (s *Split) need(st int, x Buf, n int) Buf {
	b := x.(*splitBuf)
	if b.valid&(1<<st) != 0 || n == 0 {
		return b.on[st]
	}
	src := bits.TrailingZeros64(b.valid)
	k := n * b.cols
	if cap(s.host) < k {
		s.host = make([]float32, k)
	}
	h := s.host[:k]
	err := s.stages[src].be.Read(h, b.on[src], n)
	if err == nil {
		err = s.stages[st].w.Write(b.on[st], h)
	}
	if err != nil && s.err == nil {
		s.err = fmt.Errorf("model: copying %d rows from %s to %s: %w", n, s.stages[src].be.Name(), s.stages[st].be.Name(), err)
	}
	b.valid |= 1 << st
	s.copies++
	s.bytes += 4 * int64(k)
	return b.on[st]
}

// wrote marks x as written by stage st, which runs the op, and returns
// st's copy.
func (s *Split) wrote(st int, x Buf) Buf {
	b := x.(*splitBuf)
	b.valid = 1 << st
	s.cur = st
	return b.on[st]
}

// Embed runs on the stage that holds the table.
func (s *Split) Embed(dst Buf, table Weight, n int) {
	st, t := s.weight(table)
	s.stages[st].be.Embed(s.wrote(st, dst), t, n)
}

// RMSNorm runs on the stage that holds w.
func (s *Split) RMSNorm(dst, x Buf, w Weight, n int, eps float32) {
	st, ww := s.weight(w)
	xs := s.need(st, x, n)
	s.stages[st].be.RMSNorm(s.wrote(st, dst), xs, ww, n, eps)
}

// HeadRMSNorm runs on the stage that holds w.
func (s *Split) HeadRMSNorm(x Buf, w Weight, n, headDim int, eps float32) {
	st, ww := s.weight(w)
	s.need(st, x, n)
	s.stages[st].be.HeadRMSNorm(s.wrote(st, x), ww, n, headDim, eps)
}

// MatMul runs on the stage that holds w, or, for a batch of StreamMinRows
// or more, on the streaming stage when w's stage is not one and the
// streaming stage takes it.
func (s *Split) MatMul(dst, x Buf, w Weight, bias Weight, n int) {
	st, ww := s.weight(w)
	if g := s.streamer; n >= StreamMinRows && bias == nil && g >= 0 && st != g && w.(*splitWeight).data != nil {
		if _, streams := s.stages[st].be.(WeightStreamer); !streams {
			sw := w.(*splitWeight)
			xs := s.need(g, x, n)
			ok, err := s.stages[g].be.(WeightStreamer).StreamMatMul(dst.(*splitBuf).on[g], xs, sw.ti, sw.data, n)
			if err != nil && s.err == nil {
				s.err = fmt.Errorf("model: %s streaming %s: %w", s.stages[g].be.Name(), sw.ti.Name, err)
			}
			if ok || err != nil {
				s.wrote(g, dst)
				s.streamed++
				return
			}
		}
	}
	xs := s.need(st, x, n)
	s.stages[st].be.MatMul(s.wrote(st, dst), xs, ww, s.on(bias, st), n)
}

// Rope runs on the current stage with that stage's copy of the factors.
func (s *Split) Rope(x Buf, n, headDim int, p *RopeParams) {
	st := s.here(x)
	s.need(st, x, n)
	rp := &s.ropes[st]
	*rp = *p
	rp.Factors = s.on(p.Factors, st)
	s.stages[st].be.Rope(s.wrote(st, x), n, headDim, rp)
}

// Attention runs on the stage that holds layer's cache.
func (s *Split) Attention(dst, q, k, v Buf, layer, n int, p *AttnParams) {
	st := s.owner[layer]
	qs, ks, vs := s.need(st, q, n), s.need(st, k, n), s.need(st, v, n)
	s.stages[st].be.Attention(s.wrote(st, dst), qs, ks, vs, layer-s.stages[st].first, n, p)
}

// SwiGLU runs on the current stage.
func (s *Split) SwiGLU(dst, gate, up Buf, n int) {
	st := s.here(gate)
	gs, us := s.need(st, gate, n), s.need(st, up, n)
	s.stages[st].be.SwiGLU(s.wrote(st, dst), gs, us, n)
}

// Add runs on the current stage.
func (s *Split) Add(dst, x Buf, n int) {
	st := s.here(dst)
	s.need(st, dst, n)
	xs := s.need(st, x, n)
	s.stages[st].be.Add(s.wrote(st, dst), xs, n)
}

// GatherRows runs on the current stage.
func (s *Split) GatherRows(dst, src Buf, rows []int32) {
	st := s.here(src)
	n := 0
	for _, r := range rows {
		n = max(n, int(r)+1)
	}
	ss := s.need(st, src, n)
	s.stages[st].be.GatherRows(s.wrote(st, dst), ss, rows)
}

// source returns a stage that holds x's current values, the current
// stage when it does.
func (s *Split) source(x Buf) int {
	b := x.(*splitBuf)
	if s.cur >= 0 && b.valid&(1<<s.cur) != 0 {
		return s.cur
	}
	return bits.TrailingZeros64(b.valid)
}

// syncOthers waits for every stage but st and returns the step's first
// error.
func (s *Split) syncOthers(st int) error {
	errs := []error{s.err}
	for i, o := range s.stages {
		if i != st {
			errs = append(errs, o.be.Sync())
		}
	}
	return errors.Join(errs...)
}

// Read reads src from a stage that holds it, after every stage's work.
func (s *Split) Read(dst []float32, src Buf, n int) error {
	st := s.source(src)
	if err := s.syncOthers(st); err != nil {
		return err
	}
	return s.stages[st].be.Read(dst, src.(*splitBuf).on[st], n)
}

// ReadTopK selects on a stage that holds src, after every stage's work.
func (s *Split) ReadTopK(ids []int32, vals []float32, src Buf, n, k int) error {
	st := s.source(src)
	if err := s.syncOthers(st); err != nil {
		return err
	}
	return s.stages[st].be.ReadTopK(ids, vals, src.(*splitBuf).on[st], n, k)
}

// Sync waits for every stage.
func (s *Split) Sync() error { return s.syncOthers(-1) }

// Err returns the first stage's failure, if any stage has failed.
func (s *Split) Err() error {
	for _, st := range s.stages {
		if err := st.be.Err(); err != nil {
			return fmt.Errorf("%s: %w", st.be.Name(), err)
		}
	}
	return nil
}

// Close closes every stage.
func (s *Split) Close() error {
	var errs []error
	for _, st := range s.stages {
		errs = append(errs, st.be.Close())
	}
	return errors.Join(errs...)
}
