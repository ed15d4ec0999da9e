"""Load test: 4 workers on one study storage and one MLflow store, 100 short trials (a benchmark you run,
not a test). Prints: trials complete and how often each (variant, seed) ran, MLflow runs and their
metrics, 'database is locked' and traceback counts in the workers' output, wall time.

    python benchmarks/load_study.py [--workers 4] [--seeds 25] [--storage journal|sqlite]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """name = "load"
protocol = "compare"
data = "{corpus}"
tokenizer = "char"
size = "tiny"
context = 16
budget = "5steps"
seeds = {seeds}
variants = ["baseline", "rope", "swiglu", "rmsnorm"]
[train]
batch_size = 2
eval_points = 1
eval_batches = 1
out_dir = "{root}/runs"
cache_dir = "{root}/cache"
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=25)
    ap.add_argument("--storage", choices=("journal", "sqlite"), default="journal")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ablate-load-"))
    corpus = root / "corpus.txt"
    corpus.write_text(("To be, or not to be, that is the question.\n" * 400))
    study = root / "load.toml"
    study.write_text(STUDY.format(corpus=corpus, seeds=args.seeds, root=root))
    storage = str(root / "load.journal") if args.storage == "journal" else f"sqlite:///{root}/optuna.db"
    uri = f"sqlite:///{root}/mlflow.db"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ablate", "study", "run", str(study), "--workers", str(args.workers),
                           "--storage", storage, "--tracking-uri", uri, "--threads", "1"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    out = done.stdout + done.stderr
    import mlflow
    import optuna

    from ablate.study.queue import trial_point

    trials = optuna.load_study(study_name="load", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)) if args.storage == "journal" else storage).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    ran = collections.Counter((trial_point(t)["variant"], trial_point(t)["seed"]) for t in complete)
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("ablate")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=5000) if r.data.tags.get("ablate.trial")]
    with_metric = sum(1 for r in runs if "final_val_loss" in r.data.metrics)
    expected = 4 * args.seeds
    print(f"exit {done.returncode}; wall {wall:.0f}s; {args.workers} workers, {args.storage} storage, SQLite MLflow")
    print(f"trials: {len(complete)} complete of {expected} expected; (variant, seed) run once: "
          f"{sum(1 for v in ran.values() if v == 1)}, more than once: {sum(1 for v in ran.values() if v > 1)}; "
          f"other trial states: {collections.Counter(t.state.name for t in trials if t.state.name != 'COMPLETE')}")
    print(f"MLflow: {len(runs)} trial runs, {with_metric} with final_val_loss, statuses "
          f"{collections.Counter(r.info.status for r in runs)}")
    print(f"'database is locked' in the output: {out.count('database is locked')}; tracebacks: {out.count('Traceback')}")
    return 0 if done.returncode == 0 and len(complete) == expected and len(ran) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
