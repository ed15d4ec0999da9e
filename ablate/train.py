"""The one trainer. It is variant-blind: it sees a model, a budget and batches, never a component.

Call the module to train: ``from ablate import train; result = train(variant="rope", budget="200steps",
seed=0, group="my-runs")`` returns a ``RunResult``; ``group=`` (or ``tracking_uri=``, ``track=True``)
logs the run to MLflow, where ``compare(group="my-runs")`` finds it. Settings are ``RunConfig`` fields,
or pass a ``RunConfig``.

Fairness it guarantees: the training batch of step k depends on (seed, k) alone and the eval batches
on ``eval_seed`` alone, so every variant of a seed sees the same tokens in the same order, and every
run of a comparison is judged on the same held-out batches; the budget is a value (steps, tokens, FLOPs or seconds) and the
learning-rate schedule follows the fraction of it spent.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ablate import distributed, interrupts
from ablate.accounting import cost
from ablate.callbacks import Callback, RunResult, RunState, StopRun
from ablate.config import RunConfig
from ablate.data.tokenizer_file import save_tokenizer
from ablate.errors import AblateError
from ablate.fileio import atomic_write, atomic_write_text, remove_stale_tmp
from ablate.init_from import init_model
from ablate.model import GPT, build_model, plugin_error
from ablate.checkpoint import digest_path, load_run_model, load_weights, read_checkpoint
from ablate.peak import run_peak
from ablate.optim import autocast_dtype, check_warmup, keep_freed_memory, lr_at, make_optimizer, pick_device, set_matmul_precision
from ablate.pacing import EvalPlan, Meter, read_losses
from ablate.run_inputs import prepare_run, row_width
from ablate.tasks import TaskData
from ablate.variant import foreign_origins, parse_variant, plugin_specs

CHECKPOINT = "checkpoint.pt"



# ------------------------------------------------------------------------------------- helpers
def run_dir_for(config: RunConfig, variant_name: str | None = None) -> Path:
    """The run's directory: its variant (``variant_name``, canonical; resolved from ``config`` when not given),
    seed and the hash of its settings and its plugin components' code; a task run's directory made before one
    task's spellings were one run (its hash took the spelling as typed) is kept where it exists."""
    variant_name = variant_name or parse_variant(config.variant).name
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", variant_name)[:80]
    key = variant_name  # with its plugin components' code: an edited plugin is another run, not this one again
    if code := foreign_origins([variant_name]):
        key += " " + json.dumps(code, sort_keys=True)
    path = Path(config.out_dir) / f"{slug}-seed{config.seed}-{config.fingerprint(variant=key)}"
    older = path.with_name(f"{slug}-seed{config.seed}-{config.fingerprint(variant=key, task_as_typed=True)}")
    return older if older != path and older.is_dir() and not path.exists() else path


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def init_seed(seed: int, offset: int) -> int:
    """The torch seed a run's weights are drawn with: the run's seed, or (A/A controls, ``init_seed=k``)
    another draw for the same data order."""
    return seed if not offset else (seed * 1_000_003 + offset * 7_919) % 2**63


def unigram_entropy(tokens, limit: int = 20_000_000) -> float:
    """Entropy (nats/token) of the unigram distribution of ``tokens`` (the first ``limit``): the loss of
    a model that learned token frequencies and nothing else, so a run that ends near it has stalled."""
    import numpy as np

    counts = np.bincount(np.asarray(tokens[:limit], dtype=np.int64))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def evaluate(model: GPT, batches: Sequence, device: str, amp: torch.dtype | None) -> float:
    was_training = model.training
    model.eval()
    losses = []
    for x, y in batches:
        with torch.autocast(device_type=device.split(":")[0], dtype=amp, enabled=amp is not None):
            _, loss = model(x.to(device), y.to(device))
        losses.append(loss.float())
    model.train(was_training)
    total = 0.0
    for value in torch.stack(losses).tolist():  # one transfer; the same float sum as one .item() per batch
        total += value
    return total / len(batches)


