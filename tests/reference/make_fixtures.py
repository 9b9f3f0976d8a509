#!/usr/bin/env python3
"""Reference fixtures for Kiln's whole-model test.

A plain-PyTorch float64 implementation of the Kiln / HF Llama / SmolLM3 decoder, written from the
equations below and independent of Kiln (and of `transformers`). It dumps weights, a packed batch,
logits, loss and every weight gradient into tests/fixtures/<name>.safetensors.

Forward (per batch row b, token t; all float64):
  x      = E[tokens]                                                    # (B, T, H)
  layer i:
    n    = rmsnorm(x; input_layernorm)                                  # rmsnorm(x) = x * rsqrt(mean(x^2) + eps) * w
    q    = n Wq^T -> (B, T, NH, HD);  k = n Wk^T, v = n Wv^T -> (B, T, NKV, HD)
    q, k = rmsnorm over HD with q_norm / k_norm weights                 # only if qk_norm (Qwen3 style), before RoPE
    q, k = q*cos + rotate_half(q)*sin at position_ids                   # only if layer i uses RoPE
           inv_freq_j = theta^(-2j/HD), cos/sin = cat(f, f), rotate_half(u) = cat(-u[HD/2:], u[:HD/2])
           "rnope" interval n: layer i uses RoPE iff (i+1) % n != 0; "rope": every layer
    s    = q k^T / sqrt(HD), query head h reads kv head h // (NH/NKV)
           token i sees j iff doc_ids[b,i] == doc_ids[b,j] and j <= i
    h    = x + Wo softmax(s) v
    n    = rmsnorm(h; post_attention_layernorm)
    x    = h + Wdown (silu(Wgate n) * Wup n)
  logits = rmsnorm(x; model.norm) W^T, W = embed (tied) or lm_head (untied)   # (B, T, V)
Loss over rows with target >= 0:
  lse = logsumexp(logits); loss = mean(lse - logits[target] + z_coef * lse^2)

Rerun: /usr/bin/python3 tests/reference/make_fixtures.py   (needs Debian's python3-torch)
The output is deterministic: a rerun gives byte-identical files.
"""
import json
import math
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "fixtures"))

CONFIGS = {
    "tiny_rnope": dict(vocab=96, hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, ffn=96, eps=1e-6,
                       positional="rnope", interval=2, theta=10000.0, tied=True, z_coef=1e-4, qk_norm=False,
                       B=2, T=24),
    "tiny_qknorm": dict(vocab=80, hidden=48, layers=2, heads=3, kv_heads=1, head_dim=16, ffn=64, eps=1e-5,
                        positional="rope", interval=0, theta=500000.0, tied=False, z_coef=0.0, qk_norm=True,
                        B=2, T=20),
}
SEEDS = {"tiny_rnope": 1234, "tiny_qknorm": 5678}
LINEAR_STD = 0.15  # larger than the usual 0.02 so that attention is far from uniform
NORM_STD = 0.1     # norm weights are 1 + 0.1 * normal

DT = torch.float64


# ----------------------------------------------------------------------------------------------
# Weights and batch
# ----------------------------------------------------------------------------------------------
def weight_shapes(c):
    """HF names and shapes, in the order they are written. Linear weights are [out, in]."""
    H, V, NH, NKV, HD, F = c["hidden"], c["vocab"], c["heads"], c["kv_heads"], c["head_dim"], c["ffn"]
    shapes = [("model.embed_tokens.weight", (V, H))]
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (H,)),
            (p + "self_attn.q_proj.weight", (NH * HD, H)),
            (p + "self_attn.k_proj.weight", (NKV * HD, H)),
            (p + "self_attn.v_proj.weight", (NKV * HD, H)),
            (p + "self_attn.o_proj.weight", (H, NH * HD)),
        ]
        if c["qk_norm"]:
            shapes += [(p + "self_attn.q_norm.weight", (HD,)), (p + "self_attn.k_norm.weight", (HD,))]
        shapes += [
            (p + "post_attention_layernorm.weight", (H,)),
            (p + "mlp.gate_proj.weight", (F, H)),
            (p + "mlp.up_proj.weight", (F, H)),
            (p + "mlp.down_proj.weight", (H, F)),
        ]
    shapes.append(("model.norm.weight", (H,)))
    if not c["tied"]:
        shapes.append(("lm_head.weight", (V, H)))
    return shapes


