"""Build small random-weight Hugging Face models and their reference logits.

Run on a machine with PyTorch and transformers:

    python3 tools/hffixtures/make_fixtures.py OUT_DIR

For each fixture it writes OUT_DIR/NAME/{config.json,model.safetensors} (the
model as transformers saves it) and OUT_DIR/NAME/logits.json (the logits
transformers computes for a fixed token sequence, float32, eager attention).
`go run ./tools/hf2gguf` then converts each model to GGUF with the same
conventions as llama.cpp's converter; model tests compare m40llm's logits on
those GGUF files with logits.json.
"""

import json
import os
import sys

import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

COMMON = dict(vocab_size=512, hidden_size=64, intermediate_size=128,
              num_hidden_layers=2, num_attention_heads=4)

FIXTURES = {
    # Llama 2 style: GQA, untied output, linear RoPE scaling.
    "llama-linear": (LlamaConfig, LlamaForCausalLM, dict(
        COMMON, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_theta=10000.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
        tie_word_embeddings=False)),
    # Llama 3.2 style: one KV head, tied embeddings, llama3 RoPE scaling
    # (rope_freqs.weight in GGUF).
    "llama3": (LlamaConfig, LlamaForCausalLM, dict(
        COMMON, num_key_value_heads=1, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        tie_word_embeddings=True)),
    # Qwen 2.5 style: Q/K/V biases, NeoX RoPE, tied embeddings.
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(
        COMMON, num_key_value_heads=2, max_position_embeddings=4096,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True)),
}

try:
    from transformers import Qwen3Config, Qwen3ForCausalLM
    # Qwen 3 style: per-head Q/K RMSNorm, head_dim != hidden/heads.
    FIXTURES["qwen3"] = (Qwen3Config, Qwen3ForCausalLM, dict(
        COMMON, num_key_value_heads=2, head_dim=32,
        max_position_embeddings=4096, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=False))
except ImportError:
    print("transformers", transformers.__version__, "has no Qwen3; skipping it")


def randomize(model, gen):
    """Weights ~N(0, 0.1); norm weights 1 + N(0, 0.1); biases N(0, 0.1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1 + 0.1 * r)
            else:
                p.copy_(0.1 * r)


def main(out):
    torch.set_grad_enabled(False)
    for i, (name, (cfg_cls, model_cls, kw)) in enumerate(FIXTURES.items()):
        gen = torch.Generator().manual_seed(1000 + i)
        cfg = cfg_cls(**kw)
        cfg._attn_implementation = "eager"
        model = model_cls(cfg).float().eval()
        randomize(model, gen)
        if cfg.tie_word_embeddings:
            model.tie_weights()
        ids = torch.randint(0, cfg.vocab_size, (1, 12), generator=gen)
        logits = model(input_ids=ids).logits[0].float()
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        with open(os.path.join(d, "logits.json"), "w") as f:
            json.dump({
                "provenance": "Hugging Face transformers %s, torch %s, %s, float32, eager attention"
                              % (transformers.__version__, torch.__version__, model_cls.__name__),
                "input_ids": ids[0].tolist(),
                "logits": [[round(float(v), 6) for v in row] for row in logits],
            }, f)
        print(name, "ok", tuple(logits.shape))


if __name__ == "__main__":
    main(sys.argv[1])
