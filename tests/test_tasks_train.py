"""Synthetic tasks through the trainer and the CLI: `ablate run --data task:...` trains on generated
problems and reports exact-match accuracy; `ablate sample --prompt` answers a typed problem; every
variant of a seed sees the same problems; answer formats of the same problems share a fairness key."""

import json
from pathlib import Path

import pytest
import torch

from ablate.cli import main
from ablate.config import RunConfig
from ablate.errors import AblateError
from ablate.train import prepare_run, start

TASK = "task:addition(digits=2)"


@pytest.fixture(scope="module")
def task_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("task_runs")
    argv = ["run", "--data", TASK, "--size", "tiny", "--budget", "30steps", "--no-track", "--json",
            "--eval-points", "2", "--eval-batches", "2", "--out-dir", str(out)]
    assert main(argv) == 0
    run_dirs = list(out.iterdir())
    assert len(run_dirs) == 1
    return json.loads((run_dirs[0] / "result.json").read_text())


def test_task_run_finishes_with_accuracy_metrics(task_run):
    assert task_run["status"] == "finished" and task_run["steps"] == 30
    final = task_run["final"]
    for key in ("val_loss", "acc", "acc_len1", "acc_len2", "acc_len3", "acc_len4", "acc_longer"):
        assert key in final, key
        assert 0.0 <= final[key] or key == "val_loss"
    assert all(0.0 <= final[k] <= 1.0 for k in final if k.startswith("acc"))
    # accuracy at the eval points past step 0, not at step 0 (the untrained model is slow to decode)
    assert "acc" not in task_run["evals"][0] and all("acc" in e for e in task_run["evals"][1:])
    # a row is the task's training width wide, not the model's (longer) context
    width = json.loads((Path(task_run["run_dir"]) / "config.json").read_text())["data"]["train_context"]
    assert task_run["tokens"] == 30 * 12 * width  # tiny: batch 12
    assert task_run["fairness"]["tokenizer"] == "task"


