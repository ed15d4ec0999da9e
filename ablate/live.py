"""What a person watching a run sees: a live view on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ablate.train import Callback, RunResult, RunState


def _eta(run: RunState, started: float, start_progress: float) -> str:
    done = run.progress - start_progress
    if done <= 0:
        return "?"
    left = (time.perf_counter() - started) * (1 - run.progress) / done
    return f"{left:.0f}s"


class LiveView(Callback):
    """A rich live panel when stdout is a terminal; per-step and per-eval lines when it is not."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=False)
        self.interactive = sys.stdout.isatty() and not quiet
        self.quiet = quiet
        self.live: Live | None = None
        self.last: dict = {}
        self.last_eval: dict = {}

    def on_start(self, run: RunState) -> None:
        self.started, self.start_progress = time.perf_counter(), run.progress
        if self.quiet:
            return
        steps = f"{run.total_steps} steps" if run.total_steps else f"{run.budget.amount:g}s"
        resumed = f", resumed at step {run.resumed_from}" if run.resumed_from else ""
        self.console.print(f"[bold]{run.variant_name}[/] seed {run.config.seed} on {run.device}: "
                           f"{run.cost['params']:,} params, budget {run.budget.text} ({steps}){resumed}")
        self.console.print(f"run dir: {run.run_dir}")
        if self.interactive:
            self.live = Live(self._panel(run), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def _panel(self, run: RunState) -> Table:
        table = Table.grid(padding=(0, 2))
        bar_width = 30
        filled = int(run.progress * bar_width)
        table.add_row(f"[{'#' * filled}{'.' * (bar_width - filled)}] {run.progress:6.1%}",
                      f"step {run.step}", f"ETA {_eta(run, self.started, self.start_progress)}")
        table.add_row(f"loss {self.last.get('train_loss', float('nan')):.4f}",
                      f"val {self.last_eval.get('val_loss', float('nan')):.4f}",
                      f"{self.last.get('tokens_per_s', 0):,.0f} tok/s")
        return table

    def on_step(self, run: RunState, row: dict) -> None:
        self.last = row
        if self.live is not None:
            self.live.update(self._panel(run))
        elif not self.quiet:
            print(f"step {run.step:>6}  {row.get('progress', run.progress):6.1%}  loss {row['train_loss']:.4f}  lr {row['lr']:.2e}  "
                  f"{row.get('tokens_per_s', 0):,.0f} tok/s", flush=True)

    def on_eval(self, run: RunState, row: dict) -> None:
        self.last_eval = row
        if self.quiet:
            return
        train = f"{row['train_loss']:.4f}" if row["train_loss"] == row["train_loss"] else "-"
        line = (f"step {int(row['step']):>6}  {run.progress:6.1%}  train {train}  "
                f"val {row['val_loss']:.4f}  val bpb {row['val_bpb']:.4f}  "
                f"{self.last.get('tokens_per_s', 0):,.0f} tok/s  ETA {_eta(run, self.started, self.start_progress)}")
        if "acc" in row:  # a task run: exact-match accuracy in-distribution and on longer operands
            line += f"  acc {row['acc']:.1%}" + (f"  longer {row['acc_longer']:.1%}" if "acc_longer" in row else "")
        if self.live is not None:
            self.live.console.print(line)
            self.live.update(self._panel(run))
        else:
            print(line, flush=True)

    def on_end(self, run: RunState, result: RunResult) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
