#!/usr/bin/env bash
# tests/hf_interop_test.sh <train_demo> <train_tiny_llama> <kiln_tokenize> <fixtures dir> <work dir>:
# Hugging Face interop as a user meets it (train_<recipe> export / import, tools/cli/hf_interop.cpp):
#  1. byte-level: train 3 steps, export (single file and shards), check the files and config.json fields, import the
#     export into a new run, greedy `generate` and Kiln's logits agree bitwise with the original; `--resume auto`
#     starts from the import; a non-empty --out is refused (and replaced with --force).
#  2. BPE: text -> shards -> 3 steps with the fixture tokenizer; the export carries tokenizer.json, its
#     end-of-document id and (the tokenizer has the chat tokens) the chat template; the re-import generates the
#     same text with it.
#  3. a tiny Llama saved by transformers 4.40 (BF16 shards, tests/fixtures/hf/tiny_llama): imported into
#     tests/recipes/tiny_llama.hpp, Kiln's logits within 1e-4 (relative) of transformers'; F32 re-export round trip.
#  4. a config that does not fit the recipe: exit 3, every differing field listed, nothing written.
set -euo pipefail
demo=$1 tiny=$2 tokenize=$3 fx=$4 work=$5
fail() { echo "FAIL: $*"; exit 1; }
run() { # run <log> <cmd...>: the command's output to <log>; on failure show it and fail
  local log=$1; shift
  local rc=0
  "$@" > "$log" 2>&1 || rc=$?
  ((rc == 0)) || { cat "$log"; fail "$* (exit $rc)"; }
}
has() { grep -q -- "$2" "$1" || { cat "$1"; fail "$1 lacks: $2"; }; }
rm -rf "$work"
mkdir -p "$work"
cd "$work"
ids="76 111 118 101 32 105 115 32 97 256 65 32 99 111 109 112"

# ---- 1. byte-level ---------------------------------------------------------------------------------------------
run train_b.log "$demo" --tokenizer '' --steps 3 --log-every 1 --eval-batches 1 --sample-tokens 0 --threads 2 --out run_b
run export_b.log "$demo" export --checkpoint run_b/checkpoints --out hf_b --dump-logits "$ids"
cat export_b.log
has export_b.log "no tokenizer.json: the checkpoint is byte-level"
for f in config.json model.safetensors generation_config.json kiln.json; do
  test -s "hf_b/$f" || fail "export lacks $f"
done
test ! -e hf_b/tokenizer.json || fail "a byte-level export has a tokenizer.json"
test ! -e hf_b/model.safetensors.index.json || fail "a 14 MB export was sharded at the default --max-shard-mb"
ls -a . | grep -q '\.tmp\.' && fail "a temp directory was left behind"
for kv in '"model_type": "smollm3"' '"max_position_embeddings": 256' '"eos_token_id": 256' '"torch_dtype": "float32"' \
          '"tie_word_embeddings": true' '"vocab_size": 2048' '"num_key_value_heads": 2' '"rope_theta": 10000.0'; do
  has hf_b/config.json "$kv"
done
tr -d ' \n' < hf_b/config.json | grep -q '"no_rope_layers":\[1,1,1,0,1,1,1,0\]' || fail "no_rope_layers"
tr -d ' \n' < hf_b/generation_config.json | grep -q '{"eos_token_id":256,"pad_token_id":256,"do_sample":true,"temperature":0.6,"top_p":0.95}' \
  || { cat hf_b/generation_config.json; fail "generation_config.json"; }
