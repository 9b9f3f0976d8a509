#!/usr/bin/env python3
"""Preference losses as TRL's DPOTrainer computes them (trl/trainer/dpo_trainer.py, dpo_loss: loss_type "sigmoid"
with label_smoothing 0, and "apo_zero"), with their gradients by PyTorch autograd, in float64: the fixture
tests/test_preference.cpp compares kiln/train/preference.hpp against.

    python tests/reference/make_preference_fixture.py      (needs torch; writes tests/fixtures/preference/trl.json)

Each case: the summed log-probabilities of the chosen and rejected answers under the policy and the reference, and
beta; out: the loss and d loss / d policy_chosen, d policy_rejected, and TRL's rewards (beta * logratio).
"""
import json
import pathlib

import torch
import torch.nn.functional as F

torch.manual_seed(0)
cases = [(-12.0, -15.0, -12.5, -14.0, 0.1), (-40.0, -38.0, -41.0, -37.0, 0.1), (-3.0, -3.0, -3.0, -3.0, 0.5),
         (-80.0, -20.0, -60.0, -25.0, 1.0), (-5.5, -9.25, -7.0, -7.0, 2.0), (-100.0, -300.0, -120.0, -150.0, 0.1)]
for _ in range(6):
    v = (-torch.rand(4, dtype=torch.float64) * 60).tolist()
    cases.append((*v, float(torch.rand(1, dtype=torch.float64) * 0.9 + 0.05)))


def trl_loss(loss_type, beta, pc, pr, rc, rr):
    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    logits = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":  # label_smoothing = 0
        losses = -F.logsigmoid(beta * logits)
    elif loss_type == "apo_zero":
        losses_chosen = 1 - F.sigmoid(beta * chosen_logratios)
        losses_rejected = F.sigmoid(beta * rejected_logratios)
        losses = losses_chosen + losses_rejected
    chosen_rewards = beta * (pc - rc).detach()
    rejected_rewards = beta * (pr - rr).detach()
    return losses, chosen_rewards, rejected_rewards


out = []
for loss_type in ("sigmoid", "apo_zero"):
    for pc, pr, rc, rr, beta in cases:
        p = torch.tensor([pc, pr], dtype=torch.float64, requires_grad=True)
        loss, cr, rr_ = trl_loss(loss_type, beta, p[0], p[1], torch.tensor(rc, dtype=torch.float64),
                                 torch.tensor(rr, dtype=torch.float64))
        loss.backward()
        out.append({"loss_type": loss_type, "beta": beta, "policy_chosen": pc, "policy_rejected": pr,
                    "ref_chosen": rc, "ref_rejected": rr, "loss": loss.item(), "d_chosen": p.grad[0].item(),
                    "d_rejected": p.grad[1].item(), "reward_chosen": cr.item(), "reward_rejected": rr_.item()})
path = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "preference" / "trl.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path} ({len(out)} cases)")
