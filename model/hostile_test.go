package model_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/m40llm/m40llm/internal/errclass"
	"github.com/m40llm/m40llm/internal/hostile"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/stretchr/testify/assert"
)

// TestHostileFiles loads every file of the hostile corpus on the CPU and,
// when it loads, generates a few tokens: each ends in an error of one line
// that is not an internal one, or a normal run; none panics, takes a second
// or allocates more than 64 MiB.
func TestHostileFiles(t *testing.T) {
	loaded := 0
	for _, c := range hostile.Corpus(t) {
		t.Run(c.Name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			err := loadAndGenerate(c.Path)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if err != nil {
				msg := err.Error()
				assert.NotContains(t, msg, "\n", "one line")
				assert.NotContains(t, msg, "panic")
				assert.NotEqual(t, errclass.Internal, errclass.Of(err), "a classified error: %v", err)
				t.Log(msg)
			} else {
				loaded++
				t.Log("loaded and generated")
			}
			assert.Less(t, elapsed, time.Second)
			assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<20), "bytes allocated")
		})
	}
	t.Logf("%d files loaded and generated", loaded)
}

// loadAndGenerate loads path on the CPU and generates 4 tokens, turning a
// panic into an error that names it.
func loadAndGenerate(path string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	m, err := model.Load(path, cpu.New(cpu.Options{Threads: 1}), model.Options{CtxSize: 64})
	if err != nil {
		return err
	}
	defer m.Close()
	s, err := m.NewSession(0)
	if err != nil {
		return err
	}
	prompt := m.Tokenizer.Encode("Once upon a time", true, true)
	if len(prompt) == 0 {
		prompt = []int32{0}
	}
	var text strings.Builder
	_, err = s.Generate(context.Background(), prompt, model.GenerateOptions{MaxTokens: 4, Sampling: model.Greedy()}, func(p string) error {
		text.WriteString(p)
		return nil
	})
	return err
}