# --------------------------------------------------------------------------------- named steps
@dataclass
class Run:
    """Everything one training run holds while it goes: the state callbacks see, its records, the
    model and optimizer, and how it is measured."""

    state: RunState
    config: RunConfig
    model: GPT
    optimizer: torch.optim.Optimizer
    data: Any
    evals: Sequence
    amp: torch.dtype | None
    callbacks: Sequence[Callback]
    history: list[dict[str, float]] = field(default_factory=list)
    unread: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (loss, grad norm) of
    # the last len(unread) history rows, still on the device: read in one transfer by ``read_losses``
    eval_rows: list[dict[str, float]] = field(default_factory=list)
    initial_loss: float | None = None
    meter: Meter = field(default_factory=Meter)
    world: distributed.World = field(default_factory=distributed.World)  # torchrun's processes, if any
    wall_start: float = field(default_factory=time.perf_counter)

    @property
    def checkpoint_path(self) -> Path:
        return self.state.run_dir / CHECKPOINT

    def progress(self) -> float:
        s = self.state
        return min(1.0, s.step / s.total_steps) if s.total_steps else min(1.0, s.train_seconds / s.budget.amount)

    def finished(self) -> bool:
        s = self.state
        return s.step >= s.total_steps if s.total_steps else s.train_seconds >= s.budget.amount

    @property
    def matmul_dtype(self) -> str:
        """The type the training matmuls run in, whose peak MFU divides by."""
        return "bfloat16" if self.amp is torch.bfloat16 else "float32"


def resume(run: Run) -> None:
    """Continue from the run directory's checkpoint: weights, optimizer, RNG, counters and records."""
    state, device = run.state, run.state.device
    fix = f"start over with --force, or delete {run.checkpoint_path}"
    ckpt = read_checkpoint(run.checkpoint_path, device, fix)
    if ckpt["fingerprint"] not in {run.config.fingerprint(variant=variant, task_as_typed=typed)  # older spellings
                                   for variant in (state.variant_name, None) for typed in (False, True)}:
        raise AblateError(f"checkpoint in {state.run_dir} belongs to a different configuration; run without --resume")
    load_weights(run.model, ckpt["model"], run.checkpoint_path, fix)
    load_weights(run.optimizer, ckpt["optimizer"], run.checkpoint_path, fix)
    try:
        torch.set_rng_state(ckpt["rng_cpu"])
    except (RuntimeError, TypeError) as err:
        raise AblateError(f"checkpoint {run.checkpoint_path} has a damaged RNG state ({err}); {fix}") from None
    if device.startswith("cuda") and "rng_cuda" in ckpt:
        torch.cuda.set_rng_state(ckpt["rng_cuda"])
    state.step, state.tokens, state.train_seconds = ckpt["step"], ckpt["tokens"], ckpt["train_seconds"]
    run.history, run.eval_rows, run.initial_loss = ckpt["history"], ckpt["evals"], ckpt["initial_loss"]
    state.resumed_from = state.step


