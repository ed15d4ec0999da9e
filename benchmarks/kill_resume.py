"""Kill/resume soak: SIGKILL an `ablate run` at random moments (checkpoint writes included: it checkpoints
every step) until it finishes, resuming each time; then check the final result equals an uninterrupted
run's bit for bit. Prints the kills, where they landed and the comparison (a benchmark you run).

    python benchmarks/kill_resume.py [--kills 20] [--steps 120] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="ablate-kill-"))
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"line {i}: to be, or not to be, that is the question.\n" for i in range(3000)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}

    def argv(out: str) -> list[str]:
        return [sys.executable, "-m", "ablate", "run", "--no-track", "--json", "--size", "tiny", "--context", "32",
                "--data", str(corpus), "--budget", f"{args.steps}steps", "--batch-size", "4", "--eval-points", "4",
                "--eval-batches", "2", "--checkpoint-every", "1", "--cache-dir", str(root / "cache"),
                "--out-dir", str(root / out)]

    ref = subprocess.run(argv("ref"), capture_output=True, text=True, env=env, check=True)
    reference = json.loads(ref.stdout.strip().splitlines()[-1])
    kills, landed, started = 0, [], time.perf_counter()
    while kills < args.kills:
        proc = subprocess.Popen(argv("killed") + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        time.sleep(rng.uniform(0.3, 4.0))
        if proc.poll() is not None:  # it finished before the kill: start over from scratch for more kills
            proc.communicate()
            for f in (root / "killed").glob("*/*"):
                f.unlink()
            continue
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        ckpts = list((root / "killed").glob("*/checkpoint.pt"))
        step = "no checkpoint yet"
        if ckpts:
            import torch

            try:
                step = f"checkpoint at step {torch.load(ckpts[0], weights_only=True)['step']}"
            except Exception as err:  # noqa: BLE001 - the point: a torn file must never be the one read
                step = f"unreadable checkpoint ({type(err).__name__})"
        tmp = len(list((root / "killed").glob("*/.*.tmp")))
        landed.append(f"{step}, {tmp} temp file(s)")
    done = subprocess.run(argv("killed") + ["--resume"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"resume failed after {kills} kills: {done.stderr.strip().splitlines()[-1:]}")
        return 1
    final = json.loads(done.stdout.strip().splitlines()[-1])
    same = final["final"] == reference["final"] and final["steps"] == reference["steps"]
    for i, where in enumerate(landed, 1):
        print(f"kill {i:2d}: {where}")
    print(f"{kills} SIGKILLs in {time.perf_counter() - started:.0f}s; resumed to step {final['steps']}; "
          f"final {final['final']} vs uninterrupted {reference['final']}: {'IDENTICAL' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