def test_sample_answers_a_typed_problem(task_run, capsys):
    assert main(["sample", "--run", task_run["run_dir"], "--prompt", "12+34="]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("12+34=")
    # the model's answer and the right one: "(answer: N, right)", "(answer: N, wrong: 12+34 = 46)" or
    # "(no answer: malformed; 12+34 = 46)" for an undertrained model
    assert out.endswith(", right)") or out.endswith("12+34 = 46)")
    assert main(["sample", "--run", task_run["run_dir"], "--prompt", " 0012+34"]) == 0  # read as training wrote it
    assert capsys.readouterr().out.startswith("12+34=")
    assert main(["sample", "--run", task_run["run_dir"], "--prompt", "12+34=", "--tokens", "1"]) == 0
    out = capsys.readouterr().out
    assert len(out.split("   (")[0]) == len("12+34=") + 1  # one token, one character
    assert "cut off after --tokens 1" in out or "$" in out.split("   (")[0], out  # not "malformed"
    for bad, named in (("12*34=", "'+'"), ("twelve+3=", "e.g. --prompt"), ("12+=", "two non-negative"),
                       ("-1+2=", "two non-negative")):
        assert main(["sample", "--run", task_run["run_dir"], f"--prompt={bad}"]) == 2, bad
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, (bad, err)
    assert main(["sample", "--run", task_run["run_dir"], "--prompt", "9" * 40 + "+1="]) == 2  # past learned positions
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ask a shorter problem" in err


def test_a_task_answer_cut_off_says_by_what():
    """A completion without the end token read as "malformed" even when --tokens or the context cut it."""
    from types import SimpleNamespace

    from ablate.cli.run import _why_no_answer
    from ablate.tasks import parse_task

    task = parse_task("task:addition(digits=2)")
    model = SimpleNamespace(dims=SimpleNamespace(context=12))
    problem = task.read_problem("12+34=")  # 6 tokens: room for 7
    assert _why_no_answer(model, task, problem, "64$", None) == "malformed"  # it ended
    assert _why_no_answer(model, task, problem, "6", 1) == "cut off after --tokens 1"
    assert _why_no_answer(model, task, problem, "6400000", None).startswith("cut off at the run's context of 12")
    assert _why_no_answer(model, task, problem, "6400000", 50).startswith("cut off at the run's context")
    assert _why_no_answer(model, task, problem, "64", None) == "malformed"  # stopped early without ending


def _config(tmp_path, **kw) -> RunConfig:
    return RunConfig(**{"data": TASK, "size": "tiny", "budget": "5steps", "out_dir": str(tmp_path / "runs"),
                        "cache_dir": str(tmp_path / "cache"), "eval_batches": 2, **kw})


def test_every_variant_of_a_seed_sees_the_same_problems(tmp_path):
    batches = [prepare_run(_config(tmp_path, variant=v))[4] for v in ("baseline", "rope+swiglu")]
    for step in (0, 1, 7):
        (xa, ya), (xb, yb) = batches[0].get(step), batches[1].get(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_seed = prepare_run(_config(tmp_path, seed=1))[4]
    assert not torch.equal(other_seed.get(0)[0], batches[0].get(0)[0])


def test_answer_order_variants_share_the_problems_fairness_key(tmp_path):
    runs = [start(_config(tmp_path, data=f"task:addition(digits=2,reverse={r})"), (), False)[0]
            for r in ("true", "false")]
    assert runs[0].state.fairness["data"] == runs[1].state.fairness["data"]
    assert runs[0].data.meta["fingerprint"] != runs[1].data.meta["fingerprint"]
    assert runs[0].state.data_meta["unigram_entropy"] is None


def test_context_shorter_than_a_training_row_is_a_user_error(tmp_path):
    with pytest.raises(AblateError, match="context"):
        prepare_run(_config(tmp_path, context=4))
    dims = prepare_run(_config(tmp_path))[1]
    assert dims.context == prepare_run(_config(tmp_path))[3].context  # default: covers every eval problem


def test_spellings_of_one_task_are_one_run():
    one = {RunConfig(data=d).fingerprint() for d in ("task:Addition", "task:addition()", "task:addition(digits=3)",
                                                    " TASK:addition(reverse=true, digits=3)")}
    assert len(one) == 1
    assert RunConfig(data="task:addition(digits=2)").fingerprint() not in one
    assert RunConfig(data="task:nosuchtask").fingerprint() != RunConfig(data="task:other").fingerprint()  # refused later


def test_a_context_too_short_for_some_held_out_sets_is_announced(tmp_path, capsys):
    argv = ["run", "--data", TASK, "--size", "tiny", "--budget", "2steps", "--no-track", "--eval-points", "1",
            "--eval-batches", "1", "--out-dir", str(tmp_path)]
    assert main(argv + ["--context", "10"]) == 0
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if line.startswith("note:"))
    assert "acc_len3, acc_len4 not scored" in note and "the context is 10" in note, note
    assert "no longer length is scored, so there is no acc_longer" in note, note  # it said acc_longer averaged them
    result = json.loads(next(tmp_path.iterdir()).joinpath("result.json").read_text())
    assert "acc" in result["final"] and "acc_len3" not in result["final"] and "acc_longer" not in result["final"]
    capsys.readouterr()
    assert main(argv + ["--context", "32"]) == 0  # every set fits: no note
    assert "note:" not in capsys.readouterr().out


def test_a_task_run_made_before_spellings_were_one_run_keeps_its_directory(tmp_path):
    """Its directory's hash took the spelling as typed; the same command finds it (to resume it, or to say it
    finished) instead of training it again in a new directory."""
    from ablate.train import run_dir_for

    config = _config(tmp_path, data="task:addition")
    old = run_dir_for(config, "baseline").with_name(f"baseline-seed0-{config.fingerprint(variant='baseline', task_as_typed=True)}")
    assert run_dir_for(config, "baseline") != old
    old.mkdir(parents=True)
    assert run_dir_for(config, "baseline") == old


def test_a_tokenizer_given_for_a_task_is_refused(tmp_path, capsys):
    """--tokenizer gpt2 with a task was silently ignored (the task has its own tokenizer)."""
    assert main(["run", "--data", TASK, "--tokenizer", "gpt2", "--size", "tiny", "--budget", "2steps", "--no-track",
                 "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a task has its own tokenizer" in err and "leave --tokenizer out" in err, err
