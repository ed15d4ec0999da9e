import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.config import RunConfig
from ablate.track import MLflowTracker
from ablate.train import Callback, train
from conftest import tiny_run_args


def _config(corpus, tmp, **kw):
    base = dict(size="tiny", context=32, data=str(corpus), budget="10steps", batch_size=4, eval_points=2,
                eval_batches=2, out_dir=str(tmp / "runs"), cache_dir=str(tmp / "cache"), log_every=5)
    base.update(kw)
    return RunConfig(**base)


def _runs(uri, experiment, filter_string=""):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], filter_string)


def test_a_tracked_run_has_everything_to_reproduce_it(mlflow_uri, small_corpus, tmp_path, capsys):
    argv = ["run", "--variant", "rope+swiglu", "--seed", "3", "--tracking-uri", mlflow_uri, "--experiment", "t-full",
            *tiny_run_args(small_corpus, tmp_path)]
    assert main(argv) == 0
    client, runs = _runs(mlflow_uri, "t-full")
    (run,) = runs
    assert run.info.run_name == "rope+swiglu seed 3" and run.info.status == "FINISHED"  # one row per seed in the UI
    p, t, m = run.data.params, run.data.tags, run.data.metrics
    assert p["variant.position.component"] == "rope" and p["variant.position.base"] == "10000.0"
    assert p["variant.mlp.multiple_of"] == "8" and p["config.budget"] == "10steps" and p["config.lr"] == "0.001"
    assert p["dims.d_model"] == "64" and p["config.tokenizer"] == "char" and "optimizer" in p
    assert t["ablate.variant"] == "rope+swiglu" and len(t["ablate.variant_hash"]) == 12
    assert t["ablate.slot.position"] == "rope" and t["ablate.slot.norm"] == "layernorm"
    assert t["ablate.seed"] == "3" and t["ablate.dataset_hash"] and t["ablate.device"] == "cpu"
    assert t["ablate.code_version"] and json.loads(t["ablate.plugins"]) == []
    assert t["ablate.status"] == "finished"
    for key in ("final_val_loss", "final_val_bpb", "params", "flops_per_token", "kv_cache_bytes_per_token",
                "mfu", "decode_tokens_per_s"):
        assert f"summary/{key}" in m  # once-per-run figures in their own chart section
    history = {k: client.get_metric_history(run.info.run_id, k) for k in
               ("eval/val_loss", "eval/val_bpb", "train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s",
                "train/tokens_seen")}
    assert all(history.values())
    # MLflow's chart view: one section per prefix, in name order; the evaluation curves come first
    assert sorted({k.split("/")[0] for k in m}) == ["eval", "summary", "train"]
    assert [h.step for h in history["eval/val_loss"]] == [0, 5, 10]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"resolved_config.json", "sample.txt", "loss_curve.png", "result.json", "checkpoint"} <= artifacts


class Boom(Callback):
    def __init__(self, error):
        self.error = error

    def on_eval(self, run, row):
        if run.step > 0:
            raise self.error


@pytest.mark.parametrize("error,status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_failed_or_interrupted_runs_are_never_left_running(mlflow_uri, small_corpus, tmp_path, error, status):
    tracker = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-fail", log_checkpoint=False)
    with pytest.raises(type(error)):
        train(_config(small_corpus, tmp_path), [tracker, Boom(error)])
    run = MlflowClient(mlflow_uri).get_run(tracker.run_id)
    assert run.info.status == status


class SecondCtrlC(Callback):
    """Ctrl-C pressed again while the interrupted run saves its result (people press it twice)."""

    def on_end(self, run, result):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGINT)


