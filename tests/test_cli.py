import json

import pytest
import torch

from ablate.cli import main
from ablate.catalog import all_specs


def test_list_shows_every_component(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for spec in all_specs():
        assert spec.name in out
    assert "llama-7b" in out and "mistral" in out


def test_list_one_slot(capsys):
    assert main(["list", "position"]) == 0
    out = capsys.readouterr().out
    assert "rope" in out and "swiglu" not in out


def test_describe(capsys):
    assert main(["describe", "rope"]) == 0
    out = capsys.readouterr().out
    assert "RoFormer" in out and "base=10000.0" in out


def test_describe_a_variant_marks_the_slots_it_changes(capsys):
    assert main(["describe", "rope+swiglu(hidden=300)"]) == 0
    rows = {line.split("│")[2].strip(): line for line in capsys.readouterr().out.splitlines() if line.count("│") > 4}
    assert "*" in rows["position"].split("│")[1] and "*" in rows["mlp"].split("│")[1] and "hidden=300" in rows["mlp"]
    assert "*" not in rows["norm"].split("│")[1] and "*" not in rows["model"].split("│")[1]
    assert main(["describe", "rope+nope"]) == 2 and "unknown component or preset 'nope'" in capsys.readouterr().err
    assert main(["describe", "baseline"]) == 0 and "baseline (variant" in capsys.readouterr().out  # the default
    assert main(["describe", "modern-small"]) == 0 and "rope+rmsnorm+swiglu" in capsys.readouterr().out  # a file's
    assert main(["describe", "nosuch"]) == 2
    err = capsys.readouterr().err  # outside the repository, a named variant's file is not found: say where it looked
    assert "unknown component or preset 'nosuch'" in err and "no variant file" in err and "ABLATE_VARIANTS_PATH" in err


def test_describe_slot_colon_name_and_list_of_presets(capsys):
    assert main(["describe", "mlp:swiglu"]) == 0 and "swiglu (mlp)" in capsys.readouterr().out
    assert main(["describe", "norm:swiglu"]) == 2 and "is a mlp component" in capsys.readouterr().err
    assert main(["list", "llama"]) == 0
    out = capsys.readouterr().out
    assert "architecture presets" in out and "components" not in out and "size presets" not in out
    assert main(["list", "gpt2*"]) == 0
    out = capsys.readouterr().out
    assert "gpt2-small" in out and "size presets" in out
    assert main(["list", "norm"]) == 0 and "presets" not in capsys.readouterr().out


def test_describe_a_size_prints_its_dims(capsys):
    assert main(["describe", "gpt2-small"]) == 0
    out = capsys.readouterr().out
    assert "d_model 768, layers 12, heads 12 (head dim 64), context 1024, vocabulary 50257" in out
    assert "Size(" not in out


def test_inspect_json(capsys):
    assert main(["inspect", "llama", "--size", "llama-7b", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cost"]["params"] == 6_738_415_616
    assert info["resolved"]["mlp"]["component"] == "swiglu"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["inspect", "rope+alibi"], "both fill the position slot"),
        (["inspect", "ropee"], "did you mean rope"),
        (["describe", "nope"], "unknown component or preset 'nope'"),
        (["inspect", "gqa(kv_heads=5)", "--size", "gpt2-small"], "must divide"),
        (["inspect", "rope", "--size", "huge"], "unknown size 'huge'"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_every_command_group_is_reachable_from_the_main_cli(capsys):
    from pathlib import Path

    quickstart = Path(__file__).resolve().parents[1] / "studies" / "quickstart.toml"
    assert main(["study", "show", str(quickstart)]) == 0
    assert "quickstart" in capsys.readouterr().out
    for command in ("run", "sample", "compare", "ui", "study", "list", "describe", "inspect", "bench"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0


def test_version_and_ui_port_mistakes_are_one_line_exit_2(capsys):
    import socket

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("ablate ")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "already in use" in err and "--port" in err and err.count("\n") == 1
    assert main(["ui", "--port", "70000"]) == 2
    assert "not a TCP port" in capsys.readouterr().err


class _Server:
    """subprocess.Popen's stand-in for MLflow's server: writes its last words to its log and ends by itself."""

    def __init__(self, cmd, *args, stdout=None, **kwargs):
        self.pid, self.log, self.words = 0, stdout, _Server.words

    def wait(self, timeout=None):
        if self.log is not None and self.words:
            self.log.write(self.words)
            self.log.flush()
        return 0


@pytest.mark.parametrize("words,code,needle", [
    ("ERROR: [Errno 98] error while attempting to bind on address ('127.0.0.1', 5000): address already in use\n", 2,
     "the port was taken while MLflow started"),
    ("something else went wrong\n", 1, "the MLflow server stopped (exit 0)"),
])
def test_ui_whose_server_ends_by_itself_says_so(words, code, needle, monkeypatch, tmp_path, capsys):
    """A second `ablate ui` started while the first was still binding the port exited 0, silently."""
    import socket
    import subprocess

    with socket.socket() as probe:  # a port free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    _Server.words = words
    monkeypatch.setattr(subprocess, "Popen", _Server)
    assert main(["ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == code
    assert needle in capsys.readouterr().err


def _options(parser, path):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, "/".join(action.option_strings) or action.dest, action.help or ""


def test_every_flag_of_every_command_says_what_it_does():
    import re

    from ablate.cli import build_parser

    options = list(_options(build_parser(), "ablate"))
    assert len(options) > 100  # every command group was walked
    bare = [(cmd, opt, text) for cmd, opt, text in options
            if len(re.sub(r"\(default[^)]*\)", "", text).strip()) < 8]
    assert not bare, f"flags whose help is only a default: {bare}"


def test_the_parser_imports_no_heavy_library():
    """`ablate --help`, `ablate list` and the start of every command pay for torch, scipy and MLflow
    only where the command uses them (building the parser took ~2 s when it imported them)."""
    import subprocess
    import sys

    heavy = "print(sorted(m for m in ('torch', 'scipy', 'mlflow', 'matplotlib', 'optuna') if m in sys.modules))"
    code = f"import sys, ablate.cli; ablate.cli.build_parser(); {heavy}"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    # a finished run checks its curve for a stall (report.stability): that must not load scipy's statistics
    code = "import sys, ablate.report.stability; print('scipy.stats' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_value_that_looks_like_a_flag_gets_a_hint(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--budget", "-5steps"])
    assert exit_.value.code == 2
    assert "written --flag=VALUE" in capsys.readouterr().err


def test_a_closed_pipe_does_not_stop_a_run_or_lose_its_results(tmp_path):
    """`ablate run | head -2`: the viewer stops reading; the run goes on to the end, quietly, exit 0."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "ablate", "run", "--size", "tiny", "--threads", "1", "--budget", "40steps",
           "--no-track", "--eval-points", "2", "--eval-batches", "1", "--log-every", "1", "--out", str(tmp_path / "runs")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "finished"
    lister = subprocess.Popen([sys.executable, "-m", "ablate", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env)
    lister.stdout.close()
    assert lister.wait(timeout=120) == 0 and lister.stderr.read() == b""
    both = subprocess.Popen([sys.executable, "-m", "ablate", "list", "nope"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)  # `2>&1 | head -0`: the error line has no reader
    both.stdout.close()
    assert both.wait(timeout=120) == 2


def test_the_reachability_probe_leaves_proxied_hosts_to_the_proxy(monkeypatch):
    """Behind HTTP(S)_PROXY only the proxy can reach the server, so a direct TCP probe must not judge it."""
    from ablate.urls import unreachable

    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    assert "refused" in unreachable("http://127.0.0.1:1").lower()
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    assert unreachable("http://tracking.example:1") == ""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert "refused" in unreachable("http://127.0.0.1:1").lower()  # bypassed: probed directly


def test_compare_filters_all_hold_or_say_they_cannot():
    """--budget and --where (and two --where) on one key: AND, so a clash is an error, not the last one winning."""
    import argparse

    from ablate.cli.compare import _where
    from ablate.errors import AblateError

    def args(where=(), **flags):
        return argparse.Namespace(where=list(where), **{k: flags.get(k) for k in ("budget", "dims", "batch")})

    assert _where(args(["budget=20 steps", "data=abc"], budget="20steps")) == {"budget": "20steps", "data": "abc"}
    for clash in (args(["budget=20steps"], budget="30steps"), args(["budget=30steps", "budget=20steps"])):
        with pytest.raises(AblateError, match="both 30steps and 20steps|both 20steps and 30steps"):
            _where(clash)


@pytest.mark.parametrize("raised", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
                 "allocate 5200000000000 bytes."),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB."),
])
def test_sizes_that_do_not_fit_in_memory_are_one_line(raised, tmp_path, monkeypatch, capsys):
    """`bench train --batch-size 100000000` (or a run as large) ended in an allocator traceback."""
    from ablate.bench import train as bench_train

    def too_big(*args, **kwargs):
        raise raised

    monkeypatch.setattr(bench_train, "run_train", too_big)
    assert main(["bench", "train", "--size", "tiny", "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: out of memory (") and err.count("\n") == 1 and "enforce fail" not in err and "data." not in err
    assert "batch size, context" in err


def test_other_runtime_errors_stay_bugs(tmp_path, monkeypatch):
    from ablate.bench import train as bench_train

    monkeypatch.setattr(bench_train, "run_train", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["bench", "train", "--size", "tiny", "--out", str(tmp_path / "t.json")])


def test_a_path_of_an_unknown_users_home_is_one_line(tmp_path, capsys):
    """`--data ~nouser/x.txt` (or an export folder so written) ended in Path.expanduser's RuntimeError."""
    assert main(["run", "--no-track", "--size", "tiny", "--budget", "2steps", "--data", "~no-such-user-here/x.txt",
                 "--out-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "~user for a user this machine does not know" in err and err.count("\n") == 1
