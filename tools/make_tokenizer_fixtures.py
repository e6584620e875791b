#!/usr/bin/env python3
"""Builds the tokenizer fixtures under tests/data/tokenizers/ with Hugging Face tokenizers.

- golden_<name>.jsonl for the real tokenizers in ../shared/models/tokenizers: thousands of
  strings weighted to the hard cases (digit runs, contractions in every case, CJK, emoji with
  ZWJ and skin tones, combining marks, every Unicode space, CRLF, tabs, spaces before newlines,
  special tokens typed into text, code, random code points), each with the ids of
  Tokenizer.encode and both decodes.
- decode_<name>.jsonl: random id sequences (byte tokens, specials, holes) and their decodes.
- synthetic/<variant>/tokenizer.json + golden.jsonl: small tokenizers trained here so that every
  component tpkit supports is exercised (Split behaviours and invert, ByteLevel with a prefix
  space and its regex, Metaspace schemes, Digits, Replace with a regex, TemplateProcessing,
  added tokens with lstrip / rstrip / single_word / normalized, unknown tokens with and without
  fuse_unk, continuing_subword_prefix, end_of_word_suffix, ignore_merges, no decoder).
- regex.jsonl: patterns and texts with the pieces an Isolated Split gives.
- nfc.jsonl: texts and tokenizers' NFC of them.

CI never runs this: the outputs are committed. Running it again rewrites them byte for byte.

    python3 -m venv ../venv-text && ../venv-text/bin/pip install -r tools/requirements-text.txt
    ../venv-text/bin/python tools/make_tokenizer_fixtures.py [--models ../shared/models]
"""
import argparse
import json
import os
import random

import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                        trainers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tokenizers")
REAL = ["qwen3", "mistral-v1", "mistral-v1-metaspace", "cl100k"]

WORDS = ("the of and to in is was he for it with as his on be at by had are but from or have an they which one "
         "you were her all she there would their we him been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such like "
         "our over man me even most made after also did many before must through back years where much your way "
         "well down should because each just those people Mr how too little state good very make world still own "
         "see men work long get here between both life being under never day same another know while last might "
         "us great old year off come since against go came right used take three").split()
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Re", "'rE", "'VE", "'Ve", "'M",
                "'LL", "'Ll", "'D", "\u2019s", "\u2019t", "'\u017f", "'\u212a", "'x", "''", "'"]
SPACES = ["\u0085", "\u00a0", "\u1680"] + [chr(c) for c in range(0x2000, 0x200B)] + \
         ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u200b", "\ufeff", "\u180e", "\t", "\x0b", "\x0c", "\r",
          "\n", "\r\n", " ", "  ", "   "]
CJK = ["\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002",
       "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\u6211\u559c\u6b22\u5403\u82f9\u679c\u548c\u9999\u8549",
       "\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a", "\u4e2d\u6587\u6807\u70b9\u201c\u5f15\u53f7\u201d\u3002"]
EMOJI = ["\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\U0001F44D\U0001F3FD", "\U0001F1EB\U0001F1F7",
         "1\ufe0f\u20e3", "\u2764\ufe0f", "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F9D1\U0001F3FF\u200d\U0001F4BB",
         "\U0001F600", "\U0001F642", "\U0001FAE0", "\u263a"]
COMBINING = ["e\u0301", "a\u0308\u0301", "\u0301", "\u0301\u0301x", "Vi\u1ec7t", "Vie\u0323\u0302t", "\u1100\u1161\u11a8",
             "\u1100\u1161", "\uac00\u11a8", "o\u0328\u0304", "\u0915\u094d\u0937", "\u0e01\u0e34\u0e48",
             "A\u030a", "\u212b", "\u1e9b\u0323", "q\u0307\u0323", "\u05d1\u05bc\u05b8", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
             "n\u0303", "\u00f1", "\u2126", "\uf900", "\u0958", "\u2adc", "\U0001D15E"]
