package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// jsonKind names the JSON type of a decoded value.
func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return "?"
}

// TestBenchMatchesLlamaBench compares bench's JSON, field by field, with
// the output of a real llama-bench run on the same file and settings
// (testdata/llama-bench.d32676d.json says which build and command):
// every llama-bench field is there with the same JSON type, and the
// fields that describe the file, the test and the settings agree.
// n_batch is not compared: bench reports the batch it ran with (at most
// the context, 17 here), llama-bench the one asked for (2048). n_gpu_layers
// neither: llama-bench's -1 is "auto", bench says 0 on the CPU.
func TestBenchMatchesLlamaBench(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "llama-bench.d32676d.json"))
	require.NoError(t, err)
	var sample struct {
		Records []map[string]any `json:"records"`
	}
	require.NoError(t, json.Unmarshal(data, &sample))
	require.Len(t, sample.Records, 2, "a pp16 and a tg16 record")

	out, errs, code := runCLI(t, "", "bench", "-m", fixture.BundledModel(t), "-p", "16", "-n", "16", "-r", "2", "-t", "2",
		"-o", "json", "--backend", "cpu", "-ctk", "f16", "-ctv", "f16")
	require.Equal(t, 0, code, errs)
	var ours []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &ours), out)
	require.Len(t, ours, 2)

	same := []string{"model_filename", "model_size", "model_n_params", "n_prompt", "n_gen", "n_threads",
		"type_k", "type_v", "backends", "gpu_info", "cpu_info", "n_cpu_moe", "n_depth", "no_kv_offload", "embeddings",
		"tensor_split", "tensor_buft_overrides", "load_mode", "no_op_offload", "no_host", "cpu_mask", "cpu_strict",
		"build_number"}
	for i, want := range sample.Records {
		got := ours[i]
		for k, v := range want {
			require.Contains(t, got, k, "llama-bench's field %q", k)
			assert.Equal(t, jsonKind(v), jsonKind(got[k]), "type of %q", k)
		}
		for _, k := range same {
			assert.Equal(t, want[k], got[k], "record %d, %q", i, k)
		}
		assert.Len(t, got["samples_ns"], len(want["samples_ns"].([]any)))
		assert.Len(t, got["samples_ts"], len(want["samples_ts"].([]any)))
	}
}

// -ngl takes llama-bench's lists: 0 runs on the CPU backend; any other
// count places that many layers on the GPU, or, without a GPU, runs on the
// CPU and says that it ignored the count.
func TestBenchGPULayers(t *testing.T) {
	out, errs, code := runCLI(t, "", "bench", "-m", fixture.BundledModel(t), "-p", "0", "-n", "4", "-r", "1", "-ngl", "0,3", "-o", "json")
	require.Equal(t, 0, code, errs)
	var rs []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rs), out)
	require.Len(t, rs, 2)
	assert.Equal(t, "cpu", rs[0]["backend"])
	assert.Equal(t, "CPU", rs[0]["backends"])
	assert.EqualValues(t, 0, rs[0]["n_gpu_layers"])
	if rs[1]["backend"] == "cpu" {
		assert.Contains(t, errs, "no GPU, --n-gpu-layers 3 ignored")
		assert.EqualValues(t, 0, rs[1]["n_gpu_layers"])
	} else {
		assert.Equal(t, "cpu+cuda:0", rs[1]["backend"])
		assert.EqualValues(t, 3, rs[1]["n_gpu_layers"])
		assert.Equal(t, "layers 0-1 and the output on cpu, layers 2-4 on cuda:0", rs[1]["placement"])
	}

	_, errs, code = runCLI(t, "", "bench", "-m", fixture.BundledModel(t), "-p", "0", "-n", "4", "-r", "1", "-ngl", "0,x")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, `--n-gpu-layers "x": want auto or a number of layers`)
}
