#!/usr/bin/env bash
# tests/ablate_test.sh <kiln_ablate> <train_ablate_tiny> <train_ablate_tiny_mqa> <kiln_make_task> <work dir>:
# a campaign of two tiny recipes x 2 seeds with a task made from held-out fortunes. The table has both recipes with
# their parameters and the paired difference, the task's criteria, the PNG; every run evaluated at the same token
# counts (its start included); the seeds' runs differ; a second call reuses the finished runs; --report reads them
# back; bad input is named.
set -uo pipefail
ablate=$1 base=$2 mqa=$3 make_task=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }

"$make_task" /usr/share/games/fortunes --held-out 20 --count 12 --max-chars 200 --out "$work/task.jsonl" > /dev/null || fail "make-task"
"$ablate" --trainer "$base" --trainer "$mqa" --seeds 2 --steps 12 --evals 2 --task "$work/task.jsonl" \
  --out "$work/c" -- --threads 2 > "$work/a.log" 2>&1 || fail "campaign: $(tail -20 "$work/a.log")"
cat "$work/a.log"
grep -q '^\[4/4\] ablate_tiny_mqa seed 2 ... [0-9]* s, held-out loss' "$work/a.log" || fail "no progress line of run 4"
# the table: both recipes, parameters (the MQA variant has 2 x 64 x 16 x 2 = 4096 fewer), the paired difference
grep -Eq '^\| ablate_tiny \| 94\.5k \| [0-9.]+ \| 6\.1k \| [0-9.]+ ± [0-9.]+ \| [0-9.]+ ± [0-9.]+ \| \(base\) \|' "$work/a.log" \
  || fail "no base row"
grep -Eq '^\| ablate_tiny_mqa \| 90\.4k \| .* \| [+-][0-9.]+ ± [0-9.]+( \*)? \|' "$work/a.log" || fail "no variant row"
grep -Eq '^\| task/CF \| 0\.250 \| (-?[0-9.]+|n/a) \| [0-9.]+ \| [+-][0-9.]+ \| (-?[0-9.]+|n/a)' "$work/a.log" || fail "no CF criteria row"
grep -q '^| task/MCF |' "$work/a.log" || fail "no MCF criteria row"
[[ -s "$work/c/ablation.png" && -s "$work/c/ablation.md" ]] || fail "no ablation.png / ablation.md"
# evaluations at the same tokens: 0, 6 steps and 12 steps of 4 x 128 tokens, in every run
for r in "$work"/c/*/seed*; do
  [[ "$(grep -o '"tokens":[0-9]*,"val_loss"' "$r/metrics.jsonl" | cut -d: -f2 | cut -d, -f1 | paste -sd' ')" == "0 3072 6144" ]] \
    || fail "$r evaluated at other token counts: $(grep val_loss "$r/metrics.jsonl")"
done
first() { grep -m1 -o '"loss":[^,]*' "$1/metrics.jsonl"; }
[[ "$(first "$work/c/ablate_tiny/seed1")" != "$(first "$work/c/ablate_tiny/seed2")" ]] || fail "seeds 1 and 2 trained alike"
grep -q '"seed": 2' "$work/c/ablate_tiny_mqa/seed2/run.json" || fail "run.json of seed 2 does not say seed 2"

"$ablate" --trainer "$base" --trainer "$mqa" --seeds 2 --steps 12 --evals 2 --task "$work/task.jsonl" \
  --out "$work/c" -- --threads 2 > "$work/b.log" 2>&1 || fail "second campaign call: $(tail -5 "$work/b.log")"
[[ "$(grep -c 'done before' "$work/b.log")" == 4 ]] || fail "the finished runs were trained again: $(head -6 "$work/b.log")"
"$ablate" --report "$work/c" --base ablate_tiny > "$work/r.log" 2>&1 || fail "--report: $(tail -5 "$work/r.log")"
diff <(grep '^| ablate_tiny' "$work/a.log") <(grep '^| ablate_tiny' "$work/r.log") > /dev/null || fail "--report's table differs"

# bad input: a malformed metrics line, a missing trainer, a trainer given twice
echo '{"step": "x"}' >> "$work/c/ablate_tiny/seed1/metrics.jsonl"
"$ablate" --report "$work/c" > "$work/bad1.log" 2>&1 && fail "a malformed metrics line was accepted"
grep -q 'ablate_tiny/seed1/metrics.jsonl:[0-9]*: field "step" is not a number' "$work/bad1.log" || fail "bad line not named: $(cat "$work/bad1.log")"
"$ablate" --trainer /nonexistent/train_x --steps 2 --out "$work/d" > "$work/bad2.log" 2>&1 && fail "a missing trainer was accepted"
grep -q 'train_x: no such executable' "$work/bad2.log" || fail "missing trainer not named: $(cat "$work/bad2.log")"
"$ablate" --trainer "$base" --trainer "$base" --steps 2 --out "$work/d" > "$work/bad3.log" 2>&1 && fail "a trainer twice was accepted"
grep -q 'is given twice' "$work/bad3.log" || fail "a trainer twice not named: $(cat "$work/bad3.log")"
echo "PASS: ablation campaign of 2 recipes x 2 seeds, table, criteria, PNG, reuse, report, bad input"
