"""The trainer's hot loop stays fast: no host sync between log points (a bad loss is still caught),
a fused optimizer, and the CPU bf16 autocast path still trains."""

import json
import math
from pathlib import Path

import pytest
import torch

from ablate.config import RunConfig
from ablate.optim import make_optimizer
from ablate.testing import tiny_model
from ablate.train import train

SYNCS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture
def cfg(small_corpus, tmp_path):
    return RunConfig(size="tiny", context=32, data=str(small_corpus), tokenizer="char", budget="20steps",
                     batch_size=4, eval_points=1, eval_batches=2, out_dir=str(tmp_path / "runs"),
                     cache_dir=str(tmp_path / "cache"), log_every=1000, device="cpu", dtype="float32")


@pytest.fixture
def count_syncs(monkeypatch):
    """Counts every read of a tensor's value on the host (``.item()``, ``.tolist()``, ``float(t)`` ...)."""
    counts = {"n": 0}
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            counts["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize("variant", ["baseline", "rope+swiglu+rmsnorm", "alibi+gqa(kv_heads=2)+post"])
def test_no_host_sync_between_log_points(variant, cfg, count_syncs, monkeypatch):
    import ablate.train as trainer

    inside = []
    step = trainer.optimizer_step

    def watched(*args, **kwargs):  # forward, backward, clipping and the optimizer: never a sync
        before = count_syncs["n"]
        out = step(*args, **kwargs)
        inside.append(count_syncs["n"] - before)
        return out

    monkeypatch.setattr(trainer, "optimizer_step", watched)
    cfg = cfg.replace(variant=variant)
    short = train(cfg.replace(out_dir=cfg.out_dir + "-short"))
    syncs_short, count_syncs["n"] = count_syncs["n"], 0
    long = train(cfg.replace(budget="40steps"))
    assert set(inside) == {0} and len(inside) == 60
    assert count_syncs["n"] == syncs_short  # twice the steps, no more reads: they come at log points only
    assert short.status == long.status == "finished"
    assert all(h["train_loss"] == h["train_loss"] and h["grad_norm"] > 0 for h in long.history)  # all filled in


def test_divergence_is_caught_within_log_every_steps(cfg):
    result = train(cfg.replace(lr=50.0, min_lr=0.0, warmup=0.0, grad_clip=0.0, budget="200steps", log_every=7))
    assert result.status == "diverged"
    vocab = json.loads((Path(result.run_dir) / "config.json").read_text())["dims"]["vocab_size"]
    limit = 3 * max(result.history[0]["train_loss"], math.log(vocab))  # pacing.divergence's rule
    bad = next(h["step"] for h in result.history if not h["train_loss"] < limit)
    assert f"at step {bad} " in result.message
    assert bad <= result.steps < bad + 7 and result.steps % 7 == 0


def test_a_finetune_starting_near_zero_loss_is_not_diverged_by_noise():
    """A converged parent's finetune starts at a loss near 0 (0.013 on a task): 3x that was tripped by its
    ordinary noise at step 2. The limit is now 3x the larger of the first loss and a uniform guess's, ln V."""
    from types import SimpleNamespace

    from ablate.pacing import divergence

    run = SimpleNamespace(config=RunConfig(), model=SimpleNamespace(dims=SimpleNamespace(vocab_size=20)),
                          initial_loss=0.01314)
    assert divergence(run, 2.779, 2) == ""
    assert "a uniform guess's loss (the initial was 0.01314)" in divergence(run, 9.5, 3)
    scratch = SimpleNamespace(config=RunConfig(), model=run.model, initial_loss=4.2)  # above ln 20: as before
    assert divergence(scratch, 12.0, 5) == "" and "(> 3.0x the initial 4.2)" in divergence(scratch, 12.7, 5)
    assert "not finite" in divergence(run, float("nan"), 1)


def test_optimizer_is_fused_on_cpu():
    optimizer = make_optimizer(tiny_model("baseline"), RunConfig(), "cpu")
    assert optimizer.defaults["fused"] is True


def test_bf16_autocast_trains_on_cpu(cfg):
    result = train(cfg.replace(dtype="bfloat16", budget="60steps", eval_points=2, variant="rope+swiglu"))
    assert result.status == "finished"
    assert result.evals[-1]["val_loss"] < result.evals[0]["val_loss"] - 0.5


def test_cpu_bf16_autocast_runs_attention_in_float32(monkeypatch):
    from ablate.components.attention import gqa

    seen, real = [], gqa.causal_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(gqa, "causal_attention", spy)
    model = tiny_model("baseline")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(torch.randint(0, 50, (2, 8)))
    assert seen and set(seen) == {(torch.float32, torch.float32, torch.float32, False)}  # bf16 SDPA is slower here
    assert logits.dtype == torch.bfloat16  # the matmuls stay in bf16


def test_tf32_matmuls_on_cuda_unless_float32_is_asked_for(monkeypatch):
    """The GPU path: float32 matmuls run on TF32 tensor cores for auto, bfloat16 and tf32, never for an
    explicit float32; the CPU keeps torch's default, and tf32 there is a user error."""
    from ablate.errors import AblateError
    from ablate.optim import autocast_dtype, set_matmul_precision

    set_matmul_precision("cpu", "auto")
    assert torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(AblateError, match="tf32 needs a CUDA device"):
        set_matmul_precision("cpu", "tf32")
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    for dtype in ("auto", "bfloat16", "tf32", "float32"):
        set_matmul_precision("cuda:0", dtype)
    assert calls == ["high", "high", "high", "highest"]
    assert autocast_dtype("cuda", "tf32") is None and autocast_dtype("cpu", "float32") is None


def test_dtype_mistakes_are_one_line_user_errors(small_corpus, tmp_path, capsys):
    from conftest import tiny_run_args

    from ablate.cli import main

    assert main(["run", "--dtype", "tf32", *tiny_run_args(small_corpus, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tf32 needs a CUDA device" in err and "float32 or bfloat16" in err
    assert main(["run", "--dtype", "fp64", *tiny_run_args(small_corpus, tmp_path)]) == 2
    assert "choose auto, float32, bfloat16, tf32" in capsys.readouterr().err


class _HostBatch:
    """Stands in for a host tensor: records whether it was page-locked and how it was copied."""

    def __init__(self):
        self.calls = []

    def pin_memory(self):
        self.calls.append("pin_memory")
        return self

    def to(self, device, non_blocking=False):
        self.calls.append(("to", device, non_blocking))
        return self


@pytest.mark.parametrize("device, calls", [
    ("cuda", ["pin_memory", ("to", "cuda", True)]),
    ("cuda:1", ["pin_memory", ("to", "cuda:1", True)]),
    ("cpu", [("to", "cpu", False)]),
    ("mps", [("to", "mps", False)]),
])
def test_batches_reach_cuda_through_pinned_memory_and_a_non_blocking_copy(device, calls):
    from ablate.train import to_device

    batch = _HostBatch()
    assert to_device(batch, device) is batch
    assert batch.calls == calls


def test_every_micro_batch_goes_through_to_device(cfg, monkeypatch):
    import ablate.train as trainer

    seen = []
    original = trainer.to_device

    def watched(batch, device):
        seen.append((tuple(batch.shape), device))
        return original(batch, device)

    monkeypatch.setattr(trainer, "to_device", watched)
    result = train(cfg.replace(budget="5steps", grad_accum=2))
    assert result.status == "finished"
    assert seen == [((4, 32), "cpu")] * (5 * 2 * 2)  # inputs and targets of 2 micro-batches per step