DIGITS = ["0", "7", "42", "123", "1234", "12345", "3.14159", "1,000,000", "2024-11-29", "+1 (555) 010-9999",
          "\u0663\u0664\u0665", "\uff11\uff12\uff13", "\u00b2\u00b3", "\u2155", "\u216b", "0x1F", "1e-9", "v1.2.3"]
CODE = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
        "const x = {a: 1, 'b': [2, 3]};", "if __name__ == \"__main__\":\n    main()", "SELECT * FROM t WHERE id=1;",
        "#include <vector>\nint main() { return 0; }", "    \n\n    x = 1  \n", "a\t\tb\t\n", "lambda: None  # comment",
        "<div class=\"x\">&amp;</div>", "    if (a && b || !c) {}", "x+=1;y-=2;z*=3"]


def random_text(rng, specials):
    kind = rng.choice(["prose", "prose", "contraction", "digits", "cjk", "emoji", "combining", "spaces", "code",
                       "special", "random", "mixed", "mixed"])
    if kind == "prose":
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 14))]
        words = [w.upper() if rng.random() < 0.1 else w.capitalize() if rng.random() < 0.2 else w for w in words]
        return " ".join(words) + rng.choice(["", ".", "!", "?", ",", "..."])
    if kind == "contraction":
        return "".join(rng.choice(WORDS) + rng.choice(CONTRACTIONS) + rng.choice([" ", "", "  ", "\n"])
                       for _ in range(rng.randint(1, 4)))
    if kind == "digits":
        parts = [rng.choice(DIGITS) if rng.random() < 0.5 else "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))
                 for _ in range(rng.randint(1, 3))]
        return rng.choice([" ", "", "x", "\n"]).join(parts)
    if kind == "cjk":
        s = rng.choice(CJK)
        if rng.random() < 0.5:
            s += "".join(chr(rng.choice([rng.randint(0x4E00, 0x9FFF), rng.randint(0x3040, 0x30FF), rng.randint(0xAC00, 0xD7A3)]))
                         for _ in range(rng.randint(1, 10)))
        return s
    if kind == "emoji":
        return rng.choice(["", "hi ", " "]) + "".join(rng.choice(EMOJI) + rng.choice(["", " "]) for _ in range(rng.randint(1, 4)))
    if kind == "combining":
        return "".join(rng.choice(COMBINING) + rng.choice(["", " ", "x"]) for _ in range(rng.randint(1, 4)))
    if kind == "spaces":
        return "".join(rng.choice([rng.choice(WORDS), rng.choice(SPACES), rng.choice(SPACES) * rng.randint(1, 4)])
                       for _ in range(rng.randint(1, 8)))
    if kind == "code":
        return rng.choice(CODE)
    if kind == "special":
        pieces = []
        for _ in range(rng.randint(1, 5)):
            pieces.append(rng.choice(specials + [rng.choice(specials)[:-2], " ", "\n", rng.choice(WORDS), "x", "<", "|>"]))
        return "".join(pieces)
    if kind == "random":
        out = []
        for _ in range(rng.randint(1, 12)):
            cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0x7FF), rng.randint(0x800, 0xFFFF),
                             rng.randint(0x10000, 0x10FFFF)])
            if 0xD800 <= cp < 0xE000:
                cp = 0xFFFD
            out.append(chr(cp))
        return "".join(out)
    return "".join(random_text(rng, specials) + rng.choice(["", " ", "\n"]) for _ in range(rng.randint(2, 3)))