def test_a_second_ctrl_c_while_stopping_loses_nothing(mlflow_uri, small_corpus, tmp_path):
    """The second Ctrl-C cut the stopping run short: no result.json, its MLflow run left RUNNING."""
    tracker = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-twice", log_checkpoint=False)
    config = _config(small_corpus, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train(config, [Boom(KeyboardInterrupt()), SecondCtrlC(), tracker])
    run = MlflowClient(mlflow_uri).get_run(tracker.run_id)
    assert run.info.status == "KILLED" and run.data.tags["ablate.status"] == "interrupted"
    from ablate.train import run_dir_for

    assert json.loads((run_dir_for(config) / "result.json").read_text())["status"] == "interrupted"


def test_ctrl_c_while_a_finished_run_saves_its_result_stops_after_it(mlflow_uri, small_corpus, tmp_path):
    """Ctrl-C during a finished run's last logging left its MLflow run RUNNING: in a study, the trial was then
    failed ("its worker died") and trained again. The run now finishes saving and returns its result; the stop
    is left for whoever runs the next one (a study's worker stops before its next trial)."""
    from ablate import interrupts
    from ablate.study.execute import stop_if_asked

    tracker = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-late", log_checkpoint=False)
    config = _config(small_corpus, tmp_path)
    assert train(config, [SecondCtrlC(), tracker]).status == "finished"
    assert interrupts.PENDING.is_set()
    with pytest.raises(KeyboardInterrupt):
        stop_if_asked()
    interrupts.PENDING.clear()
    run = MlflowClient(mlflow_uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ablate.status"] == "finished"
    from ablate.train import run_dir_for

    assert json.loads((run_dir_for(config) / "result.json").read_text())["status"] == "finished"


def test_ctrl_c_again_while_saving_abandons_it(capsys):
    """Held signals must leave a way out: MLflow retrying a dead server can take minutes."""
    import time

    from ablate import interrupts

    with pytest.raises(KeyboardInterrupt):
        with interrupts.held():
            os.kill(os.getpid(), signal.SIGINT)  # held, and said
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)  # acted on at once
            time.sleep(1)
            pytest.fail("the second Ctrl-C was held too")
    assert "Ctrl-C again abandons them" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_diverged_run_is_marked_failed(mlflow_uri, small_corpus, tmp_path):
    tracker = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-div", log_checkpoint=False)
    result = train(_config(small_corpus, tmp_path, lr=50.0, min_lr=0.0, warmup=0.0, grad_clip=0.0,
                           budget="60steps"), [tracker])
    run = MlflowClient(mlflow_uri).get_run(tracker.run_id)
    assert result.status == "diverged"
    assert run.info.status == "FAILED" and run.data.tags["ablate.status"] == "diverged"


def test_compare_end_to_end(mlflow_uri, small_corpus, tmp_path, capsys):
    for variant in ("baseline", "rope", "swiglu"):
        for seed in (0, 1):
            argv = ["run", "--variant", variant, "--seed", str(seed), "--tracking-uri", mlflow_uri,
                    "--experiment", "t-cmp", "--group", "g", "--no-log-checkpoint", "--json",
                    *tiny_run_args(small_corpus, tmp_path, "20steps")]
            assert main(argv) == 0
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["compare", "--tracking-uri", mlflow_uri, "--experiment", "t-cmp", "--group", "g",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for word in ("baseline", "rope", "swiglu", "p (Holm)", "noise floor"):
        assert word in text
    report = (out / "report.md").read_text()
    assert "`rope`" in report and "paired t-test" in report
    assert (out / "differences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client, parents = _runs(mlflow_uri, "t-cmp", "tags.`ablate.group` = 'g'")
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/report.md" in logged
    _, children = _runs(mlflow_uri, "t-cmp", f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert len(children) == 6  # nested under the group, so MLflow's compare view shows them together

    import csv
    import io

    common = ["compare", "--tracking-uri", mlflow_uri, "--experiment", "t-cmp", "--group", "g", "--no-log",
              "--out", str(tmp_path / "r2")]
    assert main(common + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert main(common + ["--csv"]) == 0  # the same table, comma-separated, nothing else on stdout
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert [dict(zip(table[0], r)) for r in table[1:]] == rows
    assert [r[0] for r in table[1:]] == ["baseline", "rope", "swiglu"]


def test_compare_errors(mlflow_uri, capsys):
    assert main(["compare", "--tracking-uri", mlflow_uri, "--experiment", "nope"]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err
    missing = Path(mlflow_uri[len("sqlite:///"):]).parent / "absent" / "mlflow.db"
    assert main(["compare", "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not missing.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_runs_over_rest(mlflow_uri, small_corpus, tmp_path):
    tracker = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-ui", log_checkpoint=False)
    train(_config(small_corpus, tmp_path), [tracker])
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ablate", "ui", "--tracking-uri", mlflow_uri, "--experiment", "t-ui",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        runs_page = proc.stdout.readline()  # the experiment's runs as charts, in the model-training view
        assert f"http://127.0.0.1:{port}/#/experiments/" in runs_page and "workflowType=machine_learning" in runs_page
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=t-ui", timeout=2) as r:
                    exp_id = json.load(r)["experiment"]["experiment_id"]
                break
            except OSError:
                assert time.time() < deadline, "MLflow UI did not come up in 60 s"
                time.sleep(0.5)
        body = json.dumps({"experiment_ids": [exp_id]}).encode()
        req = urllib.request.Request(f"{base}/runs/search", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            (run,) = json.load(r)["runs"]
        assert run["info"]["run_id"] == tracker.run_id
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert params["variant.position.component"] == "learned" and "summary/final_val_loss" in metrics
        with urllib.request.urlopen(f"{base}/artifacts/list?run_id={tracker.run_id}", timeout=10) as r:
            files = {f["path"] for f in json.load(r).get("files", [])}
        assert {"sample.txt", "loss_curve.png", "resolved_config.json"} <= files
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    # SIGTERM stops the UI and the server it started: nothing listens on the port any more
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_ui_killed_outright_leaves_no_server_on_its_port(mlflow_uri):
    """`kill -9` of `ablate ui` left MLflow's server, uvicorn and huey running on the port (their own session);
    a watchdog now stops them when the ui process is gone."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ablate", "ui", "--tracking-uri", mlflow_uri, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        deadline = time.time() + 60
        while True:  # the server is up
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.time() < deadline, "MLflow UI did not come up in 60 s"
            time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait(timeout=20)
    deadline = time.time() + 30
    while True:  # and then gone, with nothing listening
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                break
        assert time.time() < deadline, "the MLflow server outlived a killed `ablate ui` by 30 s"
        time.sleep(0.5)


class _Unigram(Callback):
    def on_start(self, run):
        run.data_meta["unigram_entropy"] = 1.0  # far below any loss of a 10-step run: the rule calls it stalled


def test_unigram_entropy_is_logged_and_a_stalled_run_is_tagged(mlflow_uri, small_corpus, tmp_path):
    from ablate.compare import load_records

    tracker = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-stall", log_checkpoint=False)
    train(_config(small_corpus, tmp_path), [_Unigram(), tracker])
    run = MlflowClient(mlflow_uri).get_run(tracker.run_id)
    assert run.data.metrics["summary/unigram_entropy"] == 1.0
    assert run.data.tags["ablate.stalled"] == "true" and "unigram entropy" in run.data.tags["ablate.stalled_reason"]
    (record,) = load_records(tracking_uri=mlflow_uri, experiment="t-stall")
    assert record.unigram_entropy == 1.0 and record.final_loss == run.data.metrics["summary/final_val_loss"]


def test_compare_refuses_a_mixed_store_and_selects_a_group(mlflow_uri, small_corpus, tmp_path, capsys):
    for budget, variant in (("10steps", "baseline"), ("12steps", "rope")):
        argv = ["run", "--variant", variant, "--tracking-uri", mlflow_uri, "--experiment", "t-mixed",
                "--no-log-checkpoint", "--json", *tiny_run_args(small_corpus, tmp_path, budget)]
        assert main(argv) == 0
    capsys.readouterr()
    assert main(["compare", "--tracking-uri", mlflow_uri, "--experiment", "t-mixed", "--no-log"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "budget 10steps (1 run) vs 12steps (1 run)" in err and "--budget" in err
    assert main(["compare", "--tracking-uri", mlflow_uri, "--experiment", "t-mixed", "--no-log", "--budget", "10steps",
                 "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "runs used: 1 run, 1 variant x 1 seed (0), budget 10steps" in out
    assert "budget 10steps" in (tmp_path / "rep" / "report.md").read_text()


def test_sigterm_stops_a_run_like_ctrl_c_and_marks_it_killed(mlflow_uri, small_corpus, tmp_path):
    import mlflow

    argv = [sys.executable, "-m", "ablate", "run", "--tracking-uri", mlflow_uri, "--experiment", "t-term",
            "--json", *tiny_run_args(small_corpus, tmp_path, "100000steps")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    client = mlflow.tracking.MlflowClient(mlflow_uri)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training has started (the MLflow run exists)
        exp = client.get_experiment_by_name("t-term")
        if exp and client.search_runs([exp.experiment_id]):
            break
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "KILLED"
    assert list((tmp_path / "runs").glob("*/checkpoint.pt"))  # resumable


def test_sample_takes_an_mlflow_run_id(mlflow_uri, small_corpus, tmp_path, capsys):
    tracker = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-sample", log_checkpoint=False)
    train(_config(small_corpus, tmp_path), [tracker])
    capsys.readouterr()
    assert main(["sample", "--run", tracker.run_id, "--tracking-uri", mlflow_uri, "--tokens", "5"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["sample", "--run", "0" * 32, "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: --run ") and err.count("\n") == 1


def test_experiments_open_as_model_training_in_the_ui(mlflow_uri):
    from ablate.track import EXPERIMENT_KIND, client_for, get_experiment_id

    client, uri = client_for(mlflow_uri)
    new = get_experiment_id(client, "t-kind-new", uri)
    assert client.get_experiment(new).tags[EXPERIMENT_KIND[0]] == "custom_model_development"
    old = client.create_experiment("t-kind-old")  # made by an older ablate: marked when next used
    assert get_experiment_id(client, "t-kind-old", uri) == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND[0]] == "custom_model_development"
    chosen = client.create_experiment("t-kind-own", tags={EXPERIMENT_KIND[0]: "genai_development"})
    get_experiment_id(client, "t-kind-own", uri)  # the user's own choice stands
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND[0]] == "genai_development"


def test_resuming_continues_the_mlflow_run_and_retraining_replaces_it(mlflow_uri, small_corpus, tmp_path):
    config = _config(small_corpus, tmp_path, budget="20steps", eval_points=4)
    first = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-resume", log_checkpoint=False)
    with pytest.raises(KeyboardInterrupt):
        train(config, [first, Boom(KeyboardInterrupt())])
    client, (killed,) = _runs(mlflow_uri, "t-resume")
    assert killed.info.status == "KILLED"
    again = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-resume", log_checkpoint=False)
    assert [m.step for m in client.get_metric_history(killed.info.run_id, "eval/val_loss")] == [0, 5]
    train(config, [again], resume=True)
    client, (run,) = _runs(mlflow_uri, "t-resume")  # one MLflow run for one (config, seed)
    assert run.info.run_id == first.run_id == again.run_id and run.info.status == "FINISHED"
    for key in ("eval/val_loss", "train/loss", "train/lr"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == sorted(set(steps)), key  # no step logged twice
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/val_loss")] == [0, 5, 10, 15, 20]

    fresh = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-resume", log_checkpoint=False)
    train(config, [fresh])  # trained again from scratch: the old run's results are gone from disk
    client, (run,) = _runs(mlflow_uri, "t-resume")
    assert run.info.run_id == fresh.run_id != first.run_id
    old = client.get_run(first.run_id)
    assert old.info.lifecycle_stage == "deleted" and old.data.tags["ablate.superseded_by"] == fresh.run_id


def test_resuming_with_another_group_continues_the_run_in_its_own_group(mlflow_uri, small_corpus, tmp_path, capsys):
    """--resume with another --group (or none) made a second MLflow run from the resumed step on, and the
    first stayed KILLED in the old group, where compare said to resume it."""
    config = _config(small_corpus, tmp_path, budget="20steps", eval_points=4)
    first = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-regroup", group="g2", log_checkpoint=False)
    with pytest.raises(KeyboardInterrupt):
        train(config, [first, Boom(KeyboardInterrupt())])
    capsys.readouterr()
    again = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-regroup", group="g9", log_checkpoint=False)
    train(config, [again], resume=True)
    assert "continues its MLflow run where it started (group g2)" in capsys.readouterr().err
    client, runs = _runs(mlflow_uri, "t-regroup", "tags.`ablate.run_dir` != ''")
    (run,) = [r for r in runs if "ablate.run_dir" in r.data.tags]
    assert run.info.run_id == first.run_id == again.run_id and run.info.status == "FINISHED"
    assert run.data.tags["ablate.in_group"] == "g2"
    assert not _runs(mlflow_uri, "t-regroup", "tags.`ablate.group` = 'g9'")[1]  # no empty parent for g9
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/val_loss")] == [0, 5, 10, 15, 20]


def test_compare_reads_stores_written_before_the_summary_prefix(mlflow_uri, small_corpus, tmp_path):
    """Runs logged by an older ablate (``final_val_loss`` etc. without ``summary/``) still compare."""
    from ablate.compare import load_records
    from ablate.track import SUMMARY_PREFIX

    tracker = MLflowTracker(tracking_uri=mlflow_uri, experiment="t-old-names", log_checkpoint=False)
    train(_config(small_corpus, tmp_path), [tracker])
    client = MlflowClient(mlflow_uri)
    old = client.get_run(tracker.run_id)
    legacy = client.create_run(old.info.experiment_id, tags=old.data.tags)
    for key, value in old.data.metrics.items():
        if key.startswith(SUMMARY_PREFIX):
            client.log_metric(legacy.info.run_id, key.removeprefix(SUMMARY_PREFIX), value, step=10)
    for m in client.get_metric_history(tracker.run_id, "eval/val_loss"):
        client.log_metric(legacy.info.run_id, "val_loss", m.value, step=m.step)
    client.set_terminated(legacy.info.run_id)
    client.delete_run(tracker.run_id)
    (record,) = load_records(tracking_uri=mlflow_uri, experiment="t-old-names")
    assert record.metric == old.data.metrics["summary/final_val_loss"] and record.params > 0
    assert record.flops_per_token == old.data.metrics["summary/flops_per_token"]
    assert record.loss_curve == [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "eval/val_loss")]


def test_curves_of_a_run_with_no_steps_plot_without_a_warning(tmp_path):
    """A study run interrupted before its first step leaked matplotlib's "No artists with labels" warning."""
    import types
    import warnings

    from ablate.track import plot_curves

    empty = types.SimpleNamespace(history=[], evals=[], variant="baseline", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_curves(empty, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_a_web_server_that_is_not_mlflow_is_one_line_and_a_tracking_server_needs_no_ui(capsys):
    """`compare --tracking-uri http://<a web server that is not MLflow>` was a traceback (MLflow's 404); `ablate ui
    --tracking-uri http://<an MLflow server>` passed the URL to `mlflow server` as a store and printed its traceback."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        mlflow = False

        def do_GET(self):
            body = b'{"experiments": []}' if Page.mlflow else b"<html>not found</html>"
            self.send_response(200 if Page.mlflow else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert main(["compare", "--tracking-uri", url]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "answers, but not as an MLflow tracking server (HTTP 404" in err, err
        Page.mlflow = True
        assert main(["ui", "--tracking-uri", url, "--port", str(_free_port())]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "serves its own UI: open" in err, err
    finally:
        server.shutdown()
