"""Issue 15: a user's mistake gets one line naming the problem and the fix, exit code 2 — never a
traceback, never a harmed result. A table of malformed inputs over every command, each run in-process
through ``ablate.cli.main`` against a pre-made tiny run directory whose files must not change."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest

from ablate.cli import main

TINY = ["--size", "tiny", "--context", "16", "--batch-size", "2", "--eval-points", "1", "--eval-batches", "1",
        "--budget", "5steps", "--no-track"]


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_corpus):
    """A finished tiny run (5 steps, context 16, no tracking) and the folders the cases point at."""
    root = tmp_path_factory.mktemp("bad-inputs")
    out, cache = root / "runs", root / "cache"
    argv = ["run", *TINY, "--data", str(small_corpus), "--out-dir", str(out), "--cache-dir", str(cache), "--json"]
    assert main(argv) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    (root / "a-file").write_text("not a folder\n")
    (root / "empty.txt").write_text("")
    (root / "empty-dir").mkdir()
    (root / "garbage.toml").write_text("name = [unclosed\n= = =\n")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    return {"root": root, "out": out, "cache": cache, "run_dir": run_dir, "corpus": small_corpus}


def run_case(argv, capsys) -> tuple[object, str]:
    """(exit code, stderr); the exit code is "traceback" when an exception escaped ``main``."""
    import signal
    import traceback

    def hang(*_):
        raise TimeoutError("a bad input ran for more than 60 s instead of failing fast")

    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:  # noqa: BLE001 - a traceback is what the corpus hunts
        return "traceback", "".join(traceback.format_exception(exc))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, capsys.readouterr().err


def assert_clean(code, err, argv):
    assert code != "traceback", f"traceback for {argv}:\n{err}"
    assert "Traceback" not in err, (argv, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("ablate: error:"), (argv, err)
    assert "Design:" not in err and "or None" not in err, (argv, err)  # no internal class or Python value names


def fmt(argv, w):
    return [a.format(**{k: str(v) for k, v in w.items()}) for a in argv]


# ------------------------------------------------------------------------------ the corpus
BAD_VARIANTS = [
    "", " ", "+", "rope+", "+rope", "rope++swiglu", "nope", "rope(", "rope)", "rope(base)", "rope(base=)",
    "rope(=1)", "rope(base=-1)", "rope(base=0)", "rope(base=nan)", "rope(base=inf)", "rope(base=abc)",
    "rope(bass=1)", "rope(base=1,base=2)", "gqa(kv_heads=0)", "gqa(kv_heads=-1)", "gqa(kv_heads=3)",
    "gqa(kv_heads=1.5)", "gqa(kv_heads=true)", "gqa(qk_norm=maybe)", "rmsnorm(eps=-1)", "rmsnorm(eps=0)",
    "rmsnorm(eps=nan)", "layernorm(eps=-1e-5)", "layernorm(eps=inf)", "sinusoidal(scale=nan)",
    "sinusoidal(scale=-1)", "swiglu(hidden=-1)", "swiglu(multiple_of=0)", "swiglu(multiple_of=-8)",
    "gelu(hidden=-5)", "relu(hidden=-1)", "lstm(hidden=-1)", "gru(hidden=-3)", "dropout=1.5", "dropout=-0.1",
    "dropout=nan", "dropout=1", "tie=maybe", "bias=2", "init_seed=-1", "emb_scale=yes", "rope+alibi",
    "rope+rope", "mha+gqa", "rmsnorm+layernorm", "llama+gpt2", "x" * 300, "rope(" + "1" * 400 + ")",
    "rope;rm -rf /", "../../etc/passwd", "rope\nswiglu", "rope\x00", "gqa(kv_heads=99999999999999999999)",
]
CASES: list[tuple[str, list[str]]] = []
CASES += [(f"inspect-variant-{i}", ["inspect", v, "--size", "tiny", "--vocab-size", "65"]) for i, v in enumerate(BAD_VARIANTS)]
CASES += [(f"run-variant-{i}", ["run", *TINY, "--variant", v, "--data", "{corpus}", "--out-dir", "{out}",
                                "--cache-dir", "{cache}"])
          for i, v in enumerate(["", "rope(base=-1)", "gqa(kv_heads=0)", "rmsnorm(eps=-1)", "swiglu(hidden=-1)"])]

BAD_BUDGETS = ["", "0steps", "-5steps", "1.5steps", "1e400steps", "1e400tokens", "1e400flops", "1e999s",
               "1e400min", "inf steps", "infsteps", "nan", "nansteps", "0s", "0.5steps", "5 parsecs", "steps",
               "5", "5stepss", "1e-400s", "0min", "1e309tokens", "0Ktokens", "0x10steps", "5 steps 5 steps",
               "1e30steps"]
CASES += [(f"budget-{i}", ["run", *TINY, "--budget", b, "--data", "{corpus}", "--out-dir", "{out}",
                           "--cache-dir", "{cache}"]) for i, b in enumerate(BAD_BUDGETS)]

BAD_FLAGS = [
    ["--lr", "nan"], ["--lr", "inf"], ["--lr", "-1"], ["--lr", "0"], ["--lr", "abc"], ["--min-lr", "-1"],
    ["--min-lr", "1"], ["--min-lr", "nan"], ["--beta1", "1.5"], ["--beta1", "-0.1"], ["--beta1", "1.0"],
    ["--beta1", "nan"], ["--beta2", "-0.5"], ["--beta2", "1.0"], ["--beta2", "nan"], ["--grad-clip", "-1"],
    ["--grad-clip", "nan"], ["--weight-decay", "-0.1"], ["--weight-decay", "nan"], ["--weight-decay", "inf"],
    ["--warmup", "-1"], ["--warmup", "nan"], ["--warmup", "inf"], ["--checkpoint-every", "-1"],
    ["--divergence-factor", "0"], ["--divergence-factor", "1"], ["--divergence-factor", "-1"],
    ["--divergence-factor", "nan"], ["--batch-size", "0"], ["--batch-size", "-1"], ["--batch-size", "abc"],
    ["--grad-accum", "0"], ["--eval-points", "0"], ["--eval-batches", "0"], ["--log-every", "0"],
    ["--label-smoothing", "1"], ["--label-smoothing", "-0.1"], ["--label-smoothing", "nan"],
    ["--schedule", "foo"], ["--dtype", "float16"], ["--device", "tpu"], ["--seed", "abc"], ["--seed", "-1"],
    ["--seed", "99999999999999999999"], ["--eval-seed", "18446744073709551616"], ["--eval-seed", "-1"], ["--d-model", "-64"], ["--d-model", "0.5"], ["--n-layers", "-1"],
    ["--n-heads", "-4"], ["--n-heads", "3"], ["--context", "-16"], ["--size", "nope"], ["--tokenizer", "foo"],
    ["--tokenizer", "bpe:abc"], ["--tokenizer", "bpe:0"], ["--tokenizer", "bpe:-5"], ["--val-split", "foo"],
    ["--bogus"], ["--budget"], ["--compile", "yes"], ["--init-from", "{root}/no-such-run"],
    ["--init-from", "{root}/a-file"], ["--config", "{root}/missing.toml"], ["--config", "{root}/garbage.toml"],
    ["--config", "{root}/a-file"], ["--out-dir", "{root}/a-file"], ["--cache-dir", "{root}/a-file"],
    ["--data", "{root}/no-such-file.txt"], ["--data", "{root}/empty.txt"], ["--data", "{root}/empty-dir"],
    ["--data-file", "{root}/no-such-file.txt", "--data", "tinyshakespeare"],
    ["--resume", "--force", "--resume-typo"], ["--out-dir", "/proc/no-such/runs"],
    ["--resume", "--force"], ["--no-track", "--group", "g"], ["--no-track", "--experiment", "e"],
    ["--decontaminate-n", "5"], ["--no-track", "--tracking-uri", "sqlite:///{root}/unused.db"],
]
for i, extra in enumerate(BAD_FLAGS):
    base = ["run", *TINY, "--data", "{corpus}", "--out-dir", "{out}", "--cache-dir", "{cache}"]
    CASES.append((f"run-flag-{i}-{extra[0].strip('-')}", base + extra))
CASES += [("run-tracking-uri", ["run", "--size", "tiny", "--context", "16", "--budget", "5steps", "--data",
                                "{corpus}", "--out-dir", "{out}", "--cache-dir", "{cache}", "--tracking-uri", "foo://bar"])]

CONFIGS = {
    "unknown-key": "lrr = 0.1\n", "wrong-type": "lr = \"fast\"\n", "bool-for-int": "seed = true\n",
    "nested": "[train]\nlr = 0.1\n", "nan": "lr = nan\n", "neg-beta": "beta2 = -1.0\n", "list": "seed = [1, 2]\n",
}
for name, text in CONFIGS.items():
    CASES.append((f"run-config-{name}", ["run", *TINY, "--config", "{root}/config-" + name + ".toml", "--data",
                                         "{corpus}", "--out-dir", "{out}", "--cache-dir", "{cache}"]))

CASES += [(f"sample-{i}", ["sample", *extra]) for i, extra in enumerate([
    [], ["--run", "{root}/no-such-run"], ["--run", "{root}/a-file"], ["--run", "{root}/empty-dir"],
    ["--run", "{run_dir}", "--top-k", "0"], ["--run", "{run_dir}", "--top-k", "-1"],
    ["--run", "{run_dir}", "--temperature", "0"], ["--run", "{run_dir}", "--temperature", "-1"],
    ["--run", "{run_dir}", "--temperature", "nan"], ["--run", "{run_dir}", "--temperature", "inf"],
    ["--run", "{run_dir}", "--tokens", "0"], ["--run", "{run_dir}", "--tokens", "-5"],
    ["--run", "{run_dir}", "--tokens", "abc"], ["--run", "{run_dir}", "--seed", "x"],
    ["--run", "{run_dir}", "--prompt", "\u2603\u2603"],
])]
CASES += [(f"compare-{i}", ["compare", "--no-log", *extra]) for i, extra in enumerate([
    ["--tracking-uri", "foo://bar"], ["--alpha", "0", "--tracking-uri", "foo://bar"], ["--alpha", "1.5"],
    ["--alpha", "nan"], ["--alpha", "-1"], ["--tracking-uri", "nonsense"], ["--tracking-uri", "file:///tmp/mlruns"], ["--where", "budget"], ["--where", "=x"], ["--metric", "foo"],
    ["--bogus"], ["--out", "{root}/a-file", "--tracking-uri", "foo://bar"],
    ["--tracking-uri", "http://127.0.0.1:1"],  # nothing listens: said at once (MLflow would retry for minutes)
    ["--where", "budget=20steps", "--budget", "30steps"], ["--where", "budget=30steps", "--where", "budget=20steps"],
    ["--out", "{root}/a-file"],  # before anything is loaded or printed
    ["--tracking-uri", "http://127.0.0.1:99999"],
])]
CASES += [(f"ui-{i}", ["ui", *extra]) for i, extra in enumerate([
    ["--port", "70000"], ["--port", "-1"], ["--port", "0"], ["--port", "abc"], ["--tracking-uri", "foo://bar"],
    ["--host", ""], ["--bogus"], ["--host", "192.0.2.1"], ["--host", "no-such-host.invalid"],
    ["--tracking-uri", "sqlite:////no/such/folder/mlflow.db"],
])]
CASES += [(f"registry-{i}", argv) for i, argv in enumerate([
    ["describe", "nope"], ["describe", ""], ["describe"], ["list", "nope*"], ["list", "a", "b"],
    ["inspect", "rope", "--size", "nope"], ["inspect", "rope", "--size", "tiny", "--vocab-size", "0"],
    ["inspect", "rope", "--size", "tiny", "--vocab-size", "-1"], ["inspect", "rope", "--kv-dtype", "foo"],
    ["inspect"], ["nosuchcommand"], [], ["--plugin", "{root}/no-such-plugin.py", "list"],
    ["--plugin", "{root}/a-file", "list"],
])]
CASES += [(f"bench-{i}", ["bench", *argv]) for i, argv in enumerate([
    ["mixers", "--mixers", "foo"], ["mixers", "--contexts", "abc"], ["mixers", "--contexts", "-1"],
    ["mixers", "--contexts", ""], ["mixers", "--width", "0"], ["mixers", "--width", "-8"], ["mixers", "--heads", "0"],
    ["mixers", "--batch-tokens", "0"], ["mixers", "--dtype", "foo"], ["mixers", "--warmup", "-1"],
    ["mixers", "--repeats", "0"], ["mixers", "--threads", "0"], ["attention", "--sizes", "abc"],
    ["attention", "--sizes", "0x0x0"], ["attention", "--batch", "0"], ["attention", "--repeats", "-1"], [],
    ["nope"], ["train", "--steps", "0"], ["train", "--warmup", "-1"], ["train", "--batch-size", "0"],
    ["train", "--context", "-1"], ["train", "--dtype", "float16"], ["train", "--variants", "nope"],
    ["train", "--size", "huge"], ["decode", "--prompt", "0"], ["decode", "--new-tokens", "0"],
    ["decode", "--batch", "0"], ["decode", "--repeats", "0"], ["decode", "--variants", "nope"],
    ["train", "--variants", ","], ["decode", "--variants", ""], ["decode", "--size", "tiny", "--prompt", "60"],
    ["decode", "--out", "{root}"], ["train", "--out", "{root}"], ["attention", "--out", "{root}"],
    ["train", "--out", "{root}/a-file/x.json"], ["mixers", "--out", "{root}/plot.txt"],
    ["mixers", "--out", "/proc/no/plot.png"], ["train", "--device", "mps"], ["decode", "--device", "meta"],
    ["attention", "--sizes", "64x4x0"], ["attention", "--sizes", "64x4x-3"],
])]

STUDIES = {
    "garbage": "name = [unclosed\n",
    "not-utf8": None,
    "empty": "",
    "unknown-key": 'name = "s"\nvariants = ["baseline", "rope"]\nseedz = 2\n',
    "wrong-type-seeds": 'name = "s"\nvariants = ["baseline", "rope"]\nseeds = "two"\n',
    "zero-seeds": 'name = "s"\nvariants = ["baseline", "rope"]\nseeds = 0\n',
    "neg-seeds": 'name = "s"\nvariants = ["baseline", "rope"]\nseeds = -3\n',
    "huge-seeds": 'name = "s"\nvariants = ["baseline", "rope"]\nseeds = 7674158177\n',
    "variants-str": 'name = "s"\nvariants = "rope"\n',
    "variants-num": 'name = "s"\nvariants = [1, 2]\n',
    "bad-variant": 'name = "s"\nvariants = ["baseline", "nope"]\n',
    "bad-option": 'name = "s"\nvariants = ["baseline", "gqa(kv_heads=0)"]\n',
    "bad-budget": 'name = "s"\nvariants = ["baseline", "rope"]\nbudget = "1e400steps"\n',
    "inf-budget": 'name = "s"\nvariants = ["baseline", "rope"]\nbudget = "1e999s"\n',
    "protocol": 'name = "s"\nvariants = ["baseline", "rope"]\nprotocol = "vote"\n',
    "train-unknown": 'name = "s"\nvariants = ["baseline", "rope"]\n[train]\nlrr = 1.0\n',
    "train-type": 'name = "s"\nvariants = ["baseline", "rope"]\n[train]\nlr = "fast"\n',
    "train-nan-lr": 'name = "s"\nvariants = ["baseline", "rope"]\n[train]\nlr = nan\n',
    "train-beta": 'name = "s"\nvariants = ["baseline", "rope"]\n[train]\nbeta1 = 1.5\n',
    "train-table": 'name = "s"\nvariants = ["baseline", "rope"]\ntrain = 3\n',
    "unknown-table": 'name = "s"\nvariants = ["baseline", "rope"]\n[trian]\nlr = 1.0\n',
    "name-type": 'name = 5\nvariants = ["baseline", "rope"]\n',
    "name-slash": 'name = "../../x"\nvariants = ["baseline", "rope"]\n',
    "metric": 'name = "s"\nvariants = ["baseline", "rope"]\nmetric = "accuracy!"\n',
    "baseline-missing": 'name = "s"\nvariants = ["rope", "swiglu"]\nbaseline = "alibi"\n',
    "size": 'name = "s"\nvariants = ["baseline", "rope"]\nsize = "huge"\n',
    "gpu-type": 'name = "s"\nvariants = ["baseline", "rope"]\ngpu = "yes"\n',
    "dup-key": 'name = "s"\nname = "t"\n',
}
for name in STUDIES:
    CASES.append((f"study-show-{name}", ["study", "show", "{root}/study-" + name + ".toml"]))
CASES += [(f"study-cli-{i}", ["study", *argv]) for i, argv in enumerate([
    ["show", "{root}/no-such-study.toml"], ["show", "{root}/empty-dir"], ["show"], ["frobnicate", "x"],
    ["show", "{root}/study-ok.toml", "--set", "lr"], ["show", "{root}/study-ok.toml", "--set", "lrr=1"],
    ["show", "{root}/study-ok.toml", "--set", "lr=nan"], ["show", "{root}/study-ok.toml", "--set", "seeds=0"],
    ["show", "{root}/study-ok.toml", "--set", "budget=1e400steps"],
    ["show", "{root}/study-ok.toml", "--name", "x" * 300],  # a traceback: file name too long
    ["run", "{root}/study-ok.toml", "--name", "", "--state-dir", "{root}/state"],  # ran the file's own study
    ["run", "{root}/study-ok.toml", "--workers", "0", "--state-dir", "{root}/state"],
    ["run", "{root}/study-ok.toml", "--workers", "-1", "--state-dir", "{root}/state"],
    ["run", "{root}/study-ok.toml", "--threads", "0", "--state-dir", "{root}/state"],
    ["run", "{root}/study-ok.toml", "--margin", "-1", "--until-decided", "--state-dir", "{root}/state"],
    ["run", "{root}/study-ok.toml", "--margin", "0.01", "--state-dir", "{root}/state"],  # needs --until-decided
    ["status", "{root}/study-ok.toml", "--storage", "foo://bar"],
    ["status", "{root}/study-ok.toml", "--storage", "{root}/a-file/x.journal"],
    ["status", "{root}/study-ok.toml", "--tracking-uri", "foo://bar", "--state-dir", "{root}/state"],
    ["status", "{root}/study-ok.toml", "--storage", "{root}/journal-garbage.journal"],
    ["status", "{root}/study-ok.toml", "--storage", "{root}/journal-binary.journal"],
    ["status", "{root}/study-ok.toml", "--storage", "{root}/journal-badop.journal"],
    ["status", "{root}/study-ok.toml", "--storage", "{root}/journal-middle.journal"],
    ["report", "{root}/study-ok.toml", "--storage", "{root}/journal-garbage.journal", "--no-log"],
    ["run", "{root}/study-ok.toml", "--storage", "{root}/journal-garbage.journal"],
    ["run", "{root}/study-ok.toml", "--storage", "{root}/no-such-folder/deeper/x.journal"],
    ["status", "{root}/study-ok.toml", "--storage", "{root}/no-such-folder/x.db"],
])]

CHECKPOINTS = ["truncated", "garbage", "empty", "wrong-keys", "wrong-shapes", "pickle", "other-config", "a-folder"]
CASES += [(f"checkpoint-sample-{c}", ["sample", "--run", "{root}/ckpt-" + c]) for c in CHECKPOINTS]
CASES += [(f"checkpoint-resume-{c}", ["run", *TINY, "--data", "{corpus}", "--out-dir", "{root}/ckpt-out-" + c,
                                      "--cache-dir", "{cache}", "--resume"]) for c in CHECKPOINTS]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ablate-pwned",))


def _corrupt(path: Path, kind: str, good: bytes, other: Path) -> None:
    import torch

    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "garbage":
        path.write_bytes(os.urandom(len(good)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong-keys":
        torch.save({"hello": 1}, path)
    elif kind == "wrong-shapes":
        ckpt = torch.load(other, weights_only=True)
        ckpt["model"] = {k: torch.zeros(3) for k in ckpt["model"]}
        torch.save(ckpt, path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(Evil()))
    elif kind == "other-config":
        ckpt = torch.load(other, weights_only=True)
        ckpt["config"] = dict(ckpt["config"], variant="nope-nope")
        ckpt["fingerprint"] = "0000000000"
        torch.save(ckpt, path)
    elif kind == "a-folder":
        path.unlink()
        path.mkdir()


def _journal_line(op: int, **kw) -> str:
    return json.dumps({"op_code": op, "worker_id": "w", **kw}) + "\n"


@pytest.fixture(scope="module")
def prepared(world):
    """Files the cases name: configs, study files, damaged checkpoints and journals."""
    root, run_dir = world["root"], world["run_dir"]
    for name, text in CONFIGS.items():
        (root / f"config-{name}.toml").write_text(text)
    data = f'data = "{world["corpus"]}"\nsize = "tiny"\nbudget = "5steps"\n'
    for name, text in STUDIES.items():
        path = root / f"study-{name}.toml"
        if text is None:
            path.write_bytes(b"name = \"\xff\xfe\"\n")
        else:
            path.write_text(text if text.startswith("name = \"s\"\nname") or not text else text + data)
    (root / "study-ok.toml").write_text('name = "ok"\nvariants = ["baseline", "rope"]\nseeds = 1\n' + data)
    (root / "journal-garbage.journal").write_text("this is not a journal\n")
    (root / "journal-binary.journal").write_bytes(os.urandom(300) + b"\n")
    (root / "journal-badop.journal").write_text(_journal_line(9999))
    (root / "journal-middle.journal").write_text(_journal_line(0, study_name="x", directions=[1]) + "{torn\n"
                                                 + _journal_line(0, study_name="y", directions=[1]))
    good = (run_dir / "checkpoint.pt").read_bytes()
    for kind in CHECKPOINTS:
        dest = root / f"ckpt-{kind}"
        shutil.copytree(run_dir, dest)
        _corrupt(dest / "checkpoint.pt", kind, good, run_dir / "checkpoint.pt")
        resume_dir = root / f"ckpt-out-{kind}" / run_dir.name  # the same run, killed before it finished
        shutil.copytree(dest, resume_dir)
        (resume_dir / "result.json").unlink()
    return world


@pytest.mark.parametrize("name,argv", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(name, argv, prepared, capsys, monkeypatch, tmp_path):
    import subprocess

    real_popen = subprocess.Popen

    def no_server(cmd, *a, **k):  # a bad input never starts MLflow or a worker (platform's `uname` may run)
        if any(word in str(cmd) for word in ("mlflow", "ablate")):
            raise AssertionError(f"{name}: started a process for a bad input: {cmd}")
        return real_popen(cmd, *a, **k)

    monkeypatch.setattr(subprocess, "Popen", no_server)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'unused.db'}")
    argv = fmt(argv, prepared)
    guarded = [prepared["run_dir"], *[p for p in prepared["root"].glob("ckpt-*") if p.is_dir()]]
    before = {str(g): _hashes(g) for g in guarded}
    journals = {p: p.read_bytes() for p in prepared["root"].glob("journal-*")}
    code, err = run_case(argv, capsys)
    assert_clean(code, err, argv)
    assert {str(g): _hashes(g) for g in guarded} == before, f"{name} changed an existing run"
    assert {p: p.read_bytes() for p in journals} == journals, f"{name} changed a journal"
    assert not Path("/tmp/ablate-pwned").exists()


def test_a_storage_typo_makes_no_folder_and_a_damaged_journal_names_its_line(prepared, capsys):
    """`--storage /nonexistent/dir/x.journal` made that folder tree and a new, empty study; the message for a
    damaged journal gave the position inside one record ("line 1 column 23"), not the file's line."""
    root = prepared["root"]
    code, err = run_case(["study", "run", str(root / "study-ok.toml"), "--storage", str(root / "typo/x.journal")], capsys)
    assert code == 2 and "the folder" in err and "does not exist" in err and not (root / "typo").exists()
    code, err = run_case(["study", "status", str(root / "study-ok.toml"), "--storage",
                          str(root / "journal-middle.journal")], capsys)
    assert code == 2 and "is damaged (line 2: " in err, err


