#!/usr/bin/env bash
# tests/registry_test.sh <kiln_recipes_test> <train_tiny_llama> <fixtures> <work dir>: the recipe
# registry's commands (tools/registry/main.cpp) on the shipped and test recipes.
set -uo pipefail
reg=$1 tiny=$2 fx=$3 work=$4
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
fail() { echo "FAIL: $*"; exit 1; }
has() { grep -qF -- "$2" "$1" || fail "$1 lacks '$2':
$(cat "$1")"; }

"$reg" list > list.txt 2>&1 || fail "list: $(cat list.txt)"
has list.txt "demo"
has list.txt "tiny_llama"
has list.txt "two_phase"
has list.txt "short:4x64@10000,long:2x128@500000"

# transformers' tiny Llama fits tests/recipes/tiny_llama.hpp and nothing else: its header on stdout.
"$reg" match "$fx/hf/tiny_llama/config.json" > match.txt 2> match.err || fail "match: $(cat match.err)"
[[ "$(cat match.txt)" == */tests/recipes/tiny_llama.hpp ]] || fail "match printed '$(cat match.txt)'"
has match.err "recipe tiny_llama fits"
# The same config with another vocabulary fits none: exit 3 and, for every recipe, what differs.
sed 's/"vocab_size": *128/"vocab_size": 130/' "$fx/hf/tiny_llama/config.json" > other.json
grep -q '"vocab_size": *130' other.json || fail "the fixture's config.json changed form (no vocab_size 128)"
rc=0; "$reg" match other.json > none.txt 2> none.err || rc=$?
((rc == 3)) || fail "a config that fits no recipe: exit $rc, expected 3"
[[ ! -s none.txt ]] || fail "match printed a header for a config that fits none"
has none.err "no registered recipe fits other.json"
has none.err "vocab_size: checkpoint 130, recipe 128"
has none.err "smollm3_3b ("
# A malformed config.json: one line naming the file, exit 1.
echo '{"model_type": "llama", "vocab_size": "many"' > bad.json
rc=0; "$reg" match bad.json > /dev/null 2> bad.err || rc=$?
((rc == 1)) || fail "a malformed config.json: exit $rc, expected 1"
has bad.err "bad.json"

# Two plans side by side: only the keys that differ.
"$reg" diff demo tiny_llama > diff.txt 2>&1 || fail "diff: $(cat diff.txt)"
has diff.txt "plan differences: demo"
has diff.txt "model.vocab:"
has diff.txt "2048 -> 128"
grep -q "model.rms_norm_eps" diff.txt && grep -q "1e-06 -> 1e-05" diff.txt || fail "diff misses rms_norm_eps: $(cat diff.txt)"
"$reg" diff demo recipes/demo.hpp > same.txt 2>&1 || fail "diff with itself: $(cat same.txt)"
has same.txt "no differences"
rc=0; "$reg" diff demo nosuch > unk.txt 2>&1 || rc=$?
((rc == 1)) || fail "an unknown recipe: exit $rc"
has unk.txt "recipe 'nosuch' is not registered (registered: ablation_1b"

# A checkpoint's recipe: a step directory, its checkpoints root or the run directory above it.
"$tiny" import --hf "$fx/hf/tiny_llama" --out run/checkpoints > import.log 2>&1 || fail "import: $(cat import.log)"
for d in run run/checkpoints run/checkpoints/step_00000000; do
  "$reg" checkpoint "$d" > ck.txt 2> ck.err || fail "checkpoint $d: $(cat ck.err)"
  [[ "$(sed -n 1p ck.txt)" == */tests/recipes/tiny_llama.hpp ]] || fail "checkpoint $d: recipe '$(sed -n 1p ck.txt)'"
  [[ "$(sed -n 2p ck.txt)" == *run/checkpoints/step_00000000 ]] || fail "checkpoint $d: dir '$(sed -n 2p ck.txt)'"
done
# A checkpoint of a recipe the registry does not hold says so and how to go on (the name changed in place: the
# registry verifies sizes, not checksums; the trainer that opens it verifies both).
cp -r run run2
sed -i 's/"tiny_llama"/"tiny_lXama"/' run2/checkpoints/step_00000000/state.json
grep -q '"tiny_lXama"' run2/checkpoints/step_00000000/state.json || fail "could not rename the checkpoint's recipe"
rc=0; "$reg" checkpoint run2 > ck2.txt 2>&1 || rc=$?
((rc == 1)) || fail "an unregistered recipe's checkpoint: exit $rc, $(cat ck2.txt)"
has ck2.txt "field extra.recipe is \"tiny_lXama\", which is not registered"
has ck2.txt "tools/kiln <command> <recipe.hpp> --checkpoint"
# No checkpoint, and a corrupt one.
mkdir empty
rc=0; "$reg" checkpoint empty > e.txt 2>&1 || rc=$?
((rc == 1)) && grep -q "no checkpoint here" e.txt || fail "an empty directory: exit $rc, $(cat e.txt)"
rm run/checkpoints/step_00000000/state.json
rc=0; "$reg" checkpoint run > c.txt 2>&1 || rc=$?
((rc == 1)) && grep -q "none is valid" c.txt || fail "a corrupt checkpoint: exit $rc, $(cat c.txt)"
echo "PASS: registry list, match (one fits / none: every difference, exit 3 / malformed), diff, checkpoint's recipe"
