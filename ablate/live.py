"""What a person watching a run sees: a progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from ablate.format import si
from ablate.callbacks import Callback, RunResult, RunState


def duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``1h02m``; ``?`` when not known yet."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Clock:
    """A truthful ETA: wall seconds per step measured over this session (the first step, which pays
    for warm-up, left out), times the steps left; a time budget counts the training seconds left."""

    def __init__(self, run: RunState):
        self.first_step: int | None = None
        self.first_time = 0.0
        self.start_seconds = run.train_seconds

    def tick(self, run: RunState) -> None:
        if self.first_step is None and run.step > (run.resumed_from or 0):
            self.first_step, self.first_time = run.step, time.perf_counter()

    def eta(self, run: RunState) -> float | None:
        if run.total_steps is None:  # a time budget: the training seconds left, plus what evals cost
            return max(0.0, run.budget.amount - run.train_seconds)
        if self.first_step is None or run.step <= self.first_step:
            return None
        per_step = (time.perf_counter() - self.first_time) / (run.step - self.first_step)
        return per_step * (run.total_steps - run.step)


class Heartbeat:
    """In plain-line mode, a line after ``every`` seconds without one, so that a long step or evaluation (a
    huge ``--context``, a slow device) is not minutes of silence; ``touch`` whenever a line is printed."""

    def __init__(self, run: RunState, every: float = 30.0):
        self.run, self.every = run, every
        self.last = time.monotonic()
        self._done = threading.Event()
        threading.Thread(target=self._beat, name="ablate-heartbeat", daemon=True).start()

    def touch(self) -> None:
        self.last = time.monotonic()

    def stop(self) -> None:
        self._done.set()

    def _beat(self) -> None:
        while not self._done.wait(min(1.0, self.every / 4)):
            silent = time.monotonic() - self.last
            if silent >= self.every:
                print(f"step {self.run.step:>6}  still running ({duration(silent)} since the last line)", flush=True)
                self.touch()


def unscored_sets_note(data_meta: dict, context: int) -> str:
    """For a task run whose context is too short for some held-out sets (``--context``), which accuracy
    metrics it leaves out and why; empty when every set is scored (or the data is a corpus)."""
    needs = data_meta.get("eval_positions") or {}
    short = {name: need for name, need in needs.items() if need > context}
    if not short:
        return ""
    metrics = ", ".join("acc" if name == "id" else f"acc_{name}" for name in short)
    longer = [name for name in needs if _longer(name, data_meta)]
    scored = [name for name in longer if name not in short]
    partial = ""
    if any(name in short for name in longer):
        partial = (f"; acc_longer averages only {', '.join('acc_' + n for n in scored)}" if scored
                   else "; no longer length is scored, so there is no acc_longer")
    return (f"note: {metrics} not scored: their held-out problems need up to {max(short.values())} positions and the "
            f"context is {context} (leave --context out, or give at least {max(needs.values())}, to score every "
            f"set){partial}")


def _longer(name: str, data_meta: dict) -> bool:
    """Whether the held-out set ``name`` (``len<L>``) is one of the lengths never trained on (L > digits)."""
    from ablate.tasks import parse_task

    if not (name.startswith("len") and name[3:].isdigit()):
        return False
    try:
        return int(name[3:]) > parse_task("task:" + str(data_meta.get("task", ""))).digits
    except Exception:  # noqa: BLE001 - a run's meta from another version: no claim about its lengths
        return False


def _num(row: dict, key: str, digits: int = 4) -> str:
    value = row.get(key)
    return "—" if value is None or value != value else f"{value:.{digits}f}"


class LiveView(Callback):
    """A rich progress bar when stdout is a terminal; per-step and per-eval lines when it is not."""

    def __init__(self, console: Console | None = None, quiet: bool = False, heartbeat: float = 30.0):
        self.console = console or Console(stderr=False)
        self.heartbeat_every = heartbeat
        self.heartbeat: Heartbeat | None = None
        self.interactive = self.console.is_terminal and not quiet
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task = None
        self.last: dict = {}
        self.last_eval: dict = {}

    def on_start(self, run: RunState) -> None:
        self.clock = Clock(run)
        if self.quiet:
            return
        steps = f"{run.total_steps} steps" if run.total_steps else f"{run.budget.amount:g}s"
        resumed = f", resumed at step {run.resumed_from}" if run.resumed_from else ""
        self.console.print(f"[bold]{run.variant_name}[/] seed {run.config.seed} on {run.device}: "
                           f"{run.cost['params']:,} params, budget {run.budget.text} ({steps}){resumed}",
                           highlight=False, soft_wrap=True)
        self.console.print(f"run dir: {run.run_dir}", highlight=False, markup=False, soft_wrap=True)  # one line
        if note := unscored_sets_note(run.data_meta, run.dims["context"]):
            self.console.print(note, highlight=False, markup=False, soft_wrap=True)
        if self.interactive:
            self.progress = Progress(BarColumn(bar_width=24), TaskProgressColumn(), TextColumn("{task.fields[info]}"),
                                     console=self.console, transient=True, refresh_per_second=4)
            self.progress.start()
            self.task = self.progress.add_task("train", total=1.0, completed=run.progress, info=self._info(run))
        else:  # the bar shows that it is alive; plain lines need a heartbeat
            self.heartbeat = Heartbeat(run, self.heartbeat_every)

    def _info(self, run: RunState) -> str:
        total = f"/{run.total_steps}" if run.total_steps else ""
        parts = [f"step {run.step}{total}"]
        if self.last:
            parts.append(f"loss {_num(self.last, 'train_loss')}")
        if self.last_eval:
            parts.append(f"val {_num(self.last_eval, 'val_loss')}")
        if self.last.get("tokens_per_s"):
            parts.append(f"{si(self.last['tokens_per_s'])} tok/s")
        parts.append(f"ETA {duration(self.clock.eta(run))}")
        return "  ".join(parts)

    def _refresh(self, run: RunState) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=run.progress, info=self._info(run))

    def on_step(self, run: RunState, row: dict) -> None:
        self.last = row
        self.clock.tick(run)
        if self.progress is not None:
            self._refresh(run)
        elif not self.quiet:
            self._touch()
            print(f"step {run.step:>6} {row.get('progress', run.progress):6.1%}  loss {_num(row, 'train_loss')}  "
                  f"lr {row['lr']:.2e}  {si(row.get('tokens_per_s', 0))} tok/s  ETA {duration(self.clock.eta(run))}",
                  flush=True)

    def on_eval(self, run: RunState, row: dict) -> None:
        self.last_eval = row
        if self.quiet:
            return
        line = (f"step {int(row['step']):>6} {run.progress:6.1%}  train {_num(row, 'train_loss')}  "
                f"val {_num(row, 'val_loss')}  bpb {_num(row, 'val_bpb', 3)}")
        if "acc" in row:  # a task run: exact-match accuracy in-distribution and on longer operands
            line += f"  acc {row['acc']:.1%}" + (f"  longer {row['acc_longer']:.1%}" if "acc_longer" in row else "")
        elif run.step:
            line += f"  ETA {duration(self.clock.eta(run))}"
        if self.progress is not None:
            self.progress.console.print(line, highlight=False, markup=False)
            self._refresh(run)
        else:
            self._touch()
            print(line, flush=True)

    def _touch(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.touch()

    def on_end(self, run: RunState, result: RunResult) -> None:
        self._stop()

    def on_error(self, run: RunState, error: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