# llama cannot express the demo's NoPE layers.
if "$demo" export --checkpoint run_b/checkpoints --out hf_llama --model-type llama > llama.log 2>&1; then fail "llama export of NoPE"; fi
has llama.log "NoPE layers"
# Refuses a non-empty --out; --force replaces it (here with shards).
if "$demo" export --checkpoint run_b/checkpoints --out hf_b > again.log 2>&1; then fail "overwrote a non-empty --out"; fi
has again.log "is not empty"
cp -r hf_b hf_b_single
run force.log "$demo" export --checkpoint run_b/checkpoints --out hf_b --force --max-shard-mb 4 --dump-logits "$ids"
test -s hf_b/model.safetensors.index.json && test -s hf_b/model-00004-of-00004.safetensors || { ls hf_b; fail "shards"; }
test ! -e hf_b/model.safetensors || fail "--force left the old model.safetensors"
cmp hf_b/kiln_logits.safetensors hf_b_single/kiln_logits.safetensors || fail "logits differ between exports"
# Import (from the sharded export) into a new run; greedy generation and logits equal the original's.
run import_b.log "$demo" import --hf hf_b --out run_bi/checkpoints
cat import_b.log
test -d run_bi/checkpoints/step_00000000 || fail "no step_00000000"
gen() { "$demo" generate --checkpoint "$1" --prompt "Love is" --prompt "A computer" --tokens 40 --temperature 0 | grep -a -v '^kiln: '; }
gen run_b/checkpoints > gen_b.txt
gen run_bi/checkpoints > gen_bi.txt
cat gen_bi.txt
cmp gen_b.txt gen_bi.txt || fail "greedy generation differs after export + import (byte-level)"
run export_bi.log "$demo" export --checkpoint run_bi/checkpoints --out hf_bi --dump-logits "$ids"
cmp hf_b_single/kiln_logits.safetensors hf_bi/kiln_logits.safetensors || fail "logits differ after export + import"
# A second import into the same root is refused (a newer checkpoint there would win --resume auto).
if "$demo" import --hf hf_b --out run_bi/checkpoints > import2.log 2>&1; then fail "imported into a root with checkpoints"; fi
has import2.log "already holds checkpoints"
# Training resumes from the import.
run resume_b.log "$demo" --tokenizer '' --steps 1 --log-every 1 --eval-batches 1 --sample-tokens 0 --threads 2 --out run_bi --resume auto
has resume_b.log "resumed from run_bi/checkpoints/step_00000000 at step 0"
test -d run_bi/checkpoints/step_00000001 || fail "no checkpoint after training from the import"

# ---- 2. BPE ----------------------------------------------------------------------------------------------------
tok=$fx/chat/tokenizer.json  # a Kiln BPE with the chat tokens (tests/reference/make_chat_fixture.py)
fortunes=/usr/share/games/fortunes
mkdir -p shards
for src in computers linux perl science; do run tok_$src.log "$tokenize" "$fortunes/$src" --tokenizer "$tok" -o "shards/$src" --seed 1 -q; done
run tok_heldout.log "$tokenize" "$fortunes/zippy" --tokenizer "$tok" -o shards/heldout -q
run train_p.log "$demo" --tokenizer "$tok" --data shards --steps 3 --log-every 1 --eval-batches 1 --sample-tokens 0 --threads 2 --out run_p
# The tokenizer is part of the run: resuming with another one is refused, naming both.
if "$demo" --tokenizer '' --steps 4 --sample-tokens 0 --threads 2 --out run_p --resume auto > retok.log 2>&1; then
  cat retok.log; fail "resuming a BPE checkpoint with byte-level tokens was allowed"
fi
has retok.log "the checkpoint was trained with tokenizer \"$tok\" but this run reads its data with byte-level tokens"
has retok.log "allow-tokenizer-change"
run export_p.log "$demo" export --checkpoint run_p/checkpoints --out hf_p
cat export_p.log
has export_p.log "tokenizer.json (and tokenizer_config.json, special_tokens_map.json) from "
cmp hf_p/tokenizer.json "$tok" || fail "tokenizer.json is not the checkpoint's tokenizer"
eod=$(sed -n 's/.*"end_of_document": \(-\{0,1\}[0-9]*\).*/\1/p' run_p/checkpoints/step_00000003/state.json | head -n 1)
[[ -n "$eod" && "$eod" -ge 0 ]] || fail "no end_of_document in the checkpoint"
has hf_p/config.json "\"eos_token_id\": $eod"
# With the chat tokens: the chat template, and generation stops at <|im_end|> as well as at the end of a document.
im_end=$((eod + 2))  # <|endoftext|>, <|im_start|>, <|im_end|>: the special tokens' order
tr -d ' \n' < hf_p/generation_config.json | grep -q "\"eos_token_id\":\[$eod,$im_end\]" \
  || { cat hf_p/generation_config.json; fail "generation_config.json: eos_token_id [$eod, $im_end]"; }
