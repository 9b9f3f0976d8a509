#!/usr/bin/env python3
"""The chat format's fixture: what Hugging Face transformers' apply_chat_template makes of conversations with Kiln's
chat template (kiln/data/chat.hpp), for tests/test_chat.cpp to compare Kiln's rendering, ids and loss mask against.

    python tests/reference/make_chat_fixture.py build/kiln_tokenizer

needs transformers (>= 4.45, for {% generation %} and return_assistant_tokens_mask) and jinja2 from PyPI, e.g. in a
venv: python3 -m venv /tmp/v && /tmp/v/bin/pip install transformers tokenizers jinja2.
It trains a small BPE with the chat tokens with kiln_tokenizer (on tests/fixtures/tokenizer/train_corpus.txt), asks
kiln_tokenizer for the template, and writes tests/fixtures/chat/{tokenizer.json, expected.json}: for every line of
conversations.jsonl (trained) and prompts.jsonl (with the generation prompt) the text, ids and assistant mask that
transformers gives. Deterministic: a rerun writes the same files.
"""
import json
import pathlib
import subprocess
import sys

from transformers import PreTrainedTokenizerFast

tool = sys.argv[1]
root = pathlib.Path(__file__).resolve().parents[2]
fx = root / "tests" / "fixtures" / "chat"
tok_path = fx / "tokenizer.json"
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
cmd = [tool, "train", str(root / "tests/fixtures/tokenizer/train_corpus.txt"), "--split-lines", "--vocab", "700",
       "--out", str(tok_path), "--force"]
for s in specials:
    cmd += ["--special", s]
subprocess.run(cmd, check=True)
template = subprocess.run([tool, "chat-template"], check=True, capture_output=True, text=True).stdout.rstrip("\n")

tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_path), chat_template=template)
out = {"template": template, "conversations": [], "prompts": []}
for name, gen in (("conversations", False), ("prompts", True)):
    for line in (fx / f"{name}.jsonl").read_text().splitlines():
        messages = json.loads(line)["messages"]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=gen,
                                      return_assistant_tokens_mask=True)
        ids = list(enc["input_ids"])
        assert ids == tok.encode(text, add_special_tokens=False)
        out[name].append({"text": text, "ids": ids, "mask": list(enc["assistant_masks"])})
(fx / "expected.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
print(f"wrote {fx / 'expected.json'} ({len(out['conversations'])} conversations, {len(out['prompts'])} prompts)")
