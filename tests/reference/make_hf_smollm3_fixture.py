#!/usr/bin/env python3
"""Writes tests/fixtures/hf/tiny_smollm3/: a tiny random SmolLM3 saved by transformers' own SmolLM3ForCausalLM
(save_pretrained, so config.json is in the form that transformers version writes: v5's rope_parameters / dtype),
with NoPE on every 4th layer as SmolLM3-3B has, tied embeddings, and the float64 logits of a fixed input
(reference_logits.safetensors: input_ids I64 [T], logits F32 [T, V]).

Needs transformers >= 4.53 (SmolLM3) and torch >= 2, from PyPI (Debian's python3-torch 1.13 is too old):
    python3 -m venv /tmp/kiln-hf5 && /tmp/kiln-hf5/bin/pip install "torch>=2.1" "transformers>=4.53" safetensors
    /tmp/kiln-hf5/bin/python tests/reference/make_hf_smollm3_fixture.py
Deterministic (seeded). The ctest trainer.hf_smollm3 imports it into tests/recipes/tiny_smollm3.hpp and compares.

With --yarn it writes tests/fixtures/hf/tiny_smollm3_yarn/ instead: the same model with transformers' YaRN
(rope_parameters {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 16}, max_position_embeddings
64), which trainer.hf_smollm3_yarn imports into tests/recipes/tiny_smollm3_yarn.hpp (YaRN<RNoPE<4, 50000>, 4.0, 16>):
Kiln's attention with YaRN's frequencies and attention factor against transformers' logits. transformers 5.25.0 with
torch 2.15.0 made it.
"""
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import SmolLM3Config, SmolLM3ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
YARN = "--yarn" in sys.argv[1:]
OUT = os.path.join(ROOT, "tests", "fixtures", "hf", "tiny_smollm3_yarn" if YARN else "tiny_smollm3")


def main():
    torch.manual_seed(4321)
    torch.set_num_threads(1)
    layers, interval = 4, 4
    cfg = SmolLM3Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=50000.0,
                        max_position_embeddings=64, tie_word_embeddings=True,
                        no_rope_layers=[int((i + 1) % interval != 0) for i in range(layers)],
                        no_rope_layer_interval=interval, use_sliding_window=False, bos_token_id=None,
                        eos_token_id=2, pad_token_id=None, attn_implementation="eager")
    if YARN:
        cfg.rope_parameters = {"rope_type": "yarn", "rope_theta": 50000.0, "factor": 4.0,
                               "original_max_position_embeddings": 16}
    model = SmolLM3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.15 * torch.randn_like(p))
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(0, cfg.vocab_size, (1, 24), generator=g)
    with torch.no_grad():
        l64 = model.double()(ids).logits[0].clone()
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    model.float().save_pretrained(OUT, safe_serialization=True)
    save_file({"input_ids": ids[0].to(torch.int64).contiguous(), "logits": l64.to(torch.float32).contiguous()},
              os.path.join(OUT, "reference_logits.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(OUT, "config.json")) as f:
        c = json.load(f)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: wrote {OUT} "
          f"({sorted(os.listdir(OUT))}); no_rope_layers {c.get('no_rope_layers')}, rope form "
          f"{'rope_parameters' if 'rope_parameters' in c else 'rope_theta'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
