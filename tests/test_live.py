"""The live view: a real progress bar on a terminal, lines that fit 80 columns, no 'nan' before a value."""

import io
import re

from rich.console import Console

from ablate.config import RunConfig
from ablate.live import LiveView, duration
from ablate.train import train


def test_duration_reads_like_a_clock():
    assert [duration(x) for x in (None, 4.4, 65, 3725)] == ["?", "4s", "1m05s", "1h02m"]


def _config(corpus, tmp_path, **kw):
    return RunConfig(size="tiny", context=32, data=str(corpus), budget="40steps", batch_size=4, eval_points=2,
                     eval_batches=2, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), log_every=5,
                     **kw)


def test_terminal_view_draws_a_bar_and_never_shows_nan(small_corpus, tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    view = LiveView(console)
    train(_config(small_corpus, tmp_path), [view])
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "\n", out.getvalue())  # cursor moves and redraws
    assert "━" in text and "step 0/40" in text and "ETA" in text
    assert "nan" not in text.lower()
    eval_lines = [line for line in text.splitlines() if line.lstrip().startswith("step") and "val" in line]
    assert eval_lines and all(len(line) <= 80 for line in eval_lines)


def test_plain_lines_when_not_a_terminal(small_corpus, tmp_path, capsys):
    console = Console(file=io.StringIO(), force_terminal=False, width=80)
    train(_config(small_corpus, tmp_path), [LiveView(console)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert any("loss" in line and "tok/s" in line for line in lines)  # per-step lines
    assert any("val" in line and "bpb" in line for line in lines)  # per-eval lines
    assert all(len(line) <= 80 for line in lines) and not any("nan" in line for line in lines)


def test_the_run_dir_line_is_one_line_for_grep_however_long(tmp_path, capsys):
    """`ablate run ... | grep 'run dir' | awk '{print $3}'` must find the path on the first match."""
    from ablate.cli import main

    out = tmp_path / ("a-long-folder-name-" * 6) / "runs"
    assert main(["run", "--variant", "llama", "--size", "tiny", "--budget", "2steps", "--no-track", "--eval-points", "1",
                 "--eval-batches", "1", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run dir:")]
    assert len(lines) == 2 and all(line.split()[2].startswith(str(out)) and "-seed0-" in line for line in lines)


def test_a_heartbeat_line_when_plain_output_would_be_silent(small_corpus, tmp_path, capsys):
    """A slow phase (here: a callback that sleeps at each evaluation, as a huge --context's evaluation
    does) prints a line every ``heartbeat`` seconds; the heartbeat stops with the run."""
    import time

    from ablate.train import Callback

    class Slow(Callback):
        def on_eval(self, run, row):
            time.sleep(0.7)

    console = Console(file=io.StringIO(), force_terminal=False, width=80)
    train(_config(small_corpus, tmp_path), [LiveView(console, heartbeat=0.25), Slow()])
    beats = [line for line in capsys.readouterr().out.splitlines() if "still running" in line]
    assert beats and all(re.fullmatch(r"step +\d+  still running \(0s since the last line\)", b) for b in beats)
    time.sleep(0.6)
    assert "still running" not in capsys.readouterr().out  # stopped at the end