def test_storage_that_is_another_kind_of_file_is_named_and_left_alone(prepared, capsys, tmp_path):
    """A study file given as --storage was "damaged ... start over with --fresh" (--fresh failed the same way);
    MLflow's database given as --storage got Optuna's tables; a missing folder in a SQLite URL was SQLAlchemy's
    "unable to open database file"."""
    import sqlite3

    root = prepared["root"]
    study = root / "study-ok.toml"
    toml = tmp_path / "copy.toml"
    toml.write_text(study.read_text())
    code, err = run_case(["study", "run", str(study), "--storage", str(toml)], capsys)
    assert code == 2 and "is not an Optuna study journal" in err and "--fresh" not in err, err
    assert toml.read_text() == study.read_text()
    mlflow_db = tmp_path / "mlflow.db"
    with sqlite3.connect(mlflow_db) as db:  # the tables that make a database MLflow's
        for table in ("experiments", "runs", "metrics"):
            db.execute(f"CREATE TABLE {table} (id INTEGER)")
    before = mlflow_db.read_bytes()
    code, err = run_case(["study", "run", str(study), "--storage", f"sqlite:///{mlflow_db}"], capsys)
    assert code == 2 and "is an MLflow tracking database" in err, err
    assert mlflow_db.read_bytes() == before
    code, err = run_case(["study", "run", str(study), "--storage", f"sqlite:///{tmp_path}/nodir/x.db"], capsys)
    assert code == 2 and f"the folder {tmp_path}/nodir does not exist" in err, err


