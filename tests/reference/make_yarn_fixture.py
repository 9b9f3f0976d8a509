#!/usr/bin/env python3
"""Writes tests/fixtures/yarn.json: transformers' own YaRN inverse frequencies, attention factor and cos / sin tables
(the rope_type "yarn" of modeling_rope_utils, as LlamaRotaryEmbedding applies it), for the C++ test of Kiln's
YaRN<...> positional policy (tests/test_ops.cpp, "YaRN").

Cases (head_dim, rope_theta, factor, original_max_position_embeddings and the optional keys):
  smollm3_128k   SmolLM3's inference-time 128k setting: 128, 5e6, factor 2 over 65536 (../shared/FACTS.md)
  small          16, 1e4, factor 4 over 32: the ramp between the correction dims inside the 8 frequencies
  betas          64, 5e5, factor 8 over 4096 with beta_fast 16, beta_slow 2 and an explicit attention_factor 0.9
  no_truncate    32, 1e4, factor 3 over 64 with truncate false (the correction range not rounded to whole dims)
For each: inv_freq (head_dim / 2, transformers computes it in float32), attention_factor, and cos / sin (float32,
already multiplied by the attention factor, rotate_half layout: head_dim values, the first half repeated) at a few
small positions (float32's pos * inv_freq loses ~pos ulps, so large positions would test torch's rounding).

Rerun (PyPI: transformers and torch; transformers 5.25.0 with torch 2.15.0 made the committed file):
    python3 -m venv /tmp/kiln-yarn && /tmp/kiln-yarn/bin/pip install transformers torch
    /tmp/kiln-yarn/bin/python tests/reference/make_yarn_fixture.py
"""
import json
import os

import torch
import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "yarn.json")
POSITIONS = [0, 1, 7, 100]

CASES = {
    "smollm3_128k": dict(head_dim=128, theta=5e6, factor=2.0, original=65536),
    "small": dict(head_dim=16, theta=1e4, factor=4.0, original=32),
    "betas": dict(head_dim=64, theta=5e5, factor=8.0, original=4096, beta_fast=16.0, beta_slow=2.0,
                  attention_factor=0.9),
    "no_truncate": dict(head_dim=32, theta=1e4, factor=3.0, original=64, truncate=False),
}


def case(c):
    params = {"rope_type": "yarn", "rope_theta": c["theta"], "factor": c["factor"],
              "original_max_position_embeddings": c["original"]}
    for k in ("beta_fast", "beta_slow", "attention_factor", "truncate"):
        if k in c:
            params[k] = c[k]
    heads = 4
    config = LlamaConfig(hidden_size=c["head_dim"] * heads, num_attention_heads=heads, num_key_value_heads=heads,
                         head_dim=c["head_dim"], max_position_embeddings=int(c["factor"] * c["original"]),
                         rope_parameters=params)
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    rotary = LlamaRotaryEmbedding(config)
    x = torch.zeros(1, len(POSITIONS), c["head_dim"], dtype=torch.float32)
    cos, sin = rotary(x, torch.tensor([POSITIONS]))
    assert torch.equal(rotary.inv_freq, inv_freq)
    return {"config": c, "inv_freq": [float(v) for v in inv_freq], "attention_factor": float(attention_factor),
            "positions": POSITIONS, "cos": [[float(v) for v in row] for row in cos[0]],
            "sin": [[float(v) for v in row] for row in sin[0]]}


def main():
    out = {"transformers": transformers.__version__, "torch": torch.__version__,
           "cases": {name: case(c) for name, c in CASES.items()}}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT} (transformers {transformers.__version__}, torch {torch.__version__})")
    for name, c in out["cases"].items():
        print(f"  {name}: attention_factor {c['attention_factor']:.6f}, inv_freq[0] {c['inv_freq'][0]:.6g}, "
              f"inv_freq[-1] {c['inv_freq'][-1]:.6g}")


if __name__ == "__main__":
    main()
