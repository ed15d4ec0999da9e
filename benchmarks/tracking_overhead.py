"""Benchmark: what MLflow tracking costs a run.

Runs the same configuration with and without the tracker, alternating, and prints the median
training seconds of each, their ratio, and the seconds the tracker spent in logging calls during
training (the end-of-run artifact upload is reported separately: it happens after training).

    .venv/bin/python benchmarks/tracking_overhead.py --budget 400steps --repeats 3
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ablate.config import RunConfig
from ablate.track import MLflowTracker
from ablate.train import train


class TimedTracker(MLflowTracker):
    """Splits the tracker's time into during-training and end-of-run."""

    def on_end(self, run, result):
        self.during_training = self.seconds_logging
        t0 = time.perf_counter()
        super().on_end(run, result)
        self.end_seconds = time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="400steps")
    ap.add_argument("--size", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default="shakespeare")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    config = RunConfig(size=args.size, budget=args.budget, data=args.data, out_dir=str(tmp / "runs"),
                       cache_dir="data/cache")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    train(config.replace(budget="2steps"), [MLflowTracker(tracking_uri=uri, log_checkpoint=False)])  # warm-up
    plain, tracked, logging, end = [], [], [], []
    for _ in range(args.repeats):
        plain.append(train(config).train_seconds)
        tracker = TimedTracker(tracking_uri=uri, log_checkpoint=True)
        result = train(config, [tracker])
        tracked.append(result.train_seconds)
        logging.append(tracker.during_training)
        end.append(tracker.end_seconds)
    med = statistics.median
    print(f"budget {args.budget}, size {args.size}, {args.repeats} repeats (medians)")
    print(f"train seconds without tracking: {med(plain):.2f}")
    print(f"train seconds with tracking:    {med(tracked):.2f}  (ratio {med(tracked) / med(plain):.3f})")
    print(f"logging calls during training:  {med(logging):.3f}s = {100 * med(logging) / med(tracked):.2f}% of training")
    print(f"end-of-run upload (artifacts, sample, checkpoint): {med(end):.2f}s")


if __name__ == "__main__":
    main()