def texts_for(seed, count, specials):
    rng = random.Random(seed)
    texts = ["", " ", "  ", "\n", "a", "Hello world", " Hello", "Hello  world", "hello\n\nworld", "a   \n  b",
             "x\r\ny", "\r\r\n", "\t\tindent", "it's IT'S It'S", "12345678901234567890", "\u00a0\u00a0x",
             "\u3000x\u3000", "Vi\u1ec7t Nam", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\x00nul\x00"]
    texts += [" ".join(WORDS[i:i + 60]) for i in range(0, 120, 60)]
    texts.append("The quick brown fox. " * 100)
    texts.append("9" * 300)
    while len(texts) < count:
        texts.append(random_text(rng, specials))
    return texts


def special_strings(tok):
    return [t.content for t in tok.get_added_tokens_decoder().values()] + ["<s>", "</s>", "[INST]", "[/INST]"]


def write_jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")


def golden_records(tok, texts, rng):
    records = []
    for text in texts:
        add = rng.random() < 0.5
        ids = tok.encode(text, add_special_tokens=add).ids
        records.append({"text": text, "add_special_tokens": add, "ids": ids,
                        "decoded": tok.decode(ids, skip_special_tokens=False),
                        "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return records


def decode_records(tok, rng, count):
    vocab = tok.get_vocab(with_added_tokens=True)
    present = sorted(vocab.values())
    byte_like = [i for t, i in vocab.items() if len(t) == 1 or (len(t) == 6 and t.startswith("<0x"))]
    specials = sorted(tok.get_added_tokens_decoder().keys())
    holes = sorted(set(range(max(present) + 1)) - set(present))[:50]
    records = []
    for _ in range(count):
        ids = []
        for _ in range(rng.randint(1, 24)):
            r = rng.random()
            pool = byte_like if r < 0.4 else specials if r < 0.5 and specials else holes if r < 0.55 and holes else present
            ids.append(rng.choice(pool))
        records.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                        "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return records


CORPUS_SEED = 1234


def corpus():
    rng = random.Random(CORPUS_SEED)
    return [random_text(rng, ["<bos>", "<eos>"]) for _ in range(3000)] + [" ".join(WORDS)] * 5


def bpe_trainer(vocab_size, specials, **kw):
    return trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False, **kw)


def synthetic_variants():
    """(name, tokenizer) pairs, each trained on the same corpus."""
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    variants = []

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(corpus(), bpe_trainer(700, ["<bos>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    t.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 0), ("<eos>", 1)])
    t.add_tokens([AddedToken("<tool>", lstrip=True, rstrip=True), AddedToken("[MASK]", single_word=True),
                  AddedToken("hello world", normalized=True), AddedToken("ab", normalized=False)])
    t.add_special_tokens([AddedToken("<|sep|>", lstrip=True)])
    variants.append(("bytelevel-prefix-template", t))

    t = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    t.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(" {2,}"), " ")])
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    t.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    t.train_from_iterator(corpus(), bpe_trainer(600, ["<unk>"], limit_alphabet=120))
    variants.append(("metaspace-always-split-unk", t))

    t = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=False, byte_fallback=True))
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=False)
    t.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="\u2581", prepend_scheme="never")])
    t.train_from_iterator(corpus(), bpe_trainer(800, ["<unk>"] + byte_tokens, limit_alphabet=100))
    variants.append(("metaspace-never-bytefallback", t))

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d+"), "merged_with_previous"),
        pre_tokenizers.Split(" ", "merged_with_next"),
        pre_tokenizers.Split(Regex(r"[.,!?]"), "removed"),
        pre_tokenizers.Split(Regex(r"[aeiou]+"), "contiguous", invert=True),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(corpus(), bpe_trainer(600, [], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    variants.append(("split-behaviours", t))

    t = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>",
                             ignore_merges=True))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("_"), normalizers.Replace("x", "ks")])
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\s+"), "removed"),
                                               pre_tokenizers.Digits(individual_digits=True)])
    t.decoder = decoders.Sequence([decoders.Replace("##", ""), decoders.Replace("</w>", " "),
                                   decoders.Strip(" ", 0, 1)])
    t.train_from_iterator(corpus(), bpe_trainer(900, ["[UNK]"], continuing_subword_prefix="##", end_of_word_suffix="</w>",
                                                limit_alphabet=150))
    variants.append(("prefix-suffix-ignore-merges", t))

    t = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=False))
    t.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]+"), "isolated")
    t.train_from_iterator(corpus(), bpe_trainer(500, ["<unk>"], limit_alphabet=60))
    variants.append(("no-decoder-unk", t))
    return variants


