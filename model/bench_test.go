package model_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
)

func benchModel(b *testing.B, path string, opts model.Options) *model.Model {
	b.Helper()
	m, err := model.Load(path, cpu.New(cpu.Options{}), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

func randomTokens(n, vocab int) []int32 {
	r := rand.New(rand.NewPCG(1, 2))
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(r.IntN(vocab))
	}
	return ids
}

// BenchmarkPrompt measures prompt processing (pp128) on the bundled model.
func BenchmarkPrompt(b *testing.B) {
	m := benchModel(b, fixture.BundledModel(b), model.Options{CtxSize: 512})
	s, _ := m.NewSession(0)
	ids := randomTokens(128, m.Config.VocabSize)
	b.ReportAllocs()
	for b.Loop() {
		s.Reset()
		if _, err := s.Eval(context.Background(), ids); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ids)*b.N)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkDecode measures single-token decode (tg128) on the bundled model.
func BenchmarkDecode(b *testing.B) {
	m := benchModel(b, fixture.BundledModel(b), model.Options{CtxSize: 512})
	s, _ := m.NewSession(0)
	ids := randomTokens(128, m.Config.VocabSize)
	b.ReportAllocs()
	tokens := 0
	for b.Loop() {
		s.Reset()
		for _, id := range ids {
			if _, err := s.Eval(context.Background(), []int32{id}); err != nil {
				b.Fatal(err)
			}
		}
		tokens += len(ids)
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkEmbed measures a mean-pooled embedding of 128 tokens on the
// bundled model: BenchmarkPrompt's pass with every row's hidden state
// read back instead of the last row's logits.
func BenchmarkEmbed(b *testing.B) {
	m := benchModel(b, fixture.BundledModel(b), model.Options{CtxSize: 512})
	s, _ := m.NewSession(0)
	ids := randomTokens(128, m.Config.VocabSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Embed(context.Background(), ids, model.EmbedOptions{Pooling: model.PoolingMean}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ids)*b.N)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkSubmitAll: four requests of one 200-token prompt and 8
// generated tokens each, submitted together, with the prompt evaluated
// once and copied (copy) or evaluated in every slot (each: a decorator
// hides the CPU backend's SlotCopier). Every iteration starts from empty
// sessions.
func BenchmarkSubmitAll(b *testing.B) {
	const n = 4
	for _, c := range []struct {
		name string
		be   func() model.Backend
	}{
		{"copy", func() model.Backend { return cpu.New(cpu.Options{}) }},
		{"each", func() model.Backend { return decorated{cpu.New(cpu.Options{})} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			m, err := model.Load(fixture.BundledModel(b), c.be(), model.Options{Slots: n, CtxSize: 256})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			ids := randomTokens(200, m.Config.VocabSize)
			ctx := context.Background()
			for b.Loop() {
				eo := model.EngineOptions{}
				for i := range n {
					s, err := m.NewSession(i)
					if err != nil {
						b.Fatal(err)
					}
					eo.Sessions = append(eo.Sessions, s)
				}
				e := model.NewEngine(m, eo)
				reqs := make([]*model.Request, n)
				for i := range reqs {
					reqs[i] = &model.Request{Prompt: ids, Options: model.GenerateOptions{MaxTokens: 8, IgnoreEOS: true, Sampling: model.Greedy()}}
				}
				jobs, err := e.SubmitAll(ctx, reqs)
				if err != nil {
					b.Fatal(err)
				}
				for _, j := range jobs {
					if _, _, err := j.Wait(ctx); err != nil {
						b.Fatal(err)
					}
				}
				e.Close()
			}
		})
	}
}
