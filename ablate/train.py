"""The one trainer. It is variant-blind: it sees a model, a budget and batches, never a component.

Fairness it guarantees: the training batch of step k depends on (seed, k) alone and the eval batches
on ``eval_seed`` alone, so every variant of a seed sees the same tokens in the same order, and every
run of a comparison is judged on the same held-out batches; the budget is a value (steps, tokens, FLOPs or seconds) and the
learning-rate schedule follows the fraction of it spent.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ablate.accounting import cost
from ablate.budget import Budget, parse_budget
from ablate.config import RunConfig
from ablate.errors import AblateError
from ablate.model import GPT, build_model, make_dims
from ablate.presets import get_size
from ablate.variant import parse_variant

CHECKPOINT = "checkpoint.pt"

# dense bf16 peak FLOP/s by device name fragment, for MFU (None where unknown, e.g. CPUs)
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12, "4090": 165e12}


class StopRun(Exception):
    """Raised by a callback to end a run early (e.g. an Optuna pruner); ``status`` is recorded."""

    def __init__(self, status: str, message: str = ""):
        super().__init__(message or status)
        self.status = status


class Callback:
    """Hooks the trainer calls; trackers, live views and pruners implement the ones they need."""

    def on_start(self, run: RunState) -> None: ...
    def on_step(self, run: RunState, row: dict[str, float]) -> None: ...
    def on_eval(self, run: RunState, row: dict[str, float]) -> None: ...
    def on_end(self, run: RunState, result: RunResult) -> None: ...
    def on_error(self, run: RunState, error: BaseException) -> None: ...


@dataclass
class RunState:
    """What callbacks may read while a run is in progress."""

    config: RunConfig
    variant_name: str
    variant_hash: str
    run_dir: Path
    model: GPT
    tokenizer: Any
    cost: dict[str, Any]
    dims: dict[str, Any]
    data_meta: dict[str, Any]
    fairness: dict[str, str]
    total_steps: int | None
    budget: Budget
    device: str
    step: int = 0
    tokens: int = 0
    progress: float = 0.0
    train_seconds: float = 0.0
    resumed_from: int | None = None


@dataclass
class RunResult:
    status: str  # finished | diverged | pruned | interrupted
    variant: str
    variant_hash: str
    seed: int
    steps: int
    tokens: int
    final: dict[str, float]
    evals: list[dict[str, float]]
    history: list[dict[str, float]]
    cost: dict[str, Any]
    fairness: dict[str, str]
    tokens_per_s: float
    train_seconds: float
    wall_seconds: float
    run_dir: str
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


# ------------------------------------------------------------------------------------- helpers
def pick_device(name: str) -> str:
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AblateError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise AblateError("device 'mps' asked for, but MPS is not available here; use --device cpu or auto")
    return name


def autocast_dtype(device: str, dtype: str) -> torch.dtype | None:
    if dtype == "float32":
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # CPU and MPS train in float32 by default


def lr_at(config: RunConfig, progress: float, total_steps: int | None) -> float:
    """The learning rate at ``progress`` ∈ [0, 1] of the budget: linear warmup, then the schedule.

    With a known step count this is nanoGPT's schedule exactly (warmup lr·(it+1)/(warmup+1), then
    cosine from lr to min_lr); a time budget uses the same curve over the fraction of seconds spent.
    """
    w = config.warmup if config.warmup < 1 else config.warmup / (total_steps or config.warmup * 20)
    eps = 1 / total_steps if total_steps else 1e-3 * max(w, 1e-3)
    if progress < w:
        return config.lr * (progress + eps) / (w + eps)
    rest = min(1.0, (progress - w) / max(1 - w, 1e-9))
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return config.min_lr + 0.5 * (1 + math.cos(math.pi * rest)) * (config.lr - config.min_lr)
    if config.schedule == "linear":
        return config.lr - rest * (config.lr - config.min_lr)
    # inverse square root (Vaswani et al. 2017): lr · sqrt(w / progress) after warmup
    return max(config.min_lr, config.lr * math.sqrt(max(w, 1e-3) / max(progress, w, 1e-3)))


def make_optimizer(model: torch.nn.Module, config: RunConfig, device: str) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (and embeddings) only, never on biases or norm gains."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if device.startswith("cuda") else {}
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), **extra)


def run_dir_for(config: RunConfig, variant_name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", variant_name)[:80]
    return Path(config.out_dir) / f"{slug}-seed{config.seed}-{config.fingerprint()}"


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


@torch.no_grad()
def evaluate(model: GPT, batches: Sequence, device: str, amp: torch.dtype | None) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    for x, y in batches:
        with torch.autocast(device_type=device.split(":")[0], dtype=amp, enabled=amp is not None):
            _, loss = model(x.to(device), y.to(device))
        total += loss.item()
    model.train(was_training)
    return total / len(batches)


# --------------------------------------------------------------------------------------- train
def prepare_run(config: RunConfig):
    """Resolve everything that can fail on user input (variant, size, budget, data) before training."""
    from ablate.data.batches import TrainBatches, eval_batches
    from ablate.data.prepare import prepare

    variant = parse_variant(config.variant)
    size = get_size(config.size)
    budget = parse_budget(config.budget)
    data = prepare(config.data, config.tokenizer, cache_dir=Path(config.cache_dir),
                   data_file=Path(config.data_file) if config.data_file else None)
    overrides = {k: getattr(config, k) for k in ("d_model", "n_layers", "n_heads", "context") if getattr(config, k)}
    dims = make_dims(size, variant, data.vocab_size, **overrides)
    train_batches = TrainBatches(data.train, config.batch_size, dims.context, config.seed)
    evals = eval_batches(data.val, config.batch_size, dims.context, config.eval_batches, config.eval_seed)
    return variant, dims, budget, data, train_batches, evals


def train(config: RunConfig, callbacks: Sequence[Callback] = (), resume: bool = False) -> RunResult:
    wall_start = time.perf_counter()
    variant, dims, budget, data, train_batches, evals = prepare_run(config)
    device = pick_device(config.device)
    amp = autocast_dtype(device, config.dtype)
    torch.manual_seed(config.seed)
    model = build_model(variant, dims, device=device)
    run_cost = cost(model).to_dict()
    tokens_per_step = config.batch_size * config.grad_accum * dims.context
    total_steps = budget.total_steps(tokens_per_step, run_cost["flops_per_token"])
    optimizer = make_optimizer(model, config, device)
    fairness = {
        "budget": budget.text,
        "data": str(data.meta.get("fingerprint", "")),
        "tokenizer": config.tokenizer,
        "eval_batches": str(getattr(evals, "fingerprint", "")),
        "dims": f"{dims.d_model}x{dims.n_layers}x{dims.n_heads}@{dims.context}",
        "batch": f"{config.batch_size}x{config.grad_accum}",
    }
    run_dir = run_dir_for(config, variant.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = RunState(config, variant.name, variant.hash, run_dir, model, data.tokenizer, run_cost,
                     dims.__dict__.copy(), dict(data.meta), fairness, total_steps, budget, device)

    history: list[dict[str, float]] = []
    eval_rows: list[dict[str, float]] = []
    initial_loss: float | None = None
    ckpt_path = run_dir / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt["fingerprint"] != config.fingerprint():
            raise AblateError(f"checkpoint in {run_dir} belongs to a different configuration; run without --resume")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if device.startswith("cuda") and "rng_cuda" in ckpt:
            torch.cuda.set_rng_state(ckpt["rng_cuda"])
        state.step, state.tokens, state.train_seconds = ckpt["step"], ckpt["tokens"], ckpt["train_seconds"]
        history, eval_rows, initial_loss = ckpt["history"], ckpt["evals"], ckpt["initial_loss"]
        state.resumed_from = state.step
    _write_json(run_dir / "config.json", {"config": config.to_dict(), "variant": variant.to_dict(),
                                          "variant_name": variant.name, "variant_hash": variant.hash,
                                          "dims": state.dims, "data": state.data_meta})

    train_model = torch.compile(model) if config.compile else model
    n = config.eval_points
    eval_steps = {round(k * total_steps / n) for k in range(n + 1)} if total_steps else set()
    done_evals = {int(r["step"]) for r in eval_rows}
    next_eval_k = len(eval_rows)  # time budgets: the next fraction k/n to evaluate at

    def progress() -> float:
        if total_steps:
            return min(1.0, state.step / total_steps)
        return min(1.0, state.train_seconds / budget.amount)

    def finished() -> bool:
        return state.step >= total_steps if total_steps else state.train_seconds >= budget.amount

    def save_checkpoint() -> None:
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": state.step,
                   "tokens": state.tokens, "train_seconds": state.train_seconds, "history": history,
                   "evals": eval_rows, "initial_loss": initial_loss, "rng_cpu": torch.get_rng_state(),
                   "fingerprint": config.fingerprint(), "config": config.to_dict()}
        if device.startswith("cuda"):
            payload["rng_cuda"] = torch.cuda.get_rng_state()
        _atomic_torch_save(payload, ckpt_path)

    def do_eval() -> None:
        nonlocal next_eval_k
        val_loss = evaluate(model, evals, device, amp)
        recent = [r["train_loss"] for r in history[-config.log_every:]] if history else []
        row = {"step": state.step, "tokens": state.tokens, "progress": state.progress,
               "val_loss": val_loss, "val_bpb": data.bits_per_byte(val_loss),
               "train_loss": sum(recent) / len(recent) if recent else float("nan"),
               "train_seconds": state.train_seconds}
        eval_rows.append(row)
        done_evals.add(state.step)
        next_eval_k += 1
        for cb in callbacks:
            cb.on_eval(state, row)

    for cb in callbacks:
        cb.on_start(state)
    status, message = "finished", ""
    session_tokens, session_seconds = 0, 0.0
    window_tokens, window_seconds = 0, 0.0  # tokens/s over training compute only (no eval, no I/O)
    model.train()
    try:
        while True:
            state.progress = progress()
            due = (state.step in eval_steps) if total_steps else (state.progress >= next_eval_k / n or finished())
            if due and state.step not in done_evals:
                do_eval()
                if config.checkpoint_every == 0:
                    save_checkpoint()
            if finished():
                break
            t0 = time.perf_counter()
            lr = lr_at(config, state.progress, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for micro in range(config.grad_accum):
                x, y = train_batches.get(state.step * config.grad_accum + micro)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device_type=device.split(":")[0], dtype=amp, enabled=amp is not None):
                    _, loss = train_model(x, y)
                (loss / config.grad_accum).backward()
                loss_sum += loss.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss = (loss_sum / config.grad_accum).item()  # syncs, so the timing below is honest
            dt = time.perf_counter() - t0
            state.step += 1
            state.tokens += tokens_per_step
            state.train_seconds += dt
            session_tokens += tokens_per_step
            session_seconds += dt
            window_tokens += tokens_per_step
            window_seconds += dt
            if initial_loss is None:
                initial_loss = step_loss
            row = {"step": state.step, "tokens": state.tokens, "train_loss": step_loss, "lr": lr,
                   "grad_norm": float(grad_norm)}
            history.append(row)
            if not math.isfinite(step_loss) or step_loss > config.divergence_factor * initial_loss:
                status = "diverged"
                message = (f"loss {step_loss:.4g} at step {state.step} "
                           f"({'not finite' if not math.isfinite(step_loss) else f'> {config.divergence_factor}x the initial {initial_loss:.4g}'})")
                break
            if state.step % config.log_every == 0 or state.step == 1:
                row["tokens_per_s"] = window_tokens / max(window_seconds, 1e-9)
                window_tokens, window_seconds = 0, 0.0
                row["progress"] = progress()
                for cb in callbacks:
                    cb.on_step(state, row)
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                save_checkpoint()
    except StopRun as stop:
        status, message = stop.status, str(stop)
    except Exception as err:
        for cb in callbacks:
            cb.on_error(state, err)
        raise
    except KeyboardInterrupt:
        status, message = "interrupted", f"interrupted at step {state.step}; continue with --resume"
        save_checkpoint()
        _finish(state, callbacks, status, message, history, eval_rows, session_tokens, session_seconds, wall_start)
        raise
    if status == "finished":
        save_checkpoint()
    return _finish(state, callbacks, status, message, history, eval_rows, session_tokens, session_seconds, wall_start)


def _finish(state: RunState, callbacks, status, message, history, eval_rows, session_tokens, session_seconds,
            wall_start) -> RunResult:
    last = eval_rows[-1] if eval_rows else {}
    final = {k: last[k] for k in ("val_loss", "val_bpb", "train_loss") if k in last}
    tokens_per_s = session_tokens / session_seconds if session_seconds else 0.0
    peak = next((v for k, v in PEAK_FLOPS.items() if state.device.startswith("cuda")
                 and k in torch.cuda.get_device_name()), None)
    extra = {"mfu": state.cost["flops_per_token"] * tokens_per_s / peak} if peak else {}
    result = RunResult(status, state.variant_name, state.variant_hash, state.config.seed, state.step, state.tokens,
                       final, eval_rows, history, state.cost, state.fairness, tokens_per_s, state.train_seconds,
                       time.perf_counter() - wall_start, str(state.run_dir), message, extra)
    summary = {k: v for k, v in result.to_dict().items() if k != "history"}
    _write_json(state.run_dir / "result.json", summary)
    (state.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    for cb in callbacks:
        cb.on_end(state, result)
    return result


def load_checkpoint_model(run_dir: str | Path, device: str = "cpu") -> tuple[GPT, RunConfig, Any]:
    """The model of a run directory, with its tokenizer, for sampling."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise AblateError(f"no checkpoint in {run_dir}; pass the run directory printed by `ablate run`")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    config = RunConfig(**ckpt["config"])
    variant, dims, _, data, *_ = prepare_run(config)
    model = build_model(variant, dims, device=device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), config, data.tokenizer
