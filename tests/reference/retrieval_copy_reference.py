# tests/reference/retrieval_copy_reference.py: is the password skill learnable at the demo's scale? A reference
# nobody here wrote: transformers' Llama of the demo's shape (hidden 192, 8 layers, 4/2 heads, ffn 512, tied, RoPE
# 1e4), byte-level, trained with the demo's optimizer (AdamW 2e-3, betas 0.9/0.95, wd 0.1, warmup 50, cosine, clip 1)
# on password documents (one a row), then the probe's CF accuracy (log-likelihood of each ending). Rerun (needs
# torch and transformers, e.g. a venv with pip install torch transformers):
#   build/kiln_make_task /usr/share/games/fortunes --retrieval 0:300 --count 20000 --seed 11 --out train.jsonl
#   build/kiln_make_task /usr/share/games/fortunes --retrieval 0:0 --count 100 --out probe.jsonl
#   python tests/reference/retrieval_copy_reference.py train.jsonl probe.jsonl 600
# On 2026-12-07 (bench/RESULTS.md) it scored 0.26 / 0.23 / 0.29 at steps 0 / 300 / 600, as Kiln's runs did: at
# this scale and budget neither learns to copy the password.
import json, math, random, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(1); random.seed(1)
torch.set_num_threads(2)
docs = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    docs.append(r['ctx'] + ' ' + r['endings'][r['label']])
EOD = 256
def enc(s): return list(s.encode('utf-8'))
cfg = LlamaConfig(vocab_size=320, hidden_size=192, intermediate_size=512, num_hidden_layers=8, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rope_theta=10000.0, tie_word_embeddings=True,
                  rms_norm_eps=1e-6, attn_implementation='sdpa')
model = LlamaForCausalLM(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
steps, B, T = int(sys.argv[3]), 8, 256
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
probe = [json.loads(l) for l in open(sys.argv[2])]
def score():
    model.eval(); right = 0
    with torch.no_grad():
        for r in probe:
            best, arg = -1e9, -1
            for i, e in enumerate(r['endings']):
                c, x = enc(r['ctx']), enc(' ' + e)
                ids = torch.tensor([c + x])
                lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
                s = sum(lp[len(c) - 1 + j, x[j]].item() for j in range(len(x)))
                if s > best: best, arg = s, i
            right += arg == r['label']
    model.train(); return right / len(probe)
print('step 0 probe', score(), flush=True)
for step in range(1, steps + 1):
    batch = random.sample(docs, B)
    ids = torch.full((B, T), EOD); lab = torch.full((B, T), -100)
    for b, d in enumerate(batch):
        t = (enc(d) + [EOD])[:T]
        ids[b, :len(t)] = torch.tensor(t); lab[b, :len(t)] = torch.tensor(t)
    loss = model(input_ids=ids, labels=lab).loss
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step(); opt.zero_grad()
    if step % 100 == 0: print('step', step, 'loss', round(loss.item(), 4), flush=True)
    if step % 300 == 0: print('step', step, 'probe', score(), flush=True)
