#!/usr/bin/env python3
"""Writes tests/fixtures/hf/tiny_llama/: a tiny random Llama saved by transformers' save_pretrained, and the logits
transformers computes with it for a fixed input, for the C++ test that imports it into Kiln (tests/hf_interop_test.sh,
recipe tests/recipes/tiny_llama.hpp).

Model: LlamaForCausalLM, vocab 128, hidden 64, 2 layers, 4 heads / 2 KV heads, ffn 128, rms_norm_eps 1e-5,
rope_theta 500000, untied embeddings. Weights are sampled (linear/embedding normal(0, 0.15), norms 1 + 0.1 normal, so
that the logits are far from uniform), rounded to bfloat16 and saved as BF16 shards (max_shard_size 100KB: the sharded
index path and Kiln's BF16 -> F32 conversion are both exercised). The reference logits are computed by transformers in
float64 from exactly those bf16 values (eager attention), stored as F32 with the input ids in
reference_logits.safetensors (input_ids I64 [T], logits F32 [T, V]). The float32 forward of transformers is also run;
the script prints how far it is from the float64 one.

Run with a Python that has torch and transformers 4.40 (README in this directory):
    /tmp/kiln-hf/bin/python tests/reference/make_hf_fixtures.py
"""
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf", "tiny_llama")


def main():
    torch.manual_seed(1234)
    torch.set_num_threads(1)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                      max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                      attn_implementation="eager")
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, cfg.vocab_size, (1, 24), generator=g)
    with torch.no_grad():
        l32 = model(ids).logits[0].clone()
        l64 = model.double()(ids).logits[0].clone()
    rel = (l32.double() - l64).abs().max().item() / l64.abs().max().item()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: fp32 vs fp64 logits relative {rel:.3g}")

    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    model.to(torch.bfloat16).save_pretrained(OUT, safe_serialization=True, max_shard_size="100KB")
    save_file({"input_ids": ids[0].to(torch.int64).contiguous(), "logits": l64.to(torch.float32).contiguous()},
              os.path.join(OUT, "reference_logits.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(OUT, "config.json")) as f:
        c = json.load(f)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {OUT}: {sorted(os.listdir(OUT))}, {total} bytes, torch_dtype {c.get('torch_dtype')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
