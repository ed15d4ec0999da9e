"""Training speed of two (or more) source trees of ablate, measured in one sitting with the arms alternated.

Each arm is ``NAME=TREE[:DTYPE[:compile]]``; every round runs each arm once in a fresh process
(``PYTHONPATH=TREE``), training the baseline at nanoGPT's CPU configuration on Tiny Shakespeare for
``--steps`` steps, and reads the median tokens/s of its 10-step logging windows after step 30 (training
steps only). Round 0 warms caches (the data, inductor's) and is not counted. The figures: each arm's
median tokens/s and its ratio to the first arm (median of the per-round ratios, with their range), and
the final val loss of every run.

    git worktree add /tmp/old 4241a7d
    python scripts/ab_trees.py --data-file ../shared/data/tinyshakespeare/input.txt --pairs 6 \\
        old=/tmp/old new=. new-compile=.:float32:compile new-bf16=.:bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, torch
kw = json.loads(sys.argv[1])
torch.set_num_threads(kw["threads"])
from ablate.config import RunConfig
from ablate.train import train
cfg = RunConfig(variant="baseline", data="tinyshakespeare", data_file=kw["data_file"], budget=f"{kw['steps']}steps",
                seed=0, out_dir=kw["out"], cache_dir=kw["cache"], log_every=10, dtype=kw["dtype"],
                compile=kw["compile"])
r = train(cfg)
rates = sorted(row["tokens_per_s"] for row in r.history if "tokens_per_s" in row and row["step"] > 30)
print(json.dumps({"tokens_per_s": rates[len(rates) // 2], "val_loss": r.final.get("val_loss")}))
"""


def parse_arm(text: str) -> tuple[str, Path, str, bool]:
    name, sep, spec = text.partition("=")
    if not sep:
        raise SystemExit(f"ab_trees: an arm is NAME=TREE[:DTYPE[:compile]], got {text!r}")
    tree, _, rest = spec.partition(":")
    dtype, _, comp = rest.partition(":")
    if comp not in ("", "compile"):
        raise SystemExit(f"ab_trees: the third part of an arm is 'compile' or nothing, got {comp!r}")
    return name, Path(tree).resolve(), dtype or "float32", comp == "compile"


def run_arm(tree: Path, dtype: str, compile_: bool, args, work: Path, tag: str) -> dict:
    kw = {"data_file": str(Path(args.data_file).resolve()), "steps": args.steps, "threads": args.threads,
          "dtype": dtype, "compile": compile_, "out": str(work / tag), "cache": str(work / "cache")}
    env = dict(os.environ, PYTHONPATH=str(tree), MLFLOW_DISABLE_TELEMETRY="true")
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(kw)], cwd=work, env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise SystemExit(f"ab_trees: {tag} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="+", help="NAME=TREE[:DTYPE[:compile]]; the first is the reference")
    parser.add_argument("--data-file", required=True, help="Tiny Shakespeare's input.txt")
    parser.add_argument("--pairs", type=int, default=4, help="counted rounds (default 4)")
    parser.add_argument("--steps", type=int, default=300, help="steps per run, at least 50 (default 300)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    if args.pairs < 1 or args.steps < 50 or args.threads < 1:  # the windows read start after step 30
        parser.error("need --pairs >= 1, --steps >= 50 (windows after step 30 are read) and --threads >= 1")
    arms = [parse_arm(a) for a in args.arms]
    results: dict[str, list[dict]] = {name: [] for name, *_ in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.pairs + 1):
            for name, tree, dtype, compile_ in arms:
                r = run_arm(tree, dtype, compile_, args, Path(tmp), f"{name}-{round_}")
                if round_:
                    results[name].append(r)
                print(f"round {round_}{' (warm-up)' if not round_ else ''} {name}: {r['tokens_per_s']:,.0f} tokens/s, "
                      f"val_loss {r['val_loss']:.6f}", flush=True)
    ref = results[arms[0][0]]
    for name, rows in results.items():
        ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(rows, ref)]
        print(f"{name}: median {statistics.median(r['tokens_per_s'] for r in rows):,.0f} tokens/s, "
              f"{statistics.median(ratios):.3f}x {arms[0][0]} (rounds {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
