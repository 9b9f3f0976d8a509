#!/usr/bin/env python3
"""Loads a directory written by `train_<recipe> export ... --dump-logits "<ids>"` with Hugging Face transformers and
compares transformers' fp32 logits for those ids with Kiln's (kiln_logits.safetensors in the export).

    /tmp/kiln-hf/bin/python tests/reference/check_hf_export.py <export dir> [--tol 1e-4]

Passes when max|kiln - hf| / max|hf| <= tol and the greedy (argmax) token agrees at every position.

model_type llama: loaded with AutoModelForCausalLM (LlamaForCausalLM), eager attention, float32.
model_type smollm3: SmolLM3 needs transformers >= 4.53 (and torch >= 2). When the installed transformers has no
SmolLM3, the script says so and, unless --no-emulate, checks the export with LlamaForCausalLM whose
apply_rotary_pos_emb is skipped on the layers that config.json's no_rope_layers marks 0 (NoPE), which is what
transformers' SmolLM3Attention does (`if self.use_rope: ... apply_rotary_pos_emb`); everything else in SmolLM3's
decoder (RMSNorm, GQA, SwiGLU MLP, tied embeddings) is Llama's. This emulation is labelled as such in the output.

If the export has a tokenizer.json, it is also loaded with PreTrainedTokenizerFast and a sample text must round-trip.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--no-emulate", action="store_true", help="smollm3 without SmolLM3 support: fail instead")
    a = ap.parse_args()
    d = a.export_dir
    torch.set_num_threads(2)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    with open(os.path.join(d, "config.json")) as f:
        cfg_json = json.load(f)
    mt = cfg_json["model_type"]
    ref = load_file(os.path.join(d, "kiln_logits.safetensors"))
    ids = ref["input_ids"].to(torch.int64).reshape(1, -1)
    kiln = ref["logits"].to(torch.float64)

    how = None
    if mt == "llama":
        model = transformers.AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32,
                                                                  attn_implementation="eager")
        how = f"AutoModelForCausalLM -> {type(model).__name__}"
    elif mt == "smollm3":
        try:
            transformers.AutoConfig.from_pretrained(d)
            has_smollm3 = True
        except Exception as e:  # transformers < 4.53: "model type smollm3 ... not recognize"
            has_smollm3 = False
            print(f"NOTE: transformers {transformers.__version__} cannot load model_type smollm3 "
                  f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); SmolLM3 needs transformers >= 4.53")
        if has_smollm3:
            model = transformers.AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32,
                                                                      attn_implementation="eager")
            how = f"AutoModelForCausalLM -> {type(model).__name__}"
        elif a.no_emulate:
            print("FAIL: no SmolLM3 in this transformers (--no-emulate)")
            return 1
        else:
            from transformers.models.llama import modeling_llama as ml
            keys = {k: v for k, v in cfg_json.items() if k not in ("model_type", "architectures", "no_rope_layers")}
            cfg = transformers.LlamaConfig(**keys)
            model = transformers.LlamaForCausalLM.from_pretrained(d, config=cfg, torch_dtype=torch.float32,
                                                                  attn_implementation="eager")
            uses_rope = [bool(x) for x in cfg_json["no_rope_layers"]]
            state = {"rope": True}
            orig = ml.apply_rotary_pos_emb

            def patched(q, k, cos, sin, *args, **kw):
                return orig(q, k, cos, sin, *args, **kw) if state["rope"] else (q, k)

            ml.apply_rotary_pos_emb = patched
            for i, layer in enumerate(model.model.layers):
                layer.self_attn.register_forward_pre_hook(
                    lambda m, args, i=i: state.__setitem__("rope", uses_rope[i]))
            nope = [i for i, u in enumerate(uses_rope) if not u]
            how = (f"EMULATED SmolLM3: LlamaForCausalLM with RoPE skipped on layers {nope} "
                   f"(no SmolLM3 class in transformers {transformers.__version__})")
    else:
        print(f"FAIL: model_type {mt}")
        return 1
    model.eval()
    with torch.no_grad():
        hf = model(ids).logits[0].to(torch.float64)
    diff = (hf - kiln).abs().max().item()
    scale = hf.abs().max().item()
    rel = diff / scale
    same = (hf.argmax(-1) == kiln.argmax(-1)).sum().item()
    T = ids.shape[1]
    print(f"{d}: {how}: {T} tokens x {hf.shape[-1]}: max |kiln - hf| {diff:.3g}, max |hf| {scale:.3g}, "
          f"relative {rel:.3g} (tolerance {a.tol:g}); argmax equal at {same} of {T} positions")
    ok = rel <= a.tol and same == T

    tok = os.path.join(d, "tokenizer.json")
    if os.path.exists(tok):
        import tempfile
        import tokenizers
        from transformers import PreTrainedTokenizerFast
        try:
            t = PreTrainedTokenizerFast(tokenizer_file=tok)
        except Exception as e:
            # tokenizers < 0.20 (transformers 4.40 pins it) reads merges only as "a b" strings; Kiln writes the
            # [["a", "b"]] pairs of tokenizers >= 0.20 (FACTS.md). Byte-level symbols hold no spaces, so the
            # string form is the same merge list.
            with open(tok) as f:
                j = json.load(f)
            merges = j["model"]["merges"]
            if not (merges and isinstance(merges[0], list)):
                raise
            print(f"NOTE: tokenizers {tokenizers.__version__} cannot read tokenizer.json ({str(e)[:80]}): its merges are "
                  f"[a, b] pairs (tokenizers >= 0.20); checking a copy with \"a b\" string merges")
            assert all(" " not in a and " " not in b for a, b in merges)
            j["model"]["merges"] = [f"{a} {b}" for a, b in merges]
            tmp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
            json.dump(j, tmp)
            tmp.close()
            t = PreTrainedTokenizerFast(tokenizer_file=tmp.name)
        text = "The meaning of life is 42, said the computer.\n"
        enc = t.encode(text, add_special_tokens=False)
        dec = t.decode(enc)
        print(f"tokenizer.json: {len(t)} tokens; {len(enc)} ids for the sample; round trip "
              f"{'exact' if dec == text else 'DIFFERS: ' + repr(dec)}")
        ok = ok and dec == text
    else:
        print("no tokenizer.json in the export (byte-level checkpoint)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
