#!/usr/bin/env bash
# tests/phases_test.sh <train_two_phase> <work dir>: a program of two phases run as the playbook runs a long-context
# extension: phase 1 alone (--phase short), then phase 2 started from phase 1's final checkpoint (--phase long
# --resume <dir>); the whole program in one run takes the same losses; --phase errors name what is needed.
set -uo pipefail
bin=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
losses() { grep -o '"loss":[^,]*' "$1/metrics.jsonl" | cut -d: -f2; }

"$bin" --phase short --out "$work/a" --resume none --threads 2 > "$work/a.log" 2>&1 || fail "phase short: $(tail -3 "$work/a.log")"
grep -q "phase 1/2 short: micro-batch 4 x 64, RNoPE theta 10000" "$work/a.log" || fail "no phase line in a.log"
ck=$(ls -d "$work/a/checkpoints"/step_* | tail -1)
[[ "$ck" == */step_00000008 ]] || fail "phase short's checkpoint is $ck, expected step_00000008"
grep -q '"phase": "short"' "$ck/state.json" || fail "the checkpoint does not record its phase"

"$bin" --phase long --resume "$ck" --out "$work/a" --threads 2 > "$work/b.log" 2>&1 || fail "phase long: $(tail -3 "$work/b.log")"
grep -q "phase long starts from the checkpoint of phase short" "$work/b.log" || fail "no start line in b.log"
grep -q "phase 2/2 long: micro-batch 2 x 128, RNoPE theta 500000" "$work/b.log" || fail "no phase 2 line in b.log"
[[ -d "$work/a/checkpoints/step_00000012" ]] || fail "no checkpoint at step 12 after phase long"

"$bin" --out "$work/whole" --resume none --threads 2 > "$work/whole.log" 2>&1 || fail "whole program: $(tail -3 "$work/whole.log")"
[[ "$(losses "$work/a")" == "$(losses "$work/whole")" ]] || fail "phase by phase and in one run differ:
$(paste <(losses "$work/a") <(losses "$work/whole"))"

# A run stopped at the end of phase 1 goes on with phase 2 under --resume auto, as if never stopped.
"$bin" --phase short --out "$work/h" --resume none --threads 2 > "$work/h1.log" 2>&1 || fail "phase short (h): $(tail -3 "$work/h1.log")"
"$bin" --out "$work/h" --threads 2 > "$work/h2.log" 2>&1 || fail "resume auto after phase short: $(tail -3 "$work/h2.log")"
grep -q "phase 2/2 long" "$work/h2.log" || fail "--resume auto at the end of phase short did not go on with phase long"
[[ "$(losses "$work/h")" == "$(losses "$work/whole")" ]] || fail "resuming at a phase boundary changed the losses"

"$bin" --phase long --resume none --out "$work/c" > "$work/c.log" 2>&1 && fail "--phase long without a checkpoint ran"
grep -q "starts from a checkpoint of phase short" "$work/c.log" || fail "unclear error: $(cat "$work/c.log")"
"$bin" --phase medium --out "$work/c" > "$work/d.log" 2>&1 && fail "--phase medium ran"
grep -q "not a phase of recipe two_phase (its phases: short, long)" "$work/d.log" || fail "unclear error: $(cat "$work/d.log")"
# Every checkpoint corrupt: --resume auto refuses (it does not start over silently) and the metrics stay whole;
# --resume none starts over and keeps the old metrics beside the new ones; a --resume directory must exist.
lines=$(wc -l < "$work/whole/metrics.jsonl")
for f in "$work/whole/checkpoints"/step_*/parameters.safetensors; do printf 'garbage' > "$f"; done
"$bin" --out "$work/whole" --threads 2 > "$work/e.log" 2>&1 && fail "--resume auto ran with every checkpoint corrupt"
grep -q "but none is valid" "$work/e.log" || fail "unclear error: $(tail -3 "$work/e.log")"
[[ $(wc -l < "$work/whole/metrics.jsonl") == "$lines" ]] || fail "metrics.jsonl changed after a refused resume"
"$bin" --phase short --out "$work/whole" --resume none --threads 2 > "$work/f.log" 2>&1 || fail "--resume none: $(tail -3 "$work/f.log")"
[[ $(wc -l < "$work/whole/metrics.1.jsonl") == "$lines" ]] || fail "the previous run's metrics were not kept as metrics.1.jsonl"
grep -q "previous run's metrics are kept as" "$work/f.log" || fail "no line about the kept metrics"
"$bin" --out "$work/g" --resume /nonexistent/step_00000010 > "$work/g.log" 2>&1 && fail "--resume of a missing directory ran"
grep -q "no such directory" "$work/g.log" || fail "unclear error: $(cat "$work/g.log")"
echo "PASS: phases run one by one (--phase) take the losses of one run: $(losses "$work/whole" | wc -l) steps"
