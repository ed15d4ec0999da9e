"""Studies: strict study files, exactly-once execution with several workers (journal file and a real
PostgreSQL), recovery from a SIGKILLed worker, tune-then-compare, search with pruning, and the
factorial analysis of the report."""

import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from ablate.cli import main
from ablate.factorial import factorial_design, factorial_effects
from ablate.study import COMPARE_KEY, K_RUN, K_SKIP, K_WORKER, Context, load_study, storage_url
from ablate.study.keys import failure_key
from ablate.study.queue import key_of, trial_point


TINY = {"size": "tiny", "context": 32, "budget": "10steps"}
TRAIN = {"batch_size": 4, "eval_points": 2, "eval_batches": 2, "log_every": 5}


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def write_study(path: Path, corpus: Path, tables: dict | None = None, **top) -> Path:
    """A study file: tiny model on the small corpus unless overridden."""
    top = {"data": str(corpus), **TINY, **top}
    tables = {"train": {**TRAIN, "cache_dir": str(path.parent / "cache"), "out_dir": str(path.parent / "runs")},
              **(tables or {})}
    lines = [f"{k} = {_toml(v)}" for k, v in top.items()]
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def trials_of(file: Path, state_dir: Path | None = None, storage: str | None = None, name: str | None = None):
    spec = load_study(file, name=name)
    ctx = Context(spec, storage_url(spec, storage, state_dir))
    return ctx, ctx.main().get_trials(deepcopy=False)


def assert_exactly_once(trials, expected_keys: set[str]) -> None:
    from optuna.trial import TrialState

    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    done = Counter(key_of(trial_point(t), COMPARE_KEY) for t in trials
                   if t.state == TrialState.COMPLETE and not t.user_attrs.get(K_SKIP))
    assert set(done) == expected_keys, f"missing {expected_keys - set(done)}"
    assert all(n == 1 for n in done.values()), f"run twice: {[k for k, n in done.items() if n > 1]}"