has hf_p/tokenizer_config.json '"chat_template": "{%- set ns = namespace(no_think=false) -%}'
# What AutoTokenizer reads besides tokenizer.json: the end-of-document token as eos and pad, no bos.
has hf_p/tokenizer_config.json '"tokenizer_class": "PreTrainedTokenizerFast"'
has hf_p/tokenizer_config.json '"eos_token": "<|endoftext|>"'
has hf_p/tokenizer_config.json '"pad_token": "<|endoftext|>"'
has hf_p/tokenizer_config.json '"bos_token": null'
has hf_p/special_tokens_map.json '"eos_token": "<|endoftext|>"'
run import_p.log "$demo" import --hf hf_p --out run_pi/checkpoints
has import_p.log "tokenizer $work/hf_p/tokenizer.json"
gen run_p/checkpoints > gen_p.txt
gen run_pi/checkpoints > gen_pi.txt
cat gen_pi.txt
cmp gen_p.txt gen_pi.txt || fail "greedy generation differs after export + import (BPE)"
"$demo" generate --checkpoint run_pi/checkpoints --prompt "Unix" --tokens 3 2>&1 | grep -q "tokenizer $work/hf_p/tokenizer.json" \
  || fail "generate on the import does not use the export's tokenizer.json"

# ---- 3. transformers' tiny Llama -------------------------------------------------------------------------------
ref=$fx/hf/tiny_llama/reference_logits.safetensors
run import_t.log "$tiny" import --hf "$fx/hf/tiny_llama" --out tl/ck
cat import_t.log
has import_t.log "(llama, sharded, bfloat16)"
run check_t.log "$tiny" export --checkpoint tl/ck --out tl/hf --check-logits "$ref"
cat check_t.log
has check_t.log "logits match"
has tl/hf/config.json '"model_type": "llama"'
test ! -e tl/hf/tokenizer.json || fail "tokenizer.json from nowhere"
# Imported without a tokenizer: its ids are not bytes, and the export says so rather than claiming byte-level.
has check_t.log "imported without one, and its ids are not bytes"
has tl/hf/kiln.json '"byte_level": false'
# The F32 export imports back to the same parameters.
run import_t2.log "$tiny" import --hf tl/hf --out tl/ck2
run check_t2.log "$tiny" export --checkpoint tl/ck2 --out tl/hf2 --check-logits "$ref"
has check_t2.log "logits match"
cmp tl/hf/model.safetensors tl/hf2/model.safetensors || fail "F32 export -> import -> export changed the weights"

# ---- 4. a config that does not fit ----------------------------------------------------------------------------
set +e
"$demo" import --hf "$fx/hf/tiny_llama" --out bad/checkpoints > bad.log 2>&1
rc=$?
set -e
cat bad.log
[[ $rc -eq 3 ]] || fail "a mismatching config: exit $rc, expected 3"
for f in "vocab_size: checkpoint 128, recipe 2048" "hidden_size: checkpoint 64, recipe 192" "num_hidden_layers: checkpoint 2, recipe 8" \
         "tie_word_embeddings: checkpoint false, recipe true" "rope_theta: checkpoint 500000, recipe 10000"; do
  has bad.log "$f"
done
test ! -e bad/checkpoints/step_00000000 || fail "a mismatching import wrote a checkpoint"

echo "PASS: export (single, shards, --force, refusals) -> import -> identical greedy text and logits (byte-level, BPE);"
echo "      resume from an import; transformers' tiny Llama (BF16 shards) within 1e-4 of Kiln; mismatches exit 3"
