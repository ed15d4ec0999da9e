"""One run on two processes (torchrun, gloo on CPU) trains like the single-process run at the same
global batch: the same data order, the same losses up to float rounding."""

import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_run_args


def _history(run_dir_root):
    (result,) = list(run_dir_root.glob("*/metrics.jsonl"))
    return [json.loads(line) for line in result.read_text().splitlines()]


def test_two_processes_match_the_single_process_loss_history(small_corpus, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("WORLD_SIZE", None)
    common = ["run", "--no-track", "--json", "--variant", "rope", "--grad-accum", "2"]
    single = subprocess.run([sys.executable, "-m", "ablate", *common, *tiny_run_args(small_corpus, tmp_path / "one", "12steps")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "ablate", *common, *tiny_run_args(small_corpus, tmp_path / "two", "12steps")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _history(tmp_path / "one" / "runs"), _history(tmp_path / "two" / "runs")
    assert len(a) == len(b) == 12
    for x, y in zip(a, b):
        assert x["tokens"] == y["tokens"]  # --batch-size is the global batch
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-4)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-3)
    result = json.loads(two.stdout.strip().splitlines()[-1])  # rank 0 alone prints
    assert result["status"] == "finished"
    flops = result["cost"]["flops_per_token"] * result["tokens_per_s"]  # global: both processes' tokens
    assert result["extra"]["mfu"] == pytest.approx(flops / (2 * result["extra"]["peak_flops"]))  # per device
    again = subprocess.run(two.args, capture_output=True, text=True, env=env, timeout=300)  # finished: said once
    assert again.returncode == 0 and again.stderr.count("this run has finished already") == 1, again.stderr[-2000:]
    assert len(again.stdout.strip().splitlines()) == 1  # one result, from rank 0


def test_a_time_budget_or_an_uneven_batch_is_refused_on_several_processes():
    from ablate.distributed import World, check_run
    from ablate.errors import AblateError

    check_run("seconds", 13, World())  # one process: fine
    check_run("steps", 12, World(rank=1, size=2))
    with pytest.raises(AblateError, match="time budget cannot be split"):
        check_run("seconds", 12, World(rank=0, size=2))
    with pytest.raises(AblateError, match="batch_size 13 does not split evenly over 2 processes"):
        check_run("steps", 13, World(rank=0, size=2))


def test_an_uneven_batch_stops_before_anything_is_written(small_corpus, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "ablate", "run", "--no-track", *tiny_run_args(small_corpus, tmp_path, "4steps"),
                          "--batch-size", "3"], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode != 0
    assert two.stderr.count("ablate: error: batch_size 3 does not split evenly over 2 processes") == 1
    assert not list((tmp_path / "runs").glob("*"))
