package model_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseCacheType(t *testing.T) {
	for _, ct := range model.CacheTypes() {
		got, err := model.ParseCacheType(strings.ToUpper(ct.String()))
		require.NoError(t, err)
		assert.Equal(t, ct, got)
	}
	_, err := model.ParseCacheType("q5_1")
	var oe *model.OptionError
	require.ErrorAs(t, err, &oe)
	assert.Contains(t, err.Error(), "accepted values: f32, f16, q8_0, q4_0")
}

// f16Only is a backend that does not implement model.CacheTyper.
type f16Only struct{ model.Backend }

// TestLoadRefusesCacheTypes checks that a cache type the model's heads or
// the backend cannot take is refused before any tensor is loaded, with
// one line that lists the accepted values.
func TestLoadRefusesCacheTypes(t *testing.T) {
	tests := []struct {
		name string
		be   func() model.Backend
		opts model.Options
		msg  string
	}{
		{"head dim 8 q8_0 keys", func() model.Backend { return cpu.New(cpu.Options{}) }, model.Options{CacheTypeK: model.CacheQ8_0},
			"CacheTypeK: q8_0: the model's head dimension 8 is not a multiple of the type's 32-element blocks"},
		{"head dim 8 q4_0 values", func() model.Backend { return cpu.New(cpu.Options{}) }, model.Options{CacheTypeV: model.CacheQ4_0},
			"CacheTypeV: q4_0: the model's head dimension 8"},
		{"not a type", func() model.Backend { return cpu.New(cpu.Options{}) }, model.Options{CacheTypeK: 9}, "cachetype(9): not a cache type"},
		{"backend without CacheTyper", func() model.Backend { return f16Only{cpu.New(cpu.Options{})} }, model.Options{CacheTypeK: model.CacheF32},
			"f32: the cpu backend supports f16 caches only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loaded := 0
			opts := tt.opts
			opts.CtxSize = 16
			opts.Progress = func(done, total int64) { loaded++ }
			_, err := model.Load(fixture.BundledModel(t), tt.be(), opts)
			var oe *model.OptionError
			require.True(t, errors.As(err, &oe), "%v", err)
			assert.Contains(t, err.Error(), tt.msg)
			assert.Contains(t, err.Error(), "(accepted values: f32, f16, q8_0, q4_0)")
			assert.NotContains(t, err.Error(), "\n")
			assert.Zero(t, loaded, "refused before loading")
		})
	}
}

// TestCacheTypesSize loads stories260K with f32 and f16 caches: both
// load, and the cache is held at its real size.
func TestCacheTypesSize(t *testing.T) {
	for _, c := range []struct {
		ct   model.CacheType
		size int64
	}{{model.CacheF32, 4}, {model.CacheF16, 2}} {
		be := cpu.New(cpu.Options{})
		m := loadCPUWith(t, be, model.Options{CtxSize: 16, CacheTypeK: c.ct, CacheTypeV: c.ct})
		cfg := m.Config
		want := int64(cfg.Layers) * 16 * int64(cfg.KVDim()+cfg.VDim()) * c.size
		assert.Equal(t, want, be.KVBytes(), c.ct.String())
		assert.Equal(t, want, m.KV().Bytes(), c.ct.String())
	}
}

func loadCPUWith(t *testing.T, be model.Backend, opts model.Options) *model.Model {
	t.Helper()
	m, err := model.Load(fixture.BundledModel(t), be, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}