def test_a_device_that_is_not_here_is_refused_before_the_study_is_made(prepared, capsys, tmp_path):
    """`--set device=cuda` without CUDA made the study and failed its trial 0 ("1 failed attempt(s)")."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    state = tmp_path / "state"
    code, err = run_case(["study", "run", str(prepared["root"] / "study-ok.toml"), "--set", "device=cuda",
                          "--state-dir", str(state)], capsys)
    assert code == 2 and "CUDA is not available here" in err, err
    assert not any(state.glob("*.journal")), list(state.iterdir())


def test_the_corpus_has_at_least_200_cases():
    assert len(CASES) >= 200, len(CASES)


# ----------------------------------------------------------------------- properties (hypothesis)
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ALPHABET = st.text(alphabet=st.sampled_from(list("ropeswiglu+()=,._-0123456789enaqkvhdsmlbtfxyz \t/\\\"'")),
                   max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.one_of(ALPHABET, st.text(max_size=40)))
def test_variant_parser_never_raises_anything_but_a_user_error(text):
    from ablate.errors import AblateError
    from ablate.variant import parse_variant

    try:
        parse_variant(text)
    except AblateError as err:
        assert str(err)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30),
                 st.builds(lambda n, u: f"{n}{u}", st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                                              st.integers().map(str), st.text("0123456789.eE+-", max_size=12)),
                           st.sampled_from(["steps", "tokens", "flops", "s", "min", "h", "Ksteps", "Mtokens", "Tflops", ""]))))
def test_budget_parser_gives_a_finite_positive_budget_or_a_user_error(text):
    from ablate.budget import parse_budget
    from ablate.errors import AblateError

    try:
        budget = parse_budget(text)
    except AblateError:
        return
    assert math.isfinite(budget.amount) and budget.amount > 0
    if budget.kind != "seconds":
        try:
            assert budget.total_steps(32, 1e6) >= 1
        except AblateError as err:  # less than one step: said so in one line
            assert "less than one optimizer step" in str(err) and "\n" not in str(err)


_TOML_VALUES = st.one_of(st.integers(-5, 10**20).map(str), st.floats().map(lambda f: repr(f).replace("inf", "inf")),
                         st.text(max_size=10).map(json.dumps), st.just("true"), st.just("[1, 2]"),
                         st.just('["baseline", "rope"]'), st.just("{a = 1}"))
_TOML_KEYS = st.sampled_from(["name", "variants", "seeds", "budget", "protocol", "metric", "baseline", "size",
                              "data", "tokenizer", "description", "bogus", "train.lr", "train.seed", "tune.lr",
                              "search.lr", "search.position", "gpu.size", "train.beta1"])


@settings(max_examples=150, deadline=None)
@given(entries=st.dictionaries(_TOML_KEYS, _TOML_VALUES, max_size=6), junk=st.text(max_size=20))
def test_study_parser_never_raises_anything_but_a_user_error(tmp_path_factory, entries, junk):
    from ablate.errors import AblateError
    from ablate.study import load_study

    top = [f"{k} = {v}" for k, v in entries.items() if "." not in k]
    tables: dict[str, list[str]] = {}
    for k, v in entries.items():
        if "." in k:
            t, key = k.split(".")
            tables.setdefault(t, []).append(f"{key} = {v}")
    text = "\n".join(top + [line for t, lines in tables.items() for line in [f"[{t}]", *lines]]) + "\n" + junk
    path = tmp_path_factory.mktemp("prop") / "s.toml"
    path.write_text(text)
    try:
        load_study(path)
    except AblateError as err:
        assert str(err)


# ------------------------------------------------------------- integrity, idempotence, secrets
def test_a_torn_journal_tail_is_cut_off_with_a_backup_before_anything_is_appended(tmp_path, capsys):
    from ablate.study.storage import open_storage

    path = tmp_path / "s.journal"
    storage = open_storage(str(path))
    import optuna

    optuna.create_study(storage=storage, study_name="s")
    good = path.read_bytes()
    path.write_bytes(good + _journal_line(0, study_name="t", directions=[1])[:-30].encode())  # killed mid-append
    storage = open_storage(str(path))
    assert path.read_bytes() == good
    (backup,) = tmp_path.glob("s.journal.torn-*")
    assert backup.read_bytes().startswith(good) and len(backup.read_bytes()) > len(good)
    assert "repaired the study journal" in capsys.readouterr().err
    optuna.create_study(storage=storage, study_name="u")  # appending works, and the journal reads back
    assert {s.study_name for s in optuna.get_all_study_summaries(open_storage(str(path)))} == {"s", "u"}


def test_a_finished_run_is_reported_not_retrained_unless_forced(prepared, capsys, monkeypatch):
    import ablate.train

    run_dir = prepared["run_dir"]
    before = _hashes(run_dir)
    argv = ["run", *TINY, "--data", str(prepared["corpus"]), "--out-dir", str(prepared["out"]), "--cache-dir",
            str(prepared["cache"]), "--json"]
    monkeypatch.setattr(ablate.train, "train", lambda *a, **k: pytest.fail("retrained a finished run"))
    for extra in ([], ["--resume"]):
        capsys.readouterr()
        assert main(argv + extra) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["status"] == "finished" and "--force" in err
    assert _hashes(run_dir) == before
    capsys.readouterr()
    assert main(argv + ["--force", "--resume"]) == 2  # contradictory: force used to win, silently
    assert "give one of them" in capsys.readouterr().err
    called = []
    monkeypatch.setattr(ablate.train, "train", lambda *a, **k: called.append(k) or pytest.skip("forced"))
    with pytest.raises(pytest.skip.Exception):
        main(argv + ["--force"])
    assert called == [{"resume": False}]


def test_passwords_are_redacted_in_every_printed_url(prepared, capsys):
    from ablate.urls import redact, redact_text

    assert redact("postgresql://user:s3cret@db.example:5432/optuna") == "postgresql://user:***@db.example:5432/optuna"
    assert redact("postgresql://user@host/db") == "postgresql://user@host/db"
    assert "s3cret" not in redact_text("cannot open mysql://a:s3cret@h/d and https://x/?token=s3cret&a=1")
    url = "postgresql://alice:s3cret@127.0.0.1:1/optuna"
    code, err = run_case(["study", "show", str(prepared["root"] / "study-ok.toml"), "--storage", url], capsys)
    assert code == 0
    code, err = run_case(["study", "status", str(prepared["root"] / "study-ok.toml"), "--storage", url], capsys)
    assert code == 2 and "s3cret" not in err and "alice:***@" in err, err
    capsys.readouterr()
    main(["study", "show", str(prepared["root"] / "study-ok.toml"), "--storage", url])
    out = capsys.readouterr().out
    assert "s3cret" not in out and "alice:***@127.0.0.1" in out


def test_workers_start_with_P_and_get_urls_from_the_environment(prepared):
    import argparse

    from ablate.cli.study_workers import STORAGE_ENV, worker_argv as _worker_argv, worker_env as _worker_env

    class Ctx:
        spec = argparse.Namespace(path=Path("s.toml"), name="s", gpu=False)
        storage_url, tracking_uri, experiment = "postgresql://u:s3cret@h/db", "postgresql://u:s3cret@h/ml", "e"

    args = argparse.Namespace(plugin=[], set=[], log_checkpoint=False)
    argv = _worker_argv(args, Ctx, 0, 2)
    assert argv[1:4] == ["-P", "-m", "ablate"] and not any("s3cret" in a for a in argv)
    env = _worker_env(Ctx)
    assert env[STORAGE_ENV] == Ctx.storage_url and env["MLFLOW_TRACKING_URI"] == Ctx.tracking_uri


def test_python_P_ignores_a_hostile_module_in_the_working_directory(tmp_path):
    import subprocess
    import sys

    for name in ("optuna", "mlflow", "torch"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('hostile module imported')\n")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-P", "-c", "import optuna, mlflow; import ablate.study; print('ok')"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr
    done = subprocess.run([sys.executable, "-P", "-m", "ablate", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "hostile" not in done.stderr, done.stderr
    unsafe = subprocess.run([sys.executable, "-c", "import optuna"], cwd=tmp_path, capture_output=True, text=True)
    assert "hostile module imported" in unsafe.stderr  # the threat is real without -P


@pytest.mark.parametrize("command", [["compare"], ["ui", "--port", "1"], ["sample", "--run", "0" * 32],
                                     ["export", "0" * 32, "--to", "hf", "out"]])
def test_a_damaged_tracking_database_is_one_line(command, tmp_path, capsys, monkeypatch):
    """compare and ui printed SQLAlchemy's traceback; sample and export blamed the run id."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "bad.db"
    db.write_text("not a db")
    assert main([*command, "--tracking-uri", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a SQLite database" in err, err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")  # the same store from the environment
    from ablate.errors import AblateError
    from ablate.track import client_for

    with pytest.raises(AblateError, match="is not a SQLite database"):
        client_for(None)


def test_a_set_value_is_blamed_on_set_not_the_file():
    from ablate.errors import AblateError
    from ablate.study import load_study

    study = Path(__file__).resolve().parents[1] / "studies" / "lr-search.toml"
    with pytest.raises(AblateError, match=r"^'seeds' in --set: a search trains one seed per trial"):
        load_study(study, sets=["seeds=3"])
