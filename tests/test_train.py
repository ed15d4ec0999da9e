import math
import re
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ablate.budget import parse_budget
from ablate.cli import main
from ablate.config import RunConfig, make_config
from ablate.errors import AblateError
from ablate.train import StopRun, Callback, lr_at, train


@pytest.fixture(scope="module")
def corpus(small_corpus):
    return small_corpus


@pytest.fixture
def cfg(corpus, tmp_path):
    return RunConfig(size="tiny", context=32, data=str(corpus), tokenizer="char", budget="30steps", batch_size=4,
                     eval_points=3, eval_batches=2, out_dir=str(tmp_path / "runs"),
                     cache_dir=str(tmp_path / "cache"), log_every=5)


@pytest.mark.parametrize("text,kind,amount", [("500steps", "steps", 500), ("2Mtokens", "tokens", 2e6),
                                              ("1e14flops", "flops", 1e14), ("90s", "seconds", 90),
                                              ("5min", "seconds", 300), ("1.5kstep", "steps", 1500)])
def test_budget_parsing(text, kind, amount):
    b = parse_budget(text)
    assert (b.kind, b.amount) == (kind, amount)


@pytest.mark.parametrize("typed, kept", [("30 steps", "30steps"), ("30step", "30steps"), ("30steps", "30steps"),
                                         ("2M tok", "2Mtokens"), ("90 sec", "90s"), (" 5 min ", "5min")])
def test_one_budget_written_differently_is_one_run(typed, kept, cfg):
    """The budget is a fairness key and part of the run's fingerprint: kept in one spelling per unit."""
    assert parse_budget(typed).text == kept and cfg.replace(budget=typed).budget == kept
    assert cfg.replace(budget=typed).fingerprint() == cfg.replace(budget=kept).fingerprint()


def test_one_variant_spelled_differently_or_saved_more_often_is_one_run(cfg):
    """The run directory (so --resume and "finished already") follows the canonical variant, and not how
    often checkpoints are written: a run killed with --checkpoint-every 100 resumes without it."""
    from ablate.train import run_dir_for
    from ablate.variant import parse_variant

    def run_dir(config):
        return run_dir_for(config, parse_variant(config.variant).name)

    same = [("swiglu+rope", "rope+swiglu"), ("gpt2", "baseline"), ("mistral", "rope+rmsnorm+gqa+swiglu(multiple_of=256)+tie=false+bias=false")]
    for typed, canonical in same:
        assert run_dir(cfg.replace(variant=typed)) == run_dir(cfg.replace(variant=canonical)), typed
    assert cfg.fingerprint(variant="baseline") == cfg.fingerprint()  # a canonical spelling keeps its directory
    assert run_dir(cfg.replace(checkpoint_every=100)) == run_dir(cfg)
    assert run_dir(cfg.replace(variant="rope")) != run_dir(cfg)
    spelled = [run_dir(cfg.replace(tokenizer=t)) for t in ("bpe:300", "BPE:300", " bpe:300")]
    assert len(set(spelled)) == 1 and run_dir(cfg.replace(tokenizer="Char")) == run_dir(cfg.replace(tokenizer="char"))
    assert run_dir(cfg.replace(eval_points=5)) != run_dir(cfg)  # what is recorded differs


@pytest.mark.parametrize("text", ["500", "steps", "-3steps", "0s", "1.5steps", "3 parsecs"])
def test_bad_budgets(text):
    with pytest.raises(AblateError, match="budget"):
        parse_budget(text)


def test_flops_budget_gives_costlier_variants_fewer_steps():
    b = parse_budget("1e12flops")
    assert b.total_steps(768, 2e6) > b.total_steps(768, 4e6)
    assert b.total_steps(768, 2e6) == math.floor(1e12 / (768 * 2e6))
    assert parse_budget("1Mtokens").total_steps(1000, 1.0) == 1000


@pytest.mark.parametrize("text,tokens,flops,least", [("1e3flops", 768, 1e6, "7.68e+08flops"),
                                                     ("100tokens", 768, 1.0, "768tokens"),
                                                     ("1e3flops", 768, 725_800.0, "5.58e+08flops")])
def test_a_budget_below_one_step_is_a_user_error(text, tokens, flops, least):
    """It used to train one step anyway: under a FLOP budget every variant then got that one step. The least
    budget it suggests is rounded up, so it buys one step."""
    with pytest.raises(AblateError, match=f"less than one optimizer step.*give at least {re.escape(least)}"):
        parse_budget(text).total_steps(tokens, flops)
    assert parse_budget(least).total_steps(tokens, flops) == 1