def mlflow_children(uri: str, parent: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ablate")
    return client, client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")


def finished_per_key(runs) -> Counter:
    return Counter((r.data.tags["ablate.variant"], int(r.data.tags["ablate.seed"])) for r in runs
                   if r.info.status == "FINISHED")


# ------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "top,tables,needles",
    [
        ({"seed": 3, "variants": ["baseline", "rope"]}, None, ["'seed'", "did you mean 'seeds'"]),
        ({"variants": ["baseline", "rope"]}, {"train": {"batchsize": 4}}, ["batchsize", "batch_size"]),
        ({"protocol": "grid", "variants": ["baseline", "rope"]}, None, ["protocol", "'grid'", "compare"]),
        ({"variants": ["rope", "swiglu"]}, None, ["baseline", "not among the variants"]),
        ({"variants": ["baseline", "ropee"]}, None, ["variants[1]", "did you mean rope"]),
        ({"variants": ["baseline", "rope"], "seeds": 0}, None, ["seeds", "at least 1"]),
        ({"variants": ["baseline", "rope"], "metric": "accuracy"}, None, ["metric", "val_bpb"]),
        ({"variants": ["baseline", "rope"], "budget": "lots"}, None, ["cannot read budget"]),
        ({"variants": ["baseline", "rope"]}, {"train": {"seed": 1}}, ["train.seed", "set by the study"]),
        ({"variants": ["baseline", "rope"]}, {"search": {"lr": [1e-3, 3e-3]}}, ["search.lr", "tune-then-compare"]),
        ({"variants": ["baseline"]}, {"search": {"position": ["learned", "swiglu"]}}, ["search.position", "swiglu"]),
        ({"protocol": "search", "seeds": 3}, {"search": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
         ["seeds", "one seed per trial"]),
        ({"protocol": "search", "seeds": 1}, {"search": {"lr": {"low": 1e-2, "high": 1e-4}}}, ["search.lr", "low < high"]),
        ({"protocol": "search", "seeds": 1}, {"search": {"lr": {"low": 1e-4, "hi": 1e-2}}}, ["search.lr.hi"]),
        ({"protocol": "search", "seeds": 1}, {"search": {"mlp": ["gelu"], "pruner": "optimal"}}, ["search.pruner"]),
        ({"protocol": "tune-then-compare", "variants": ["baseline", "rope"]}, None, ["tune", "[tune] table"]),
        ({"variants": ["baseline", "rope"]}, {"tune": {"lr": [1e-3]}}, ["tune", "tune-then-compare"]),
        ({"protocol": "tune-then-compare", "variants": ["baseline", "rope"]}, {"tune": {"lr": [1e-3], "trails": 3}},
         ["tune.trails", "trials"]),
    ],
)
def test_bad_study_files_name_the_key_and_the_file(top, tables, needles, small_corpus, tmp_path, capsys):
    file = write_study(tmp_path / "bad.toml", small_corpus, tables, **top)
    assert main(["study", "show", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(file) in err or "--set" in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_a_study_not_made_yet_says_the_command_that_makes_it(small_corpus, tmp_path, capsys):
    file = write_study(tmp_path / "made.toml", small_corpus, {"gpu": {"batch_size": 4}}, variants=["baseline", "rope"])
    for extra, command in (([], f"run `ablate study run {file}` first"),
                           (["--name", "other"], f"run `ablate study run {file} --name other` first"),
                           (["--gpu"], f"run `ablate study run {file} --gpu` first")):
        assert main(["study", "status", str(file), "--state-dir", str(tmp_path / "none"), *extra]) == 2
        assert command in capsys.readouterr().err


def test_plan_of_a_factorial_and_gpu_overrides(small_corpus, tmp_path, capsys):
    file = write_study(tmp_path / "f.toml", small_corpus,
                       {"search": {"position": ["learned", "rope"], "mlp": ["gelu", "swiglu"]},
                        "gpu": {"size": "cpu", "batch_size": 64}})
    spec = load_study(file)
    assert spec.variants == ("baseline", "swiglu", "rope", "rope+swiglu")
    assert factorial_design(list(spec.variants), "baseline")
    gpu = load_study(file, gpu=True, sets=["budget=20steps", "seeds=[4, 5]"])
    assert gpu.name == "f-gpu" and gpu.config.size == "cpu" and gpu.config.batch_size == 64
    assert gpu.config.budget == "20steps" and gpu.seeds == (4, 5) and gpu.fingerprint() != spec.fingerprint()
    assert main(["study", "show", str(file)]) == 0
    assert "rope+swiglu" in capsys.readouterr().out
    plain = write_study(tmp_path / "plain.toml", small_corpus)
    assert main(["study", "run", str(plain), "--gpu", "--state-dir", str(tmp_path)]) == 2  # nothing to apply
    assert "has no [gpu] table, so --gpu would change nothing" in capsys.readouterr().err
    assert not (tmp_path / "plain-gpu.journal").exists()
    from ablate.errors import AblateError

    typo = write_study(tmp_path / "typo.toml", small_corpus, {"gpu": {"batch_sise": 64}})
    with pytest.raises(AblateError, match="gpu.batch_sise"):  # checked without --gpu too: "every key is checked"
        load_study(typo)
    assert load_study(file).config.batch_size != 64  # and applied with --gpu only
    for bad, words in (({"size": "gpt2-smal"}, "unknown size 'gpt2-smal'"), ({"budget": "10 minits"}, "budget"),
                       ({"batch_size": 0}, "--batch-size")):
        with pytest.raises(AblateError, match=f"\\[gpu\\]: .*{words}"):  # values too, not only names
            load_study(write_study(tmp_path / "bad.toml", small_corpus, {"gpu": bad}))


# ------------------------------------------------------------------------------------- workers
def test_two_workers_on_a_journal_run_every_trial_once_then_resume_and_report(small_corpus, tmp_path, mlflow_uri,
                                                                            capsys):
    file = write_study(tmp_path / "two.toml", small_corpus, name="two-journal", seeds=4,
                       variants=["baseline", "rope"])
    argv = ["study", "run", str(file), "--workers", "2", "--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)]
    assert main(argv) == 0
    ctx, trials = trials_of(file, tmp_path)
    expected = {key_of({"variant": v, "seed": s}, COMPARE_KEY) for v in ("baseline", "rope") for s in range(4)}
    assert_exactly_once(trials, expected)
    workers = {t.user_attrs[K_WORKER]["pid"] for t in trials if not t.user_attrs.get(K_SKIP)}
    assert len(workers) == 2  # both worker processes trained
    _, runs = mlflow_children(mlflow_uri, ctx.main().user_attrs["ablate.mlflow_parent"])
    assert set(finished_per_key(runs).values()) == {1} and len(finished_per_key(runs)) == 8

    # re-running resumes a finished study: nothing runs again
    n = len(trials)
    assert main(argv[:3] + ["--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)]) == 0
    assert len(trials_of(file, tmp_path)[1]) == n
    # other settings under the same name are refused
    capsys.readouterr()
    assert main(argv + ["--set", "budget=12steps"]) == 2
    assert "--name NEW" in capsys.readouterr().err

    assert main(["study", "report", str(file), "--state-dir", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "rope" in out and "baseline" in out and "verdict" in out and "ablate ui" in out
    assert (tmp_path / "rep" / "report.md").is_file()
    # a report with other settings than the study's names them instead of calling its seeds unfinished
    assert main(["study", "report", str(file), "--state-dir", str(tmp_path), "--set", "budget=12steps"]) == 2
    err = capsys.readouterr().err
    assert "was made with other settings" in err and "not finished yet" not in err
    assert main(["study", "status", str(file), "--state-dir", str(tmp_path), "--set", "budget=12steps"]) == 2
    assert "was made with other settings" in capsys.readouterr().err
    # the variants listed in another order are the same comparison
    write_study(file, small_corpus, name="two-journal", seeds=4, variants=["rope", "baseline"], baseline="baseline")
    assert main(["study", "status", str(file), "--state-dir", str(tmp_path)]) == 0
    assert "8 done of 8" in capsys.readouterr().out
    write_study(file, small_corpus, name="two-journal", seeds=4, variants=["rope", "baseline"], baseline="rope")
    assert main(["study", "status", str(file), "--state-dir", str(tmp_path)]) == 2  # another baseline is not
    err = capsys.readouterr().err
    assert "was made with other settings (baseline: 'baseline' -> 'rope' (ablate compare --baseline rope" in err
    assert "variants:" not in err  # the variants did not change: their order was the message before


def _postgres_bin() -> Path | None:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (from the Debian package), stopped by pid afterwards."""
    pg = _postgres_bin()
    if pg is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql); skipping the RDB worker test")
    pytest.importorskip("psycopg2")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="ablate-pg-"))  # under /tmp: the postgres user must reach it
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser; cannot start PostgreSQL as the postgres user")
        shutil.chown(folder, "postgres")
        as_user = [runuser, "-u", "postgres", "--"]
    port = _free_port()
    proc = None
    try:
        subprocess.run([*as_user, str(pg / "initdb"), "-D", str(folder / "data"), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        proc = subprocess.Popen([*as_user, str(pg / "postgres"), "-D", str(folder / "data"), "-p", str(port),
                                 "-k", str(folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import psycopg2

        deadline = time.time() + 60
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE ablate_test")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/ablate_test"
    finally:
        if proc is not None:
            pid_file = folder / "data" / "postmaster.pid"
            try:  # the postmaster's own pid (runuser sits in between): SIGINT is a fast shutdown
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
            except (OSError, ValueError, IndexError):
                proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_on_postgresql_run_every_trial_once(postgres_url, small_corpus, tmp_path, mlflow_uri):
    file = write_study(tmp_path / "pg.toml", small_corpus, name="two-postgres", seeds=3,
                       variants=["baseline", "rope"])
    argv = ["study", "run", str(file), "--workers", "2", "--storage", postgres_url, "--tracking-uri", mlflow_uri]
    assert main(argv) == 0
    ctx, trials = trials_of(file, storage=postgres_url)
    expected = {key_of({"variant": v, "seed": s}, COMPARE_KEY) for v in ("baseline", "rope") for s in range(3)}
    assert_exactly_once(trials, expected)
    assert len({t.user_attrs[K_WORKER]["pid"] for t in trials if not t.user_attrs.get(K_SKIP)}) == 2
    _, runs = mlflow_children(mlflow_uri, ctx.main().user_attrs["ablate.mlflow_parent"])
    assert set(finished_per_key(runs).values()) == {1} and len(finished_per_key(runs)) == 6


def test_a_sigkilled_worker_loses_nothing_and_repeats_nothing(small_corpus, tmp_path, mlflow_uri):
    from optuna.trial import TrialState

    file = write_study(tmp_path / "kill.toml", small_corpus, name="killed", seeds=2, budget="60steps",
                       variants=["baseline", "rope"])
    argv = ["study", "run", str(file), "--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "ablate", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = None
    deadline = time.time() + 120
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
            try:
                _, trials = trials_of(file, tmp_path)
            except Exception:  # the study is not created yet
                continue
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            victim = next((t for t in trials if t.state == TrialState.RUNNING and K_RUN in t.user_attrs
                           and done), None)  # mid-trial, after one trial finished
        assert victim is not None, "no trial was observed running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ctx, trials = trials_of(file, tmp_path)
    assert next(t for t in trials if t.number == victim.number).state == TrialState.RUNNING  # left behind
    parent = ctx.main().user_attrs["ablate.mlflow_parent"]

    assert main(argv) == 0  # re-running finishes the study
    ctx, trials = trials_of(file, tmp_path)
    expected = {key_of({"variant": v, "seed": s}, COMPARE_KEY) for v in ("baseline", "rope") for s in range(2)}
    assert_exactly_once(trials, expected)
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL and "gone" in ctx.main().user_attrs[failure_key(killed.number)]
    client, runs = mlflow_children(mlflow_uri, parent)
    killed_run = client.get_run(victim.user_attrs[K_RUN])
    assert killed_run.info.status == "FAILED" and killed_run.data.tags["ablate.status"] == "failed"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert set(finished_per_key(runs).values()) == {1} and len(finished_per_key(runs)) == 4


# ------------------------------------------------------------------------------------- protocols
def test_tune_then_compare_uses_each_variants_best_lr(small_corpus, tmp_path, mlflow_uri, capsys):
    from optuna.trial import TrialState

    file = write_study(tmp_path / "ttc.toml", small_corpus, {"tune": {"lr": [1e-3, 1e-2], "seed": 7}},
                       name="ttc", protocol="tune-then-compare", seeds=2, variants=["baseline", "swiglu"])
    assert main(["study", "run", str(file), "--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)]) == 0
    ctx, trials = trials_of(file, tmp_path)
    from ablate.study import best_lrs, tuning_table

    best = best_lrs(ctx)
    table = {row["variant"]: row for row in tuning_table(ctx)}
    for variant in ("baseline", "swiglu"):
        tried = table[variant]["tried"]
        assert [lr for lr, _, _ in tried] == [1e-3, 1e-2]
        assert best[variant] == min(tried, key=lambda r: r[1])[0]
    compare = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(compare) == 4 and all(t.user_attrs["lr"] == best[t.params["variant"]] for t in compare)
    assert all(set(t.params) == {"variant"} for t in compare)  # the tuned lr follows the variant: not a param
    capsys.readouterr()
    assert main(["study", "report", str(file), "--state-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "learning-rate tuning" in out and "chosen lr" in out
    assert main(["study", "report", str(file), "--state-dir", str(tmp_path), "--out", str(tmp_path / "r"), "--no-log",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["variant"] for r in report["rows"]] == ["baseline", "swiglu"]
    tuning = next(t for t in report["tables"] if t["title"].startswith("learning-rate tuning"))
    assert [r["variant"] for r in tuning["rows"]] == ["baseline", "swiglu"]


def test_tune_then_compare_can_tune_warmup_with_the_lr(small_corpus, tmp_path, mlflow_uri, capsys):
    from optuna.trial import TrialState

    from ablate.study.progress import best_settings

    file = write_study(tmp_path / "tw.toml", small_corpus, {"tune": {"lr": [1e-3, 1e-2], "warmup": [0.0, 0.3],
                                                                      "seed": 7}},
                       name="tw", protocol="tune-then-compare", seeds=1, variants=["baseline", "swiglu"])
    assert main(["study", "run", str(file), "--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)]) == 0
    ctx, trials = trials_of(file, tmp_path)
    tune = ctx.load("tw:tune").get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert sorted((t.params["variant"], t.params["lr"], t.params["warmup"]) for t in tune) == sorted(
        (v, lr, w) for v in ("baseline", "swiglu") for lr in (1e-3, 1e-2) for w in (0.0, 0.3))
    best = best_settings(ctx)
    for variant in ("baseline", "swiglu"):
        mine = [t for t in tune if t.params["variant"] == variant]
        winner = min(mine, key=lambda t: t.value)
        assert best[variant] == {"lr": winner.params["lr"], "warmup": winner.params["warmup"]}
    compare = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(compare) == 2
    assert all({"lr": t.user_attrs["lr"], "warmup": t.user_attrs["warmup"]} == best[t.params["variant"]]
               for t in compare)
    capsys.readouterr()
    assert main(["study", "report", str(file), "--state-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    assert "chosen lr, warmup" in capsys.readouterr().out


def test_search_prunes_and_reports_importances(small_corpus, tmp_path, mlflow_uri, capsys):
    from optuna.trial import TrialState

    file = write_study(tmp_path / "search.toml", small_corpus,
                       {"search": {"position": ["learned", "rope"], "lr": {"low": 3e-4, "high": 1e-2, "log": True},
                                   "trials": 4, "startup_trials": 2, "pruner": "median"},
                        "train": {**TRAIN, "eval_points": 4, "cache_dir": str(tmp_path / "cache"),
                                  "out_dir": str(tmp_path / "runs")}},
                       name="search", protocol="search", seeds=[0], budget="16steps")
    assert main(["study", "run", str(file), "--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)]) == 0
    _, trials = trials_of(file, tmp_path)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert all(set(t.params) == {"position", "lr"} for t in finished)
    assert all(t.intermediate_values for t in finished)  # every eval after step 0 was reported to the pruner
    capsys.readouterr()
    assert main(["study", "report", str(file), "--state-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "best trials" in out and ("parameter importances" in out)
    figures = list((tmp_path / "r").glob("importances-*.png"))  # drawn, not only printed
    assert figures and figures[0].read_bytes().startswith(b"\x89PNG")
    assert f"]({figures[0].name})" in (tmp_path / "r" / "report.md").read_text()
    assert main(["study", "report", str(file), "--state-dir", str(tmp_path), "--out", str(tmp_path / "r"), "--no-log",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # only JSON on stdout
    assert report["protocol"] == "search" and len(report["rows"]) == 4 and report["rows"][0]["rank"] == "1"
    assert report["importances"] and set(report["importances"][0]["importances"]) <= {"position", "lr"}
    assert set(report["best"]["params"]) <= {"lr"} and report["best"]["val_loss"] > 0


# ------------------------------------------------------------------------------------- factorial
def test_factorial_effects_recover_main_effects_and_the_interaction():
    import numpy as np

    variants = ["baseline", "rope", "rmsnorm", "swiglu", "rope+rmsnorm", "rope+swiglu", "rmsnorm+swiglu",
                "rope+rmsnorm+swiglu"]
    factors = factorial_design(variants, "baseline")
    assert [f.high for f in factors] == ["rope", "rmsnorm", "swiglu"]
    assert factorial_design(["baseline", "rope", "swiglu"], "baseline") is None  # not a full 2^2
    assert factorial_design(["baseline", "rope", "alibi", "rope+swiglu"], "baseline") is None

    rng = np.random.default_rng(0)
    truth = {"rope": -0.10, "rmsnorm": -0.02, "swiglu": -0.06}
    synergy = -0.04  # rope+swiglu together gain 0.04 more than the sum of their gains
    rows = []
    for seed in range(4):
        seed_shift = rng.normal(0, 0.05)
        for v in variants:
            parts = set(v.split("+")) - {"baseline"}
            y = 3.0 + seed_shift + sum(truth[p] for p in parts)
            if {"rope", "swiglu"} <= parts:
                y += synergy
            rows.append((v, seed, y + rng.normal(0, 0.003)))
    result = factorial_effects(rows, factors)
    effects = {e.term: e for e in result.effects}
    # main effects average over the other factors: rope and swiglu each carry half the synergy
    assert effects["rope"].estimate == pytest.approx(truth["rope"] + synergy / 2, abs=0.01)
    assert effects["rmsnorm"].estimate == pytest.approx(truth["rmsnorm"], abs=0.01)
    assert effects["rope x swiglu"].estimate == pytest.approx(synergy, abs=0.01)
    assert effects["rope x swiglu"].high < 0  # detected: more than the sum of its parts
    for term in ("rope x rmsnorm", "rmsnorm x swiglu", "rope x rmsnorm x swiglu"):
        assert effects[term].low < 0 < effects[term].high  # no interaction there
    observed, summed, gap = result.additivity
    assert observed.estimate == pytest.approx(sum(truth.values()) + synergy, abs=0.01)
    assert summed.estimate == pytest.approx(sum(truth.values()), abs=0.01)
    assert gap.estimate == pytest.approx(synergy, abs=0.01) and gap.high < 0
    assert result.df == len(rows) - 8 - 3


def test_reaper_fails_trials_of_dead_or_silent_workers_and_queues_them_again(small_corpus, tmp_path, mlflow_uri, capsys):
    from optuna.trial import TrialState

    from ablate.study import K_BEAT, create, reap, worker_identity

    file = write_study(tmp_path / "reap.toml", small_corpus, name="reap", seeds=2, variants=["baseline", "rope"])
    spec = load_study(file)
    ctx = Context(spec, storage_url(spec, None, tmp_path), tracking_uri=mlflow_uri, echo=lambda _: None)
    create(ctx)
    study = ctx.main()
    now = time.time()
    dead = study.ask()  # pops queued trials, as a worker would
    dead.set_user_attr(K_WORKER, {**worker_identity(), "pid": 2 ** 22 + 7})  # this machine, no such process
    silent = study.ask()
    silent.set_user_attr(K_WORKER, {"host": "elsewhere", "boot": "x", "pid": 1, "start": ""})
    silent.set_user_attr(K_BEAT, now - 10_000)
    alive = study.ask()
    alive.set_user_attr(K_WORKER, {"host": "elsewhere", "boot": "x", "pid": 1, "start": ""})
    alive.set_user_attr(K_BEAT, now)
    capsys.readouterr()
    assert main(["study", "status", str(file), "--state-dir", str(tmp_path)]) == 0  # says so, changes nothing
    lines = {int(line.split()[1]): line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("trial ")}
    assert "its worker is gone" in lines[dead.number] and "gone" not in lines[alive.number] + lines[silent.number]
    assert "{" not in lines[dead.number] and " seed " in lines[dead.number]  # "(rope seed 0)", not a Python dict
    assert {t.state for t in ctx.main().get_trials(deepcopy=False) if t.number in lines} == {TrialState.RUNNING}
    reaped = reap(ctx)
    assert sorted(reaped[spec.name]) == sorted([dead.number, silent.number])
    states = {t.number: t for t in ctx.main().get_trials(deepcopy=False)}
    assert states[dead.number].state == states[silent.number].state == TrialState.FAIL
    why = ctx.main().user_attrs
    assert "gone" in why[failure_key(dead.number)]
    assert "no heartbeat" in why[failure_key(silent.number)]
    assert states[alive.number].state == TrialState.RUNNING
    waiting = {key_of(trial_point(t), COMPARE_KEY) for t in states.values() if t.state == TrialState.WAITING}
    assert key_of(trial_point(dead), COMPARE_KEY) in waiting and key_of(trial_point(silent), COMPARE_KEY) in waiting
    assert reap(ctx) == {}  # nothing twice


def test_the_factorial_table_calls_effects_unstable_when_a_cell_stalled(tmp_path):
    """The verdict table's rule holds in the factorial table: no helps/hurts reading over stalled cells."""
    import io
    from types import SimpleNamespace

    import numpy as np
    from rich.console import Console

    from ablate.report.build import RunRecord
    from ablate.report.study import factorial_section

    variants = ["baseline", "rope", "swiglu", "rope+swiglu"]
    factors = factorial_design(variants, "baseline")
    rng = np.random.default_rng(0)
    records = [RunRecord(f"{v}-{s}", v, s, 3.0 - 0.2 * ("rope" in v) + rng.normal(0, 0.001))
               for s in range(4) for v in variants]
    console = Console(file=io.StringIO(), width=200)
    for shaky, expect in ((False, "helps"), (True, "unstable (rope: diverged or stalled seeds)")):
        rows = [SimpleNamespace(variant=v, unstable=shaky and v == "rope") for v in variants[1:]]
        md, _ = factorial_section(SimpleNamespace(level=0.95, rows=rows), records, factors, "val_loss", console,
                                  tmp_path)
        assert expect in md
    assert "helps" not in md and "hurts" not in md


@pytest.mark.parametrize("workers,how", [(1, "term"), (2, "term"), (1, "ctrl-c"), (2, "ctrl-c")])
def test_sigterm_stops_a_study_with_143_and_no_verdict_hint(small_corpus, tmp_path, mlflow_uri, workers, how):
    """What a job scheduler sends: the trials are closed (none left RUNNING), the study says how to resume,
    exit 143; in this process (1 worker) as with worker processes. Ctrl-C at a terminal (SIGINT to the whole
    process group) exits 130 and says it once, with the same hint (each worker used to print 'interrupted')."""
    import subprocess
    import sys
    import time

    from optuna.trial import TrialState

    name = f"term{workers}"
    file = write_study(tmp_path / f"{name}.toml", small_corpus, name=name, seeds=2, variants=["baseline", "rope"],
                       budget="100000steps")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ablate", "study", "run", str(file), "--workers", str(workers),
                             "--threads", "1", "--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if sum("started" in seen for seen in lines) == workers:  # every worker is training
            time.sleep(1)
            if how == "term":
                proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == (143 if how == "term" else 130), out[-2000:]
    assert out.count("the finished trials are kept, run the same command to resume") == 1, out[-2000:]
    assert out.count("ablate: interrupted") == (how == "ctrl-c") and "verdict:" not in out and "Traceback" not in out
    spec = load_study(file)
    ctx = Context(spec, storage_url(spec, None, tmp_path), tracking_uri=mlflow_uri, echo=lambda _: None)
    assert not [t for t in ctx.main().get_trials(deepcopy=False) if t.state == TrialState.RUNNING]


@pytest.mark.parametrize("setting,needle", [
    ('variants=["baseline","rope"]', "variants is part of the study's design, which --set does not change; edit"),
    ("metric=val_bpb", "metric is part of the study's design"),
    ("name=other", "give --name NEW"),
    ("lrr=0.1", "unknown setting; did you mean 'lr'?"),
])
def test_set_names_what_it_cannot_change(small_corpus, tmp_path, setting, needle):
    """`--set variants=[...]` said "unknown setting; did you mean 'eval_points'?"."""
    from ablate.errors import AblateError

    file = write_study(tmp_path / "s.toml", small_corpus)
    with pytest.raises(AblateError, match=re.escape(needle)):
        load_study(file, sets=[setting])
