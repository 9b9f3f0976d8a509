#!/usr/bin/env bash
# tests/merge_test.sh <train_sft_tiny> <train_post_tiny> <work dir>: `train_<recipe> merge` on a real run's checkpoints:
# a soup, a linear merge and task arithmetic are written as checkpoints that generate reads; a model merged alone
# (weight 1) or with itself generates exactly what it did; bad requests are refused, naming what is wrong, and write
# nothing. And a program's merge step (post_tiny's): the same weights as `merge` over the phase ends it kept, and only
# this run's. And a resume's tokenizer check, by the file's bytes.
set -euo pipefail
sft=$1 post=$2 work=$3
fail() { echo "FAIL: $*"; exit 1; }
has() { grep -q -- "$2" "$1" || { cat "$1"; fail "$1 lacks: $2"; }; }
rm -rf "$work"
mkdir -p "$work"
cd "$work"
common=(--cache cache --threads 2 --sample-tokens 0 --resume none --log-every 100)
"$sft" "${common[@]}" --out run --checkpoint-every 4 --keep-checkpoints 10 > train.log 2>&1 || { cat train.log; fail "training"; }
ck=run/checkpoints
greedy() { "$sft" generate --checkpoint "$1" --prompt "The" --tokens 12 --temperature 0 | tail -n 1; }

"$sft" merge --model $ck/step_00000016 --model $ck/step_00000020 --out soup > soup.log 2>&1 || { cat soup.log; fail "soup"; }
has soup.log "merged 2 checkpoints (soup: .*step_00000016 x 0.5, .*step_00000020 x 0.5) into soup/step_00000000: phase sft, step 0, fresh optimizer"
greedy soup > /dev/null || fail "generate cannot read the soup"
"$sft" merge --model $ck/step_00000020 --model $ck/step_00000012 --weight 0.9 --weight 0.1 --out lin > lin.log 2>&1 \
  || { cat lin.log; fail "linear"; }
has lin.log "(linear: .*step_00000020 x 0.9, .*step_00000012 x 0.1)"
"$sft" merge --model $ck/step_00000020 --base $ck/step_00000012 --weight 0.5 --out task > task.log 2>&1 \
  || { cat task.log; fail "task arithmetic"; }
has task.log "(task-arithmetic: .*step_00000020 x 0.5; base .*step_00000012)"
grep -q '"method": "task-arithmetic"' task/step_00000000/state.json || fail "state.json does not record the merge"

# Exact: a model alone with weight 1, and a soup of a model with itself, are that model.
"$sft" merge --model $ck/step_00000020 --weight 1 --out one > /dev/null
"$sft" merge --model $ck/step_00000020 --model $ck/step_00000020 --out self > /dev/null
[ "$(greedy $ck/step_00000020)" == "$(greedy one)" ] || fail "a model merged alone with weight 1 generates differently"
[ "$(greedy $ck/step_00000020)" == "$(greedy self)" ] || fail "a soup of a model with itself generates differently"
[ "$(greedy $ck/step_00000020)" != "$(greedy $ck/step_00000004)" ] || fail "the greedy check cannot tell checkpoints apart"

# Refused, nothing written.
refused() { # refused <log> <expected message> <merge args...>
  local log=$1 msg=$2; shift 2
  if "$sft" merge "$@" > "$log" 2>&1; then cat "$log"; fail "merge $* was allowed"; fi
  has "$log" "$msg"
}
refused w.log "--weight: 1 given for 2 --model" --model $ck/step_00000016 --model $ck/step_00000020 --weight 1 --out x
refused b.log "--method task needs --base" --model $ck/step_00000020 --method task --out x
refused s.log "--method soup averages uniformly" --model $ck/step_00000020 --weight 2 --method soup --out x
refused o.log "soup/step_00000000 exists" --model $ck/step_00000020 --out soup
"$post" "${common[@]}" --out post --steps 2 > post.log 2>&1 || { cat post.log; fail "training post_tiny"; }
# post_tiny's program ends in a merge step (0.9 x the APO end + 0.1 x the SFT end): each phase's end is kept in
# post/phases/<phase>, and `merge` over those two gives the run's final weights bitwise.
has post.log "kiln: merge step: the weights are now 0.9 x phase apo's end + 0.1 x phase sft's end"
grep -q '"merged_phase": "apo"' post/checkpoints/step_00000006/state.json || fail "the final checkpoint does not record the merge"
"$post" merge --model post/phases/apo --model post/phases/sft --weight 0.9 --weight 0.1 --out post_by_hand > /dev/null
logits() {  # logits <checkpoint> <name>: Kiln's fp32 logits of a few tokens, in <name>/kiln_logits.safetensors
  "$post" export --checkpoint "$1" --out "$2" --dump-logits "1 2 3 4 5 6 7 8" > /dev/null || fail "export $1"
}
logits post/checkpoints final && logits post_by_hand by_hand && logits post/phases/apo apo_end
cmp -s final/kiln_logits.safetensors by_hand/kiln_logits.safetensors || fail "the merge step's weights differ from merge's"
! cmp -s final/kiln_logits.safetensors apo_end/kiln_logits.safetensors || fail "the merge step changed nothing"
# Resuming the finished run merges nothing again.
"$post" "${common[@]/none/auto}" --out post --steps 2 > post2.log 2>&1 || { cat post2.log; fail "resuming post_tiny"; }
! grep -q "merge step" post2.log || { cat post2.log; fail "a resumed, finished run merged again"; }
# Starting over (--resume none) in the same directory with other step counts: the previous run's kept phase ends go
# with its checkpoints, and the merge step takes this run's SFT end (step 3 + 3), not the old one (step 4).
"$post" "${common[@]}" --out post --steps 3 > post3.log 2>&1 || { cat post3.log; fail "post_tiny over again"; }
has post3.log "removed the phase ends the previous run kept for its merge steps"
has post3.log "kiln: merge step: the weights are now 0.9 x phase apo's end + 0.1 x phase sft's end"
[ "$(ls post/phases/sft)" == "step_00000006" ] || { ls post/phases/sft; fail "post/phases/sft holds another run's end"; }
# A checkpoint's tokenizer is matched by its bytes: the same tokenizer trained in another cache (another path)
# resumes; another one (bpe:300) is refused, naming both.
tok=$(sed -n 's/.*"tokenizer": "\(.*tokenizer.json\)".*/\1/p' post/checkpoints/step_00000009/state.json)
elsewhere=(--threads 2 --sample-tokens 0 --resume auto --log-every 100 --out post --steps 3)
"$post" "${elsewhere[@]}" --cache cache2 > tok.log 2>&1 \
  || { cat tok.log; fail "the same tokenizer from another cache was refused"; }
has tok.log "nothing left to train"
if "$post" "${elsewhere[@]}" --cache cache3 --tokenizer bpe:300 > tok2.log 2>&1; then
  cat tok2.log; fail "another tokenizer was taken"
fi
has tok2.log "the checkpoint was trained with tokenizer \"$tok\" but this run reads its data with \"$work/cache3/bpe300"
refused r.log 'field extra.recipe is "post_tiny", but this trainer is for recipe "sft_tiny"' \
  --model $ck/step_00000020 --model post/checkpoints --out x
[ ! -e x ] || fail "a refused merge wrote something"
echo "PASS: soup, linear and task-arithmetic merges; exact for a single model; bad requests refused; the merge step"
