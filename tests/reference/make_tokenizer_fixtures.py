#!/usr/bin/env python3
"""Reference fixtures for Kiln's byte-level BPE tokenizer (tests/test_tokenizer.cpp), made with HF `tokenizers`.

Two steps (see tests/reference/README.md, "Tokenizer fixtures"):

  inputs    writes tests/fixtures/tokenizer/train_corpus.txt (deterministic pseudo-text) and three tokenizer.json
            files trained by HF's BpeTrainer on it, Llama-3 / GPT-2 style:
              hf_llama3_pairs.json   Split(Llama-3 regex) + ByteLevel, merges as [a, b] pairs, specials in the vocab
                                     (trainer), a non-special added token "<think>" (normalized true)
              hf_llama3_legacy.json  same pre-tokenizer, merges rewritten to the old "a b" strings, ignore_merges
                                     true, special tokens added after training (ids past the model vocab, Llama-3)
              hf_gpt2_prefix.json    plain ByteLevel(add_prefix_space true, use_regex true): the GPT-2 regex
  expected  (after Kiln has written kiln_bpe.json) encodes the test texts with HF for every tokenizer and writes
            expected.json {"texts": [...], "ids": {file: [[id...] per text]}}, add_special_tokens=False. It also
            trains HF's BpeTrainer on train_corpus.txt with Kiln's settings and reports whether the merges equal
            kiln_bpe.json's (Kiln aims at HF's tie rule; only the encoding must be identical).
"""
import json
import random
import sys
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures" / "tokenizer"
LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

WORDS = ("the of and to in is you that it he was for on are as with his they I at be this have from or one had by "
         "word but not what all were we when your can said there use an each which she do how their if will up other "
         "about out many then them these so some her would make like him into time has look two more write go see "
         "number no way could people my than first water been call who oil its now find long down day did get come "
         "made may part tokenizer merge byte pair encoding Kiln training model Llama").split()
CONTRACTIONS = ["I'm", "they'll", "DON'T", "we've", "she's", "you'd", "it's", "We'RE", "can't", "o'clock"]
UNICODE = ["café", "naïve", "Zürich", "façade", "日本語", "中文字符", "한국어", "Привет", "مرحبا", "🙂", "🚀🔥",
           "ΑΒΓ", "straße", "ﬁ", "x²", "٣٤٥"]


def corpus_text(n_lines=1600, seed=1234):
    rnd = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        k = rnd.randint(4, 14)
        parts = []
        for _ in range(k):
            r = rnd.random()
            if r < 0.75:
                w = rnd.choice(WORDS)
                parts.append(w.capitalize() if rnd.random() < 0.1 else w)
            elif r < 0.83:
                parts.append(rnd.choice(CONTRACTIONS))
            elif r < 0.90:
                parts.append(str(rnd.randint(0, 10 ** rnd.randint(1, 8))))
            elif r < 0.96:
                parts.append(rnd.choice(UNICODE))
            else:
                parts.append(rnd.choice([",", ".", "!", "?", ";", "--", "(x)", "\"q\"", "#", "=>"]))
        sep = rnd.choice([" ", " ", " ", "  ", "\t"])
        lines.append(sep.join(parts) + rnd.choice([".", "!", "", ":"]))
    return "\n".join(lines) + "\n"


TEXTS = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space and trailing space ",
    "I'm sure they'll come. DON'T panic; it's fine. She'S here, WE'LL see, you'D know.",
    "Numbers: 1234567 and 3.14159, 2024-06-01, 1,000,000 and x1y22z333",
    "Café naïve Zürich façade straße — déjà vu",
    "日本語のテキストと中文字符, 한국어 문장",
    "Emoji: 🙂🚀🔥 👩‍👩‍👧 flags 🇫🇷 done",
    "Whitespace   runs\t\ttabs\n\nnew lines\r\n windows\n   \n\t\n",
    "    indented code:\n        return x  # comment\n",
    "<|endoftext|>",
    "Text<|endoftext|>more text<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>",
    "<|im_start|><|im_start|>x<|endoftext|><|endoftext|>",
    "partial <|endoftext| and <|im_sta rt|> are not special",
    "<think>reasoning</think> answer with <think>",
    "unicode spaces: a\u00a0b\u3000c\u2028d\u0085e\u2003f",
    "mixed ΑΒΓ αβγ Привет мир مرحبا بالعالم",
    "symbols !!! ??? ... ---- ==> <= && || ;; {}[]()",
    "a" * 300,
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3 + " thethethethethethethethethethethethethethethethethethethethethe",
    "!?" * 60 + "\n",
    "ab " * 100,
    "word" + "\n" * 5 + "end" + " " * 7,
    "",
    " ",
    "\n",
    "x²+y² = z², ﬁne ligature, ٣٤٥ Arabic digits",
    "URLs: https://example.com/path?q=1&r=2#frag and emails a.b@c.de",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "'s 's 'S 're 've 'm 'll 'd 't quote's",
    "tab\tseparated\tvalues\t1\t22\t333\t4444",
    "Mixed123Numbers456InWords789 and 12345678901234567890",
]


def byte_level_sequence():
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), "isolated", invert=False),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def hf_train(pre_tokenizer, vocab_size, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = (OUT / "train_corpus.txt").read_text(encoding="utf-8")
    tok.train_from_iterator(text.split("\n"), trainer)
    return tok


def write_json(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def make_inputs():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train_corpus.txt").write_text(corpus_text(), encoding="utf-8")

    t = hf_train(byte_level_sequence(), 700, SPECIALS)
    t.add_tokens([AddedToken("<think>", special=False, normalized=True)])
    write_json(OUT / "hf_llama3_pairs.json", json.loads(t.to_str()))

    t = hf_train(byte_level_sequence(), 520, [])
    t.add_special_tokens(SPECIALS)
    j = json.loads(t.to_str())
    j["model"]["ignore_merges"] = True
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    write_json(OUT / "hf_llama3_legacy.json", j)

    t = hf_train(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), 450, ["<|endoftext|>"])
    write_json(OUT / "hf_gpt2_prefix.json", json.loads(t.to_str()))
    print("wrote", OUT)


def make_expected():
    names = ["kiln_bpe.json", "hf_llama3_pairs.json", "hf_llama3_legacy.json", "hf_gpt2_prefix.json"]
    ids = {}
    for n in names:
        tok = Tokenizer.from_file(str(OUT / n))
        ids[n] = [tok.encode(x, add_special_tokens=False).ids for x in TEXTS]
        for x, row in zip(TEXTS, ids[n]):
            assert tok.decode(row, skip_special_tokens=False) == x or n == "hf_gpt2_prefix.json", (n, x)
    write_json(OUT / "expected.json", {"texts": TEXTS, "ids": ids})

    # Does HF's trainer, given Kiln's settings, produce Kiln's merges? (Not required; reported.)
    kiln = json.loads((OUT / "kiln_bpe.json").read_text(encoding="utf-8"))
    n_special = len(kiln["added_tokens"])
    vocab_size = len(kiln["model"]["vocab"]) + n_special
    hf = json.loads(hf_train(byte_level_sequence(), vocab_size, [a["content"] for a in kiln["added_tokens"]]).to_str())
    same = [tuple(m) for m in hf["model"]["merges"]] == [tuple(m) for m in kiln["model"]["merges"]]
    print("wrote", OUT / "expected.json", "- HF BpeTrainer merges identical to Kiln's:", same)


if __name__ == "__main__":
    {"inputs": make_inputs, "expected": make_expected}[sys.argv[1] if len(sys.argv) > 1 else "expected"]()
