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