def is_norm(name):
    return "norm" in name  # input_layernorm, post_attention_layernorm, q_norm, k_norm, model.norm


def make_weights(c, gen):
    """Sample in float64, round to float32, upcast back: the reference uses exactly the stored values."""
    w = {}
    for name, shape in weight_shapes(c):
        r = torch.randn(shape, dtype=DT, generator=gen)
        r = 1.0 + NORM_STD * r if is_norm(name) else LINEAR_STD * r
        w[name] = r.to(torch.float32).to(DT)
    return w


def make_batch(c, gen):
    B, T, V = c["B"], c["T"], c["vocab"]
    tokens = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    ignore = torch.rand((B, T), generator=gen, dtype=DT) < 0.1
    targets[ignore] = -1
    position_ids = torch.zeros((B, T), dtype=torch.int64)
    doc_ids = torch.zeros((B, T), dtype=torch.int64)
    for b in range(B):
        n_docs = int(torch.randint(3, 5, (1,), generator=gen))  # 3 or 4 documents
        # n_docs - 1 distinct cut points in [1, T-1]: every document has at least one token
        cuts = sorted((torch.randperm(T - 1, generator=gen)[: n_docs - 1] + 1).tolist())
        bounds = [0] + cuts + [T]
        for d in range(n_docs):
            s, e = bounds[d], bounds[d + 1]
            doc_ids[b, s:e] = d
            position_ids[b, s:e] = torch.arange(e - s)
    assert (targets >= 0).any()
    return dict(tokens=tokens, targets=targets, position_ids=position_ids, doc_ids=doc_ids)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(u):
    h = u.shape[-1] // 2
    return torch.cat((-u[..., h:], u[..., :h]), dim=-1)


def rope_cos_sin(position_ids, head_dim, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=DT) / head_dim))  # (HD/2,)
    freqs = position_ids.to(DT)[..., None] * inv_freq                                  # (B, T, HD/2)
    emb = torch.cat((freqs, freqs), dim=-1)                                            # (B, T, HD)
    return emb.cos(), emb.sin()


def layer_uses_rope(c, i):
    if c["positional"] == "rope":
        return True
    if c["positional"] == "rnope":
        return (i + 1) % c["interval"] != 0
    raise ValueError(c["positional"])


