#!/usr/bin/env bash
# tests/shards_train_test.sh <trainer> <kiln_tokenize> <tokenizer.json> <work dir>: the path a user takes with their
# own data: text -> token shards (tools/kiln tokenize) -> a trainer reading them with --tokenizer <json> --data <dir>.
# The demo recipe's stages name the sources computers, linux, perl and science; a held-out shard is required.
set -euo pipefail
trainer=$1 tokenize=$2 tok=$3 work=$4
fortunes=/usr/share/games/fortunes
rm -rf "$work"
mkdir -p "$work/shards"
for src in computers linux perl science; do
  "$tokenize" "$fortunes/$src" --tokenizer "$tok" -o "$work/shards/$src" --seed 1 -q
done
"$tokenize" "$fortunes/zippy" --tokenizer "$tok" -o "$work/shards/heldout" -q
"$trainer" --tokenizer "$tok" --data "$work/shards" --steps 6 --log-every 2 --eval-batches 1 --sample-tokens 8 \
  --prompt "Unix" --threads 2 --out "$work/run" > "$work/run.log" 2>&1 || { cat "$work/run.log"; echo "FAIL: trainer"; exit 1; }
cat "$work/run.log"
grep -q "4 sources" "$work/run.log" || { echo "FAIL: expected 4 training sources"; exit 1; }
grep -q "stage 2 of 2" "$work/run.log" || { echo "FAIL: the second data stage did not begin"; exit 1; }
# The checkpoint remembers its tokenizer: `generate` continues a prompt with it.
"$trainer" generate --checkpoint "$work/run/checkpoints" --prompt "Unix" --tokens 5 > "$work/gen.log" 2>&1 \
  || { cat "$work/gen.log"; echo "FAIL: generate"; exit 1; }
grep -q "tokenizer .*kiln_bpe.json" "$work/gen.log" || { cat "$work/gen.log"; echo "FAIL: generate did not use the tokenizer"; exit 1; }
# A source the stages name but the data lacks is an error naming it.
rm "$work/shards/perl".ds*
if "$trainer" --tokenizer "$tok" --data "$work/shards" --steps 2 --out "$work/run2" > "$work/run2.log" 2>&1; then
  echo "FAIL: a missing source was accepted"; exit 1
fi
grep -q "names source 'perl'" "$work/run2.log" || { cat "$work/run2.log"; echo "FAIL: the error does not name the source"; exit 1; }
echo "PASS: text -> shards -> training with stages -> generate; a missing source is named"
