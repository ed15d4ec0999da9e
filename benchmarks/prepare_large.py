"""Benchmark: prepare a generated corpus of >= 1 GB with bounded memory (issue 12 item 2).

    .venv/bin/python benchmarks/prepare_large.py [--gb 1.0] [--tokenizer byte] [--tokenizer char] [--keep]

Writes a folder of .txt files (4 MiB each, paragraphs of random words separated by blank lines) to a
temporary folder under /tmp, prepares it with ``ablate.data.prepare`` (streamed: it is above
``STREAM_BYTES``; held-out documents = files), once per tokenizer, each in a fresh child process, and
prints the child's peak resident memory (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``), the
resident memory of a child that only imports the data layer (the floor), and the wall time. Everything
it wrote is deleted at the end (unless --keep). A benchmark, not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FILE_BYTES = 4 << 20
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from ablate.data.prepare import prepare
if sys.argv[1] == "imports-only":
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit()
t0 = time.perf_counter()
p = prepare(sys.argv[1], sys.argv[2], cache_dir=Path(sys.argv[3]))
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train_tokens": p.meta["train_tokens"], "val_tokens": p.meta["val_tokens"],
                  "split_unit": p.meta["split_unit"], "train_documents": p.meta.get("train_documents"),
                  "val_documents": p.meta.get("val_documents"), "source_bytes": p.meta["source_bytes"]}))
"""


def make_corpus(folder: Path, total_bytes: int, seed: int = 0) -> int:
    """Files of paragraphs of random words (a 20k-word vocabulary, some non-ASCII), ``total_bytes`` in all."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzéü"))
    vocab = ["".join(rng.choice(letters, size=rng.integers(1, 10))) for _ in range(20_000)]
    pool = []
    for _ in range(4000):  # paragraphs of 20-80 words, a few lines each
        words = [vocab[i] for i in rng.integers(0, len(vocab), size=rng.integers(20, 80))]
        lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        pool.append("\n".join(lines).capitalize() + ".")
    written, n = 0, 0
    while written < total_bytes:
        order = rng.integers(0, len(pool), size=FILE_BYTES // 300)
        text = "\n\n".join(f"{n}-{k}: {pool[i]}" for k, i in enumerate(order))[:FILE_BYTES] + "\n"
        data = text.encode("utf-8")
        (folder / f"part-{n:04d}.txt").write_bytes(data)
        written += len(data)
        n += 1
    return written


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--tokenizer", action="append", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ablate-prepare-large-", dir="/tmp"))
    try:
        corpus = root / "corpus"
        corpus.mkdir()
        t0 = time.perf_counter()
        size = make_corpus(corpus, int(args.gb * (1 << 30)))
        print(f"corpus: {size:,} bytes in {len(list(corpus.iterdir()))} files, generated in "
              f"{time.perf_counter() - t0:.1f} s ({corpus})")
        floor = child("imports-only")["peak_rss_mb"]
        print(f"floor: a child that only imports ablate.data.prepare peaks at {floor:.0f} MB RSS")
        for tok in args.tokenizer or ["byte", "char"]:
            r = child(str(corpus), tok, str(root / "cache"))
            print(f"{tok:>5}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"({r['source_bytes'] / r['seconds'] / 1e6:.1f} MB/s); {r['train_tokens']:,} train / "
                  f"{r['val_tokens']:,} val tokens; split by {r['split_unit']}: {r['train_documents']} / "
                  f"{r['val_documents']} documents")
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"       (RUSAGE_CHILDREN max RSS so far: {children:.0f} MB)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            print(f"deleted {root}")


if __name__ == "__main__":
    main()
