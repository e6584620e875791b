"""Encode throughput of tpkit's tokenizers beside Hugging Face tokenizers, one thread, same corpus,
same documents, in one run: the rounds alternate (tpkit, then tokenizers) so both see the same
machine state, and the medians of the rounds are reported with their ratio. The token counts
must agree (the same ids, or the comparison means nothing).

The corpus is the repository's own docs and sources (prose and code) plus the texts of the
committed tokenizer fixtures (CJK, emoji, digits, odd spaces): a few MB of mixed text that every
checkout has. Each file is cut into documents of about 4 KB at line ends, encoded one by one.

    python3 bench/tokenizer_side_by_side.py --bench build/bench/bench_tokenizer \
        [--models ../shared/models] [--rounds 5]

Prints "skipped" for the Hugging Face column where the tokenizers package is absent.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus_files(workdir):
    files = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]
    for folder in ["include", "tests", "examples", "bench", "kernels"]:
        for base, _, names in os.walk(os.path.join(ROOT, folder)):
            for n in sorted(names):
                if n.endswith((".hpp", ".cpp", ".cu", ".cuh")) and n not in ("catch.hpp", "unicode_tables.hpp"):
                    files.append(os.path.join(base, n))
    texts = os.path.join(workdir, "fixture_texts.txt")
    with open(texts, "w", encoding="utf-8") as out:
        for path in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "tokenizers", "golden_*.jsonl"))):
            for line in open(path, encoding="utf-8"):
                out.write(json.loads(line)["text"] + "\n")
    return sorted(files) + [texts]


def documents(files):
    docs = []
    for path in files:
        text = open(path, "rb").read().decode("utf-8", errors="replace")
        at = 0
        raw = text.encode("utf-8")
        # Cut as bench_tokenizer does: at the first newline at or after each 4096-byte mark.
        while at < len(raw):
            end = min(len(raw), at + 4096)
            nl = raw.find(b"\n", end)
            end = len(raw) if nl < 0 else nl + 1
            docs.append(raw[at:end].decode("utf-8", errors="replace"))
            at = end
    return docs


def run_tpkit(bench, name, path, files):
    out = subprocess.run([bench, "--tokenizer", f"{name}={path}", "--reps", "1", "--corpus", *files],
                         check=True, capture_output=True, text=True).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return float(fields["seconds"]), int(fields["tokens"]), int(fields["bytes"])


def run_hf(tok, docs):
    start = time.perf_counter()
    count = 0
    for d in docs:
        count += len(tok.encode(d, add_special_tokens=False).ids)
    return time.perf_counter() - start, count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--models", default=os.path.join(ROOT, "..", "shared", "models"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
    with tempfile.TemporaryDirectory() as work:
        files = corpus_files(work)
        docs = documents(files)
        print(f"corpus: {len(files)} files, {len(docs)} documents, {sum(len(d.encode()) for d in docs) / 1e6:.2f} MB")
        print("| tokenizer | tpkit MB/s | tokenizers MB/s | tpkit / tokenizers | tokens |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name in ["qwen3", "mistral-v1"]:
            path = os.path.join(args.models, "tokenizers", name, "tokenizer.json")
            hf = tokenizers.Tokenizer.from_file(path) if tokenizers else None
            if hf:
                hf.encode_special_tokens = True  # typed specials are text, as tpkit's default parse_special=false
            ours, theirs = [], []
            for _ in range(args.rounds):
                seconds, tokens, size = run_tpkit(args.bench, name, path, files)
                ours.append(size / seconds / 1e6)
                if hf:
                    hf_seconds, hf_tokens = run_hf(hf, docs)
                    if hf_tokens != tokens:
                        sys.exit(f"{name}: tpkit made {tokens} tokens, tokenizers {hf_tokens}: not comparable")
                    theirs.append(size / hf_seconds / 1e6)
            a = statistics.median(ours)
            if theirs:
                b = statistics.median(theirs)
                print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f}x | {tokens} |")
            else:
                print(f"| {name} | {a:.2f} | skipped | | {tokens} |")


if __name__ == "__main__":
    main()