def test_schedule_matches_nanogpt():
    config = RunConfig(lr=1e-3, min_lr=1e-4, warmup=100)
    total = 2000

    def nanogpt(it, warmup=100, decay=2000, lr=1e-3, min_lr=1e-4):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        ratio = (it - warmup) / (decay - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    for it in (0, 1, 50, 99, 100, 500, 1000, 1999):
        assert lr_at(config, it / total, total) == pytest.approx(nanogpt(it), rel=1e-9)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "inverse-sqrt"])
def test_every_schedule_follows_progress(schedule):
    config = RunConfig(lr=1e-3, min_lr=1e-4, warmup=0.1, schedule=schedule)
    lrs = [lr_at(config, p / 100, None) for p in range(101)]
    assert max(lrs) == pytest.approx(1e-3, rel=1e-2)
    assert lrs[0] < lrs[10]  # warmup
    assert all(a >= b - 1e-12 for a, b in zip(lrs[10:], lrs[11:]))  # never rises after warmup
    if schedule in ("cosine", "linear"):
        assert lrs[-1] == pytest.approx(1e-4)


def test_same_seed_twice_gives_identical_losses(cfg, tmp_path):
    a = train(cfg)
    b = train(cfg.replace(out_dir=str(tmp_path / "other")))
    assert a.status == b.status == "finished"
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert a.final == b.final
    c = train(cfg.replace(seed=1))
    assert [r["train_loss"] for r in c.history] != [r["train_loss"] for r in a.history]


def test_variants_share_data_order_and_eval_batches(cfg, monkeypatch):
    from ablate.data.batches import TrainBatches

    seen: list[tuple[int, int]] = []
    original = TrainBatches.get

    def recording_get(self, index):
        x, y = original(self, index)
        seen.append((index, hash(x.numpy().tobytes()) ^ hash(y.numpy().tobytes())))
        return x, y

    monkeypatch.setattr(TrainBatches, "get", recording_get)
    a = train(cfg)
    order_a, seen[:] = list(seen), []
    b = train(cfg.replace(variant="rope+swiglu"))
    assert len(order_a) == a.steps and order_a == seen  # the same batches, in the same order
    c = train(cfg.replace(seed=cfg.seed + 1))
    assert seen[-c.steps:] != order_a  # and another seed sees other batches
    assert a.fairness == b.fairness  # same data, tokenizer, budget, eval batches
    assert a.variant != b.variant and a.final["val_loss"] != b.final["val_loss"]
    assert len(a.evals) == len(b.evals) == cfg.eval_points + 1


def test_loss_actually_goes_down(cfg):
    result = train(cfg.replace(budget="80steps"))
    assert result.evals[-1]["val_loss"] < result.evals[0]["val_loss"] - 0.5
    assert result.final["val_bpb"] > 0


def test_divergence_stops_with_status_and_step(cfg):
    result = train(cfg.replace(lr=50.0, min_lr=0.0, warmup=0.0, grad_clip=0.0, budget="60steps"))
    assert result.status == "diverged"
    assert "at step" in result.message and result.steps < 60
    assert "val_loss" not in result.final  # never the untrained model's step-0 evaluation


def test_time_budget_ends_at_end_of_schedule(cfg):
    seen = []

    class Spy(Callback):
        def on_step(self, run, row):
            seen.append((run.progress, row["lr"]))  # progress when the step's lr was chosen

    config = cfg.replace(budget="2s", log_every=1)
    result = train(config, [Spy()])
    assert result.status == "finished" and result.train_seconds >= 2.0
    # the schedule follows the fraction of seconds spent, so it reaches its end with the budget
    assert all(lr == pytest.approx(lr_at(config, p, None)) for p, lr in seen)
    assert seen[-1][0] > 0.5 and lr_at(config, 1.0, None) == pytest.approx(config.min_lr)


def test_a_callback_can_stop_a_run(cfg):
    class Pruner(Callback):
        def on_eval(self, run, row):
            if run.step > 0:
                raise StopRun("pruned", "pruned by test")

    result = train(cfg, [Pruner()])
    assert result.status == "pruned" and result.steps == 10


def test_masked_targets_are_ignored():
    from ablate.testing import tiny_model

    model = tiny_model("baseline")
    idx = torch.randint(0, 50, (1, 8))
    targets = torch.full((1, 8), -1)
    targets[0, 5] = 7
    logits, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits[0, 5:6], torch.tensor([7]))
    torch.testing.assert_close(loss, expected)