def forward(c, w, batch):
    B, T = c["B"], c["T"]
    NH, NKV, HD, eps = c["heads"], c["kv_heads"], c["head_dim"], c["eps"]
    group = NH // NKV
    tok, pos, doc = batch["tokens"], batch["position_ids"], batch["doc_ids"]

    x = w["model.embed_tokens.weight"][tok]                                            # (B, T, H)
    cos, sin = rope_cos_sin(pos, HD, c["theta"])
    cos, sin = cos[:, None], sin[:, None]                                              # (B, 1, T, HD)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    mask = (doc[:, :, None] == doc[:, None, :]) & causal                               # (B, T, T)
    mask = mask[:, None]                                                               # (B, 1, T, T)
    scale = 1.0 / math.sqrt(HD)

    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        n = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = (n @ w[p + "self_attn.q_proj.weight"].T).view(B, T, NH, HD)
        k = (n @ w[p + "self_attn.k_proj.weight"].T).view(B, T, NKV, HD)
        v = (n @ w[p + "self_attn.v_proj.weight"].T).view(B, T, NKV, HD)
        if c["qk_norm"]:
            q = rmsnorm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)              # (B, heads, T, HD)
        if layer_uses_rope(c, i):
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(group, dim=1)                                          # head h -> kv head h // group
        v = v.repeat_interleave(group, dim=1)
        s = (q @ k.transpose(-1, -2)) * scale                                          # (B, NH, T, T)
        s = s.masked_fill(~mask, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v                                               # (B, NH, T, HD)
        a = a.transpose(1, 2).reshape(B, T, NH * HD)
        h = x + a @ w[p + "self_attn.o_proj.weight"].T
        n = rmsnorm(h, w[p + "post_attention_layernorm.weight"], eps)
        g = n @ w[p + "mlp.gate_proj.weight"].T
        u = n @ w[p + "mlp.up_proj.weight"].T
        x = h + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T

    x = rmsnorm(x, w["model.norm.weight"], eps)
    W = w["model.embed_tokens.weight"] if c["tied"] else w["lm_head.weight"]
    logits = x @ W.T                                                                   # (B, T, V)

    tgt = batch["targets"].reshape(-1)
    flat = logits.reshape(-1, logits.shape[-1])
    valid = tgt >= 0
    lv, tv = flat[valid], tgt[valid]
    lse = torch.logsumexp(lv, dim=-1)
    ce = lse - lv.gather(1, tv[:, None])[:, 0]
    loss = (ce + c["z_coef"] * lse.pow(2)).mean()
    return logits, loss


# ----------------------------------------------------------------------------------------------
# safetensors writer (by hand; see FACTS.md "Formats")
# ----------------------------------------------------------------------------------------------
DTYPE_NAMES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<i4"): "I32"}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, numpy array). Data laid out in list order, contiguous, no holes."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr)
        dt = arr.dtype.newbyteorder("<")
        arr = arr.astype(dt, copy=False)
        raw = arr.tobytes(order="C")
        header[name] = {"dtype": DTYPE_NAMES[dt], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((-(8 + len(hj))) % 8)  # data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Self-check and main
# ----------------------------------------------------------------------------------------------
def finite_difference_check(c, w, batch, grads, gen):
    """Central differences in float64 on a few entries of a few weights vs autograd."""
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
             f"model.layers.{c['layers'] - 1}.mlp.down_proj.weight", "model.norm.weight"]
    if c["qk_norm"]:
        names.append("model.layers.0.self_attn.k_norm.weight")
    if not c["tied"]:
        names.append("lm_head.weight")
    h = 1e-6
    for name in names:
        for _ in range(3):
            idx = int(torch.randint(0, w[name].numel(), (1,), generator=gen))
            wp = {k: v.clone() for k, v in w.items()}
            wm = {k: v.clone() for k, v in w.items()}
            wp[name].view(-1)[idx] += h
            wm[name].view(-1)[idx] -= h
            with torch.no_grad():
                fd = (forward(c, wp, batch)[1] - forward(c, wm, batch)[1]).item() / (2 * h)
            ag = grads[name].view(-1)[idx].item()
            err = abs(fd - ag)
            assert err <= 1e-7 + 1e-5 * abs(ag), f"{name}[{idx}]: autograd {ag!r} vs finite difference {fd!r}"


def token_logp(logits, targets):
    """log softmax(logits)[target] per token, float64 (B, T); 0 where the target is ignored (< 0): what Kiln's
    per-sequence log-probability sums (evaluation, DPO) add up."""
    lp = torch.log_softmax(logits, dim=-1)
    safe = targets.clamp(min=0)
    out = lp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(targets >= 0, out, torch.zeros_like(out)).to(DT)


def make(name):
    c = CONFIGS[name]
    gen = torch.Generator().manual_seed(SEEDS[name])
    w = make_weights(c, gen)
    batch = make_batch(c, gen)
    params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    logits, loss = forward(c, params, batch)
    loss.backward()
    grads = {k: v.grad.detach() for k, v in params.items()}
    finite_difference_check(c, w, batch, grads, gen)

    tensors = []
    for wn, _ in weight_shapes(c):
        tensors.append((wn, w[wn].to(torch.float32).numpy()))
    for bn in ("tokens", "targets", "position_ids", "doc_ids"):
        tensors.append((f"batch.{bn}", batch[bn].to(torch.int32).numpy()))
    tensors.append(("out.logits", logits.detach().to(torch.float32).numpy()))
    tensors.append(("out.loss", np.array([loss.item()], dtype="<f8")))
    tensors.append(("out.token_logp", token_logp(logits.detach(), batch["targets"]).numpy()))
    for wn, _ in weight_shapes(c):
        tensors.append((f"grad.{wn}", grads[wn].to(torch.float32).numpy()))

    config = {k: c[k] for k in ("vocab", "hidden", "layers", "heads", "kv_heads", "head_dim", "ffn", "eps",
                                "positional", "interval", "theta", "tied", "z_coef", "qk_norm", "B", "T")}
    meta = {"format": "pt", "config": json.dumps(config, separators=(",", ":"))}
    path = os.path.join(OUT_DIR, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    print(f"{path}: loss {loss.item():.12f}, {len(tensors)} tensors, {os.path.getsize(path)} bytes")


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # reductions in a fixed order: reruns are byte-identical
    os.makedirs(OUT_DIR, exist_ok=True)
    for name in CONFIGS:
        make(name)


if __name__ == "__main__":
    main()