def _recorded_data(run_dir: str | Path) -> str | None:
    """What the run in ``run_dir`` trained on (``content_key`` of its config.json's data), or None when it has
    no record (a run from before config.json)."""
    from ablate.data.prepare import content_key

    try:
        return content_key(json.loads((Path(run_dir) / "config.json").read_text())["data"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_same_data(run_dir: Path, meta: dict) -> None:
    """Resuming on data that changed since the run started would train one run on two datasets."""
    from ablate.data.prepare import content_key

    recorded, now = _recorded_data(run_dir), content_key(meta)
    if recorded and now and recorded != now:  # no record: the checkpoint's own checks apply
        raise AblateError(f"the data changed since the run in {run_dir} started (fingerprint {recorded[:12]} then, "
                          f"{now[:12]} now); resuming would train one run on two datasets: restore the data, or "
                          "start over with --force")


def save_checkpoint(run: Run) -> None:
    """Everything ``resume`` needs, written atomically (a reader never sees half a checkpoint)."""
    state = run.state
    read_losses(run)  # the history it holds is complete (a divergence found here is the caller's to judge)
    if not run.world.is_main:
        return
    payload = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "step": state.step,
               "tokens": state.tokens, "train_seconds": state.train_seconds, "history": run.history,
               "evals": run.eval_rows, "initial_loss": run.initial_loss, "rng_cpu": torch.get_rng_state(),
               "fingerprint": run.config.fingerprint(variant=state.variant_name), "config": run.config.to_dict()}
    if state.device.startswith("cuda"):
        payload["rng_cuda"] = torch.cuda.get_rng_state()
    atomic_write(run.checkpoint_path, lambda f: torch.save(payload, f), digests=digest_path(run.checkpoint_path))


def evaluate_now(run: Run, plan: EvalPlan) -> None:
    """One evaluation on the fixed held-out batches; the train loss beside it is the recent mean."""
    state, config = run.state, run.config
    if not run.world.is_main:  # rank 0 evaluates for everyone
        plan.mark(state.step)
        return
    val_loss = evaluate(run.model, run.evals, state.device, run.amp)
    recent = [r["train_loss"] for r in run.history[-config.log_every:]] if run.history else []
    row = {"step": state.step, "tokens": state.tokens, "progress": state.progress,
           "val_loss": val_loss, "val_bpb": run.data.bits_per_byte(val_loss),
           "train_loss": sum(recent) / len(recent) if recent else float("nan"),
           "train_seconds": state.train_seconds}
    if isinstance(run.data, TaskData) and state.step > 0:  # exact-match accuracy (the untrained model is slow to decode)
        row.update(run.data.accuracy(run.model, state.device, amp_dtype=run.amp))
    run.eval_rows.append(row)
    plan.mark(state.step)
    for cb in run.callbacks:
        cb.on_eval(state, row)


def to_device(batch: torch.Tensor, device: str) -> torch.Tensor:
    """A host batch on ``device``: on CUDA through page-locked memory and a non-blocking copy, so the copy
    overlaps the previous step's kernels; on the CPU the batch itself (no copy)."""
    if device.startswith("cuda"):
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def optimizer_step(run: Run, train_model, batches, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over ``grad_accum`` micro-batches at ``lr``; returns (mean loss, grad norm)
    as tensors, so nothing here waits for the device."""
    config, device, step = run.config, run.state.device, run.state.step
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    loss_sum = 0.0
    for micro in range(config.grad_accum):
        index = step * config.grad_accum + micro
        w = run.world
        x, y = batches.get(index, rank=w.rank, world_size=w.size) if w.parallel else batches.get(index)
        x, y = to_device(x, device), to_device(y, device)
        with torch.autocast(device_type=device.split(":")[0], dtype=run.amp, enabled=run.amp is not None):
            _, loss = train_model(x, y, label_smoothing=config.label_smoothing)  # evaluation never smooths
        (loss / config.grad_accum).backward()
        loss_sum += loss.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip or float("inf"))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return distributed.mean(loss_sum / config.grad_accum, run.world), grad_norm


def start(config: RunConfig, callbacks: Sequence[Callback], resume_run: bool) -> tuple[Run, Any]:
    """Build the run: data, model, optimizer, run directory, fairness keys; resume if asked."""
    variant, dims, budget, data, train_batches, evals = prepare_run(config)
    device = pick_device(config.device)
    set_matmul_precision(device, config.dtype)
    if device == "cpu":
        keep_freed_memory()  # no page faults on every step's activations
    world = distributed.world(device)
    device = distributed.device_for(device, world)
    distributed.check_run(budget.kind, config.batch_size, world)
    torch.manual_seed(init_seed(config.seed, variant.model.init_seed))
    model = build_model(variant, dims, device=device)
    parent = init_model(config.init_from, config.cache_dir, variant=variant, dims=dims.__dict__, data_meta=data.meta,
                        model=model, device=device) if config.init_from else None
    run_cost = cost(model).to_dict()
    tokens_per_step = config.batch_size * config.grad_accum * row_width(data, dims.context)
    total_steps = check_warmup(config, budget.total_steps(tokens_per_step, run_cost["flops_per_token"]))
    optimizer = make_optimizer(model, config, device)
    fairness = {
        "budget": budget.text,
        "data": str(data.meta.get("problems_fingerprint", data.meta.get("fingerprint", ""))),
        "tokenizer": str(data.meta["tokenizer"]) if isinstance(data, TaskData) else data.tokenizer.name,  # BYTE: byte
        "eval_batches": str(getattr(evals, "fingerprint", "")),
        "dims": f"{dims.d_model}x{dims.n_layers}x{dims.n_heads}@{dims.context}",
        "batch": f"{config.batch_size}x{config.grad_accum}",
    }
    run_dir = run_dir_for(config, variant.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(run_dir)  # half-written files of a process that was killed mid-write
    data_meta = dict(data.meta, unigram_entropy=unigram_entropy(data.train) if hasattr(data, "train") else None)
    state = RunState(config, variant.name, variant.hash, run_dir, model, data.tokenizer, run_cost,
                     dims.__dict__.copy(), data_meta, fairness, total_steps, budget, device,
                     init=parent.summary() if parent else {})
    run = Run(state, config, model, optimizer, data, evals, autocast_dtype(device, config.dtype),
              callbacks if world.is_main else (), world=world)  # rank 0 alone tracks and prints
    run_peak(device, run.matmul_dtype)  # a first probe of the peak; the run's MFU divides by the best one
    if resume_run and run.checkpoint_path.exists():
        _check_same_data(run_dir, data.meta)
        resume(run)
    if world.is_main:
        save_tokenizer(data.tokenizer, run_dir)  # `ablate sample` and `export` decode with it, from any folder
        _write_json(run_dir / "config.json", {"config": config.to_dict(), "variant": variant.to_dict(),
                                              "variant_name": variant.name, "variant_hash": variant.hash,
                                              "dims": state.dims, "data": state.data_meta, "init": state.init})
    return run, train_batches


# --------------------------------------------------------------------------------------- train
def train(config: RunConfig, callbacks: Sequence[Callback] = (), resume: bool = False) -> RunResult:
    """Train ``config`` under its budget and return the result; the callbacks track and display it.

    Writes ``config.json``, ``checkpoint.pt`` (at every evaluation, or every ``checkpoint_every``
    steps), ``result.json`` and ``metrics.jsonl`` into the run directory. With ``resume`` a run
    continues from its checkpoint, bit-identically to a run that was never stopped.
    """
    interrupts.PENDING.clear()  # a stop held while an earlier run saved its result was acted on, or not wanted
    run, batches = start(config, callbacks, resume)
    state = run.state
    train_model = distributed.wrap(run.model, run.world, state.device)
    train_model = torch.compile(train_model) if config.compile else train_model
    plan = EvalPlan(config.eval_points, state.total_steps, [int(r["step"]) for r in run.eval_rows])
    tokens_per_step = config.batch_size * config.grad_accum * row_width(run.data, state.dims["context"])
    status, message = "finished", ""
    run.model.train()
    try:
        for cb in run.callbacks:  # inside: an interrupt while the tracker opens its MLflow run still closes it
            cb.on_start(state)
        while True:
            state.progress = run.progress()
            due, done = plan.due(state.step, state.progress, run.finished()), run.finished()
            if (due or done) and (message := read_losses(run)):  # nothing is judged on unchecked steps
                status = "diverged"
                break
            if due:
                evaluate_now(run, plan)
                if config.checkpoint_every == 0:
                    save_checkpoint(run)
            if done:
                break
            t0 = time.perf_counter()
            lr = lr_at(config, state.progress, state.total_steps)
            loss, grad_norm = optimizer_step(run, train_model, batches, lr)
            dt = time.perf_counter() - t0  # no sync: a device that runs behind is waited for in read_losses
            state.step += 1
            state.tokens += tokens_per_step
            state.train_seconds += dt
            run.meter.add(tokens_per_step, dt)
            row = {"step": state.step, "tokens": state.tokens, "train_loss": math.nan, "lr": lr,
                   "grad_norm": math.nan}  # the two NaNs are filled in by read_losses
            run.history.append(row)
            run.unread.append((loss, grad_norm))
            if state.step % config.log_every == 0 or state.step == 1:
                message = read_losses(run)  # the divergence check: within log_every steps of a bad loss
                if message:
                    status = "diverged"
                    break
                row["tokens_per_s"] = run.meter.window_rate()
                row["progress"] = run.progress()
                for cb in run.callbacks:
                    cb.on_step(state, row)
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                if message := read_losses(run):
                    status = "diverged"
                    break
                save_checkpoint(run)
    except StopRun as stop:
        status, message = stop.status, str(stop)
    except Exception as err:
        for cb in run.callbacks:
            cb.on_error(state, err)
        plugged = plugin_specs(run.model.variant) if not isinstance(err, torch.OutOfMemoryError) else []
        if plugged and (failure := plugin_error(plugged, f"failed at step {state.step}", err)):
            raise failure from None  # e.g. a longer sequence than the probe's: the plugin's bug, in one line
        raise
    except KeyboardInterrupt:
        with interrupts.held():  # a second Ctrl-C must not cut the checkpoint, result or MLflow run short
            save_checkpoint(run)
            finish(run, "interrupted", f"interrupted at step {state.step}; continue with --resume")
        raise
    with interrupts.held(deliver=False):  # a stop asked for now waits for the result, which is returned
        if status == "finished":
            save_checkpoint(run)
        return finish(run, status, message)


def finish(run: Run, status: str, message: str) -> RunResult:
    """The result: final metrics from the last evaluation, throughput over training steps only, MFU;
    written to ``result.json`` and ``metrics.jsonl`` and handed to the callbacks."""
    state = run.state
    read_losses(run)  # an interrupted or pruned run's last steps
    last = run.eval_rows[-1] if run.eval_rows else {}
    final = {k: v for k, v in last.items() if k in ("val_loss", "val_bpb", "train_loss") or k.startswith("acc")}
    if status == "diverged" and last.get("step") != state.step:  # no evaluation of the diverged model:
        final = {"train_loss": run.history[-1]["train_loss"] if run.history else float("nan")}  # not step 0's
    tokens_per_s = run.meter.session_rate
    peak = run_peak(state.device, run.matmul_dtype) if tokens_per_s else None  # the best of this and earlier probes
    extra: dict[str, Any] = {"unigram_entropy": state.data_meta.get("unigram_entropy")}
    if state.init:
        extra["init_from"] = state.init
    if peak:  # per device: the global tokens/s came from world.size devices
        extra["peak_flops"] = peak
        extra["mfu"] = state.cost["flops_per_token"] * tokens_per_s / (peak * run.world.size)
    if status == "finished" and run.world.is_main:  # what generating costs, for the report's cost columns
        from ablate.bench.decode import decode_rate

        if rate := decode_rate(run.model, run.amp):
            extra["decode_tokens_per_s"] = rate
    result = RunResult(status, state.variant_name, state.variant_hash, state.config.seed, state.step, state.tokens,
                       final, run.eval_rows, run.history, state.cost, state.fairness, tokens_per_s,
                       state.train_seconds, time.perf_counter() - run.wall_start, str(state.run_dir), message, extra)
    if run.world.is_main:
        from ablate.report.tables import json_safe  # standard JSON: a missing number is null, never NaN

        summary = json_safe({k: v for k, v in result.to_dict().items() if k != "history"})
        _write_json(state.run_dir / "result.json", summary)
        atomic_write_text(state.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.history))
    for cb in run.callbacks:
        cb.on_end(state, result)
    distributed.leave(run.world)
    return result


def load_checkpoint_model(run_dir: str | Path, device: str = "cpu") -> tuple[GPT, RunConfig, Any]:
    """The model of a run directory, with its settings and tokenizer (``ablate.checkpoint.load_run_model``)."""
    return load_run_model(run_dir, device)


def finished_result(config: RunConfig) -> RunResult | None:
    """The result of this (config, seed) when its run directory holds a finished one, else None."""
    path = run_dir_for(config) / "result.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != "finished":
        return None
    known = {f.name for f in dataclasses.fields(RunResult)}
    try:
        return RunResult(**{k: v for k, v in summary.items() if k in known}, history=[])
    except TypeError:
        return None


def data_changed(config: RunConfig, run_dir: str | Path) -> bool:
    """Whether a local data file or folder differs from what the finished run in ``run_dir`` trained on (what
    it is, not where it lies); a named dataset or a task is pinned, so it is not read again."""
    from ablate.data.prepare import content_key

    if ":" in config.data.split("/")[0] or not Path(config.data).expanduser().exists():  # task:, hf:, a name
        return False
    recorded = _recorded_data(run_dir)
    return recorded is not None and content_key(prepare_run(config)[3].meta) != recorded


def changed_data_error(config: RunConfig, run_dir: str | Path) -> AblateError:
    return AblateError(f"this run finished on other data: {config.data} has changed since it was trained "
                       f"({run_dir}); train it again on the data as it is now with --force (force=True)")


class _CallableModule(type(json)):  # a module type: ``from ablate import train; train(...)`` runs a training
    def __call__(self, config: RunConfig | None = None, callbacks: Sequence[Callback] = (), resume: bool = False, *,
                 group: str | None = None, tracking_uri: str | None = None, experiment: str | None = None,
                 track: bool | None = None, force: bool = False, **settings) -> RunResult:
        """``train(config)``, ``train("rope", budget=...)`` or ``train(variant=..., ...)`` (RunConfig fields).
        ``group=`` (as ``ablate run --group``), ``experiment=``, ``tracking_uri=`` or ``track=True`` log the run to MLflow
        (default store ``sqlite:///mlflow.db``), where ``compare(group=...)`` finds it; untracked otherwise.
        A run that has finished already is not trained again (as ``ablate run``): its result is returned, with
        a warning; ``force=True`` trains it again."""
        config, settings = (None, {"variant": config, **settings}) if isinstance(config, str) else (config, settings)
        if config is None:
            from ablate.config import make_config

            config = make_config(None, **settings)
        elif settings or not isinstance(config, RunConfig):
            raise TypeError("train() takes a RunConfig, a variant and settings as keywords (train(\"rope\", budget="
                            "\"100steps\")), or settings alone; not both, and not a " + type(config).__name__)
        asked = group is not None or tracking_uri is not None or experiment is not None
        tracked = track if track is not None else asked
        if not tracked and asked:
            raise TypeError("train(track=False) logs nothing, so group=, experiment= and tracking_uri= have no effect; "
                            "leave them out")
        if not force and not resume and (done := finished_result(config)) is not None:
            import warnings

            if data_changed(config, done.run_dir):  # the old data's result is not this call's answer
                raise changed_data_error(config, done.run_dir)
            warnings.warn(f"this run has finished already ({done.run_dir}); returning its result (force=True trains "
                          "it again)", stacklevel=2)
            return done
        if tracked:
            from ablate.track import MLflowTracker

            callbacks = [*callbacks, MLflowTracker(tracking_uri=tracking_uri, experiment=experiment, group=group)]
        return train(config, callbacks, resume=resume)


sys.modules[__name__].__class__ = _CallableModule