def test_resume_after_sigkill_matches_uninterrupted(cfg, tmp_path):
    cfg = cfg.replace(budget="60steps", checkpoint_every=10, eval_points=2)
    reference = train(cfg.replace(out_dir=str(tmp_path / "ref")))
    argv = [sys.executable, "-m", "ablate", "run", "--no-track", "--variant", cfg.variant, "--size", cfg.size,
            "--context", str(cfg.context), "--data", cfg.data, "--budget", cfg.budget, "--batch-size", "4",
            "--eval-points", "2", "--eval-batches", "2", "--out-dir", cfg.out_dir, "--cache-dir", cfg.cache_dir,
            "--log-every", "1", "--checkpoint-every", "10"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("step") and "loss" in line and int(line.split()[1]) >= 30:
            os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(argv + ["--resume", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import json

    resumed = json.loads(done.stdout.strip().splitlines()[-1])
    assert resumed["steps"] == 60 and resumed["status"] == "finished"
    assert "nothing to resume" not in done.stderr
    assert resumed["final"]["val_loss"] == pytest.approx(reference.final["val_loss"], abs=1e-6)


def test_config_layering_and_strictness(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('budget = "100steps"\nlr = 3e-4\nseed = 3\n')
    config = make_config(f, seed=5)
    assert (config.budget, config.lr, config.seed) == ("100steps", 3e-4, 5)
    f.write_text('learning_rate = 1\n')
    with pytest.raises(AblateError, match=r"unknown setting 'learning_rate' in .*run.toml"):
        make_config(f)
    f.write_text('threads = 1\n')  # a flag of the command: said so, not "did you mean 'n_heads'?"
    with pytest.raises(AblateError, match=r"'threads' in .*run.toml is a flag of the command.*pass --threads"):
        make_config(f)
    f.write_text('lr = "fast"\n')
    with pytest.raises(AblateError, match="must be float"):
        make_config(f)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--budget", "lots"], "cannot read budget"),
        (["--variant", "rope+alibi"], "both fill the position slot"),
        (["--data", "no/such/file.txt"], "no/such/file.txt"),
        (["--tokenizer", "wordpiece"], "wordpiece"),
        (["--schedule", "zigzag"], "unknown schedule"),
        (["--context", "100000"], "context"),
        (["--device", "cuda:0"], "CUDA is not available"),
        (["--budget", "30s", "--warmup", "100"], "warmup 100 is a number of steps"),
        (["--eval-points", "0"], "--eval-points (eval_points in a config file) must be at least 1, got 0; e.g. "),
        (["--log-every", "0"], "--log-every (log_every in a config file) must be at least 1"),
        (["--variant", "gqa(kv_heads=3)"], "at width 64, 4 heads: kv_heads=3 must divide n_heads=4; change the "),
    ],
)
def test_run_bad_inputs_exit_2(extra, needle, corpus, tmp_path, capsys):
    if extra[:2] == ["--device", "cuda:0"] and torch.cuda.is_available():
        pytest.skip("CUDA present")
    argv = ["run", "--no-track", "--size", "tiny", "--data", str(corpus), "--budget", "5steps",
            "--out-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("\n") == 1


def test_a_device_this_machine_lacks_is_refused_also_for_a_finished_run(corpus, tmp_path, capsys):
    """Asking a finished CPU run again with --device cuda printed the old CPU result and exited 0."""
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    argv = ["run", "--no-track", "--size", "tiny", "--data", str(corpus), "--budget", "2steps", "--eval-points", "1",
            "--out-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv + ["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "finished already" not in err


def test_run_json_and_sample(cfg, capsys):
    argv = ["run", "--no-track", "--json", "--size", "tiny", "--context", "32", "--data", cfg.data,
            "--budget", "10steps", "--batch-size", "4", "--eval-points", "1", "--eval-batches", "1",
            "--out-dir", cfg.out_dir, "--cache-dir", cfg.cache_dir]
    assert main(argv) == 0
    import json

    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "finished" and result["steps"] == 10
    assert main(["sample", "--run", result["run_dir"], "--tokens", "30", "--prompt", "ROMEO:"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out) > 30
    assert main(["sample", "--run", str(Path(cfg.out_dir) / "nothing")]) == 2


def test_resume_with_no_checkpoint_says_the_run_starts_at_step_0(cfg, capsys):
    from ablate.cli import main

    argv = ["run", "--no-track", "--json", "--size", "tiny", "--context", "32", "--data", cfg.data, "--budget",
            "3steps", "--batch-size", "4", "--eval-points", "1", "--eval-batches", "1", "--out-dir", cfg.out_dir,
            "--cache-dir", cfg.cache_dir, "--resume", "--seed", "5"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "nothing to resume in" in err and "starts at step 0" in err


def test_result_json_is_standard_json(cfg):
    """No NaN (the step-0 row has no train loss yet): a missing number is null, so jq and browsers read it."""
    import json

    result = train(cfg.replace(budget="4steps", eval_points=1))

    def refuse(constant):
        raise AssertionError(f"{constant} in result.json")

    saved = json.loads((Path(result.run_dir) / "result.json").read_text(), parse_constant=refuse)
    assert saved["evals"][0]["step"] == 0 and saved["evals"][0]["train_loss"] is None


def test_a_warmup_as_long_as_the_budget_is_a_user_error():
    """--warmup 50 on a 20-step budget: the lr would only climb, never peak, never decay."""
    from ablate.optim import check_warmup

    with pytest.raises(AblateError, match="warmup 50 steps is not shorter than the budget's 20 steps"):
        check_warmup(RunConfig(warmup=50), 20)
    assert check_warmup(RunConfig(warmup=19), 20) == 20
    assert check_warmup(RunConfig(warmup=0.5), 1) == 1  # a fraction always fits
    assert check_warmup(RunConfig(warmup=500), None) is None  # a time budget: steps unknown


def test_an_interrupted_run_is_not_started_over_without_resume_or_force(corpus, tmp_path, capsys):
    """The same command again after Ctrl-C trained from step 0 and overwrote the checkpoint, silently."""
    import json

    argv = ["run", "--no-track", "--size", "tiny", "--data", str(corpus), "--budget", "6steps", "--eval-points", "1",
            "--out-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    result = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text(json.dumps({**result, "status": "interrupted", "steps": 3}))
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "stopped at step 3 and its checkpoint is in" in err and "--resume" in err and "--force" in err
    assert json.loads((run_dir / "result.json").read_text())["status"] == "interrupted"  # untouched
    assert main(argv + ["--force"]) == 0


def test_resume_on_data_that_changed_is_refused(corpus, tmp_path, capsys):
    """--resume after the data file was edited trained the first steps on one text and the rest on another."""
    import json
    import shutil

    data = tmp_path / "data.txt"
    shutil.copy(corpus, data)
    argv = ["run", "--no-track", "--size", "tiny", "--data", str(data), "--budget", "6steps", "--eval-points", "1",
            "--out-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    result = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text(json.dumps({**result, "status": "interrupted", "steps": 3}))
    text = data.read_text()
    data.write_text(text[len(text) // 2:] + text[: len(text) // 2])  # the same characters, another text
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the data changed since the run in" in err and "--force" in err, err
    data.write_text(text)
    assert main(argv + ["--resume"]) == 0  # restored: it resumes
    data.write_text(text[len(text) // 2:] + text[: len(text) // 2])  # a finished run, asked for on other data
    capsys.readouterr()
    assert main(argv) == 2  # it answered "this run has finished already" with the old data's result
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this run finished on other data" in err and "--force" in err, err
    import ablate
    from ablate.errors import AblateError

    with pytest.raises(AblateError, match="this run finished on other data"):  # the Python API too
        ablate.train(size="tiny", data=str(data), budget="6steps", eval_points=1, out_dir=str(tmp_path / "r"),
                     cache_dir=str(tmp_path / "c"))
    assert main(argv + ["--force"]) == 0


def test_a_tokenizer_spelling_is_one_fairness_value(cfg):
    """`--tokenizer BYTE` and `--tokenizer byte` are one run directory, and now one fairness value too:
    compare refused to pair them ("the runs differ in tokenizer BYTE vs byte")."""
    result = train(cfg.replace(tokenizer="BYTE", budget="2steps"))
    assert result.fairness["tokenizer"] == "byte"


def test_an_interrupt_before_the_first_checkpoint_does_not_claim_one(cfg, monkeypatch, capsys):
    """SIGTERM during data preparation or the first evaluation said 'the checkpoint is saved' when none was."""
    import ablate.train
    from ablate.cli import main

    def interrupted(config, callbacks, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(ablate.train, "train", interrupted)
    argv = ["run", "--size", "tiny", "--context", str(cfg.context), "--data", cfg.data, "--budget", "5steps",
            "--no-track", "--out-dir", cfg.out_dir, "--cache-dir", cfg.cache_dir, "--seed", "7"]
    assert main(argv) == 130
    assert "interrupted before its first checkpoint; run the same command again" in capsys.readouterr().err


def test_a_moved_project_folder_is_the_same_data(corpus, tmp_path, capsys, monkeypatch):
    """The data checks compare what the data is, not where it lies: a local file's fingerprint holds its
    absolute path, so a moved folder was "other data"."""
    import shutil

    project = tmp_path / "proj"
    project.mkdir()
    shutil.copy(corpus, project / "x.txt")
    argv = ["run", "--no-track", "--size", "tiny", "--data", "x.txt", "--budget", "3steps", "--eval-points", "1",
            "--out-dir", "results", "--cache-dir", "cache"]
    monkeypatch.chdir(project)
    assert main(argv) == 0
    moved = tmp_path / "proj2"
    project.rename(moved)
    monkeypatch.chdir(moved)
    capsys.readouterr()
    assert main(argv) == 0
    assert "has finished already" in capsys.readouterr().err