REGEX_PATTERNS = [
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"\p{N}{1,3}", r"[\p{P}\p{S}]", r"[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", r"\d+|\D+", r"\w+|\W", r"\s|\S+",
    r"[a-z]{2,3}", r"[A-Z][a-z]*?", r"a.c", r"x{2}", r"(ab)+", r"\b\w", r"^\s+|\s+$", r"(?=\d)", r"(?i)[a-c]+",
    r"[^a-z ]+", r"\p{Lu}\p{Ll}+", r"\P{L}+", r"[\-\]\\]", r"\x41|\u00e9|\x{1F600}", r"(?:ab|a)(?:c|bc)", r"\.\*\+",
    r"\h+", r"\p{Zs}+", r"[\p{N}\p{Sc}]+", r"colou?r", r"a{2,}", r"a{,2}b", r"[[:alpha:]]+",
]


def regex_records(rng):
    texts = texts_for(77, 160, ["<|im_start|>"])
    records = []
    for pattern in REGEX_PATTERNS:
        try:
            split = pre_tokenizers.Split(Regex(pattern), "isolated")
        except Exception as e:  # patterns tokenizers itself refuses are not fixtures
            print("skipping", pattern, e)
            continue
        for text in rng.sample(texts, 40) + ["aaa", "Hello World 123", "ab abab  cab", "\u00e9\U0001F600A"]:
            records.append({"pattern": pattern, "text": text, "pieces": [p for p, _ in split.pre_tokenize_str(text)]})
    return records


def nfc_records(rng):
    nfc = normalizers.NFC()
    texts = []
    for _ in range(3000):
        s = "".join(rng.choice([rng.choice(COMBINING), chr(rng.randint(0x300, 0x36F)), chr(rng.randint(0x41, 0x7A)),
                                chr(rng.randint(0xC0, 0x24F)), chr(rng.randint(0x1100, 0x11FF)), chr(rng.randint(0xAC00, 0xD7A3)),
                                chr(rng.randint(0x1E00, 0x1FFF)), chr(rng.randint(0x0590, 0x0E7F)), chr(rng.randint(0x3040, 0x30FF)),
                                chr(rng.choice([0x0897, 0x1ABF, 0x10EAB, 0x1E2EC, 0x16FF0, 0x0D3B, 0x1E94A]))])
                    for _ in range(rng.randint(1, 8)))
        texts.append(s)
    return [{"text": t, "nfc": nfc.normalize_str(t)} for t in texts]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(ROOT, "..", "shared", "models"))
    args = ap.parse_args()
    assert tokenizers.__version__ == "0.22.1", tokenizers.__version__
    rng = random.Random(2026)
    for i, name in enumerate(REAL):
        tok = Tokenizer.from_file(os.path.join(args.models, "tokenizers", name, "tokenizer.json"))
        texts = texts_for(100 + i, 1500, special_strings(tok))
        write_jsonl(os.path.join(OUT, f"golden_{name}.jsonl"), golden_records(tok, texts, rng))
        write_jsonl(os.path.join(OUT, f"decode_{name}.jsonl"), decode_records(tok, rng, 300))
    for i, (name, tok) in enumerate(synthetic_variants()):
        folder = os.path.join(OUT, "synthetic", name)
        os.makedirs(folder, exist_ok=True)
        tok.save(os.path.join(folder, "tokenizer.json"), pretty=False)
        tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        texts = texts_for(200 + i, 400, special_strings(tok))
        write_jsonl(os.path.join(folder, "golden.jsonl"), golden_records(tok, texts, rng))
        write_jsonl(os.path.join(folder, "decode.jsonl"), decode_records(tok, rng, 100))
    write_jsonl(os.path.join(OUT, "regex.jsonl"), regex_records(rng))
    write_jsonl(os.path.join(OUT, "nfc.jsonl"), nfc_records(rng))
    total = 0
    for base, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(base, f)) for f in files)
    print(f"{OUT}: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
