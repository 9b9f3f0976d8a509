#!/usr/bin/env python3
"""TRL's rpo_alpha (DPOConfig.rpo_alpha, the RPO paper's NLL term) on whole batches, in float64: the fixture
tests/test_preference.cpp compares kiln/train/preference.hpp's batch loss and per-token weights against.

    python3 tests/reference/make_rpo_fixture.py      (standard library only; writes tests/fixtures/preference/rpo.json)

TRL's DPOTrainer adds rpo_alpha * nll_loss to every pair's loss and then takes the batch mean, where nll_loss is the
cross-entropy of the chosen answers' tokens, averaged over all of them (F.cross_entropy(..., reduction="mean") over
the batch's chosen tokens): loss = mean_p(L_p) + rpo_alpha * (-sum_p chosen_logps_p) / chosen_tokens. The pair
losses are dpo_loss's "sigmoid" (label smoothing 0) and "apo_zero". Each case gives the pairs' summed
log-probabilities, each chosen answer's token count, beta and rpo_alpha; out: the loss, and its derivatives by each
pair's policy_chosen and policy_rejected, by central differences (h = 1e-6) of the loss as TRL writes it.
"""
import json
import math
import pathlib
import random


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def trl_batch_loss(loss_type, beta, rpo_alpha, pairs, chosen_tokens):
    losses = []
    for pc, pr, rc, rr in pairs:
        chosen_logratios, rejected_logratios = pc - rc, pr - rr
        if loss_type == "sigmoid":
            losses.append(-log_sigmoid(beta * (chosen_logratios - rejected_logratios)))
        else:
            losses.append((1 - sigmoid(beta * chosen_logratios)) + sigmoid(beta * rejected_logratios))
    nll_loss = -sum(p[0] for p in pairs) / sum(chosen_tokens)
    losses = [l + rpo_alpha * nll_loss for l in losses]
    return sum(losses) / len(losses)


random.seed(3)
out = []
for loss_type in ("sigmoid", "apo_zero"):
    for case in range(6):
        n = 1 + case % 4
        pairs = [[-random.uniform(2, 80) for _ in range(4)] for _ in range(n)]
        tokens = [random.randint(1, 40) for _ in range(n)]
        beta = [0.1, 0.5, 1.0][case % 3]
        alpha = [1.0, 0.25, 2.0][case % 3]
        loss = trl_batch_loss(loss_type, beta, alpha, pairs, tokens)
        d_chosen, d_rejected = [], []
        for p in range(n):
            for k, into in ((0, d_chosen), (1, d_rejected)):
                h = 1e-6
                up = [list(q) for q in pairs]
                down = [list(q) for q in pairs]
                up[p][k] += h
                down[p][k] -= h
                into.append((trl_batch_loss(loss_type, beta, alpha, up, tokens) -
                             trl_batch_loss(loss_type, beta, alpha, down, tokens)) / (2 * h))
        out.append({"loss_type": loss_type, "beta": beta, "rpo_alpha": alpha, "pairs": pairs, "chosen_tokens": tokens,
                    "loss": loss, "d_chosen": d_chosen, "d_rejected": d_rejected})
path = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "preference" / "rpo.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path} ({len(out)} cases)")
