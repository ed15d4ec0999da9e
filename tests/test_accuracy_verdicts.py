"""Task accuracies as verdict metrics (issue 11): `compare --metric acc` and study files with
`metric = "acc"` are higher-is-better (verdicts, the stalled rule, Optuna's direction, the tuning pick,
the search ranking); the answer format of the same problems can be compared with --by-data."""

from types import SimpleNamespace

import pytest

from ablate import metrics
from ablate.cli import main
from ablate.compare import _free_keys, compare
from ablate.errors import AblateError
from ablate.report import RunRecord
from ablate.report.study import _search_score
from ablate.study.progress import _pick
from ablate.study.spec import load_study

FAIR = {"data": "p1", "tokenizer": "task", "budget": "100steps"}
LOSS_DOWN = [(0, 3.0), (50, 1.0), (100, 0.5)]


def _rec(variant, seed, acc, *, curve=None, loss_curve=LOSS_DOWN, status="finished", eval_batches="e1"):
    return RunRecord(run_id=f"{variant}-{seed}", variant=variant, seed=seed, metric=acc,
                     curve=curve if curve is not None else [(50, acc), (100, acc)], loss_curve=loss_curve,
                     status=status, final_loss=loss_curve[-1][1] if loss_curve else None,
                     fairness={**FAIR, "eval_batches": eval_batches})


def test_metric_names_and_directions():
    for name in ("acc", "acc_len1", "acc_len12", "acc_longer", "acc_op_add", "acc_op_div"):
        assert metrics.known(name) and not metrics.lower_is_better(name) and metrics.direction(name) == "maximize"
        assert metrics.worst(name) == float("-inf")
    for name in ("val_loss", "val_bpb"):
        assert metrics.lower_is_better(name) and metrics.direction(name) == "minimize"
        assert metrics.worst(name) == float("inf")
    for bad in ("accuracy", "acc_len0", "acc_op_pow", "acc_len", "loss"):
        with pytest.raises(AblateError, match="unknown metric"):
            metrics.check(bad)


def test_higher_accuracy_is_a_help_and_lower_a_hurt():
    records = [_rec("baseline", s, a) for s, a in enumerate((0.58, 0.60, 0.59))]
    records += [_rec("rope", s, a) for s, a in enumerate((0.99, 1.0, 0.98))]
    records += [_rec("none", s, a) for s, a in enumerate((0.20, 0.25, 0.22))]
    c = compare(records, baseline=None, metric="acc", alpha=0.05)
    assert not c.lower_is_better
    assert c.row("rope").verdict == "helps" and c.row("rope").paired.mean_diff > 0
    assert c.row("none").verdict == "hurts"
    assert c.unstable == []


def test_flat_accuracy_is_not_a_stall_but_a_flat_loss_is():
    # 100% from the first eval on, and 0% on lengths never trained on: flat accuracy curves of runs whose
    # loss still falls. The stalled rule reads the validation loss for an accuracy, never the accuracy.
    records = [_rec("baseline", s, 1.0) for s in range(3)] + [_rec("alibi", s, 0.0) for s in range(3)]
    c = compare(records, baseline=None, metric="acc_longer", alpha=0.05)
    assert c.unstable == [] and not c.row("alibi").unstable
    flat = [(0, 3.0), (50, 2.9), (100, 2.95)]
    records[3] = _rec("alibi", 0, 0.0, loss_curve=flat)
    c = compare(records, baseline=None, metric="acc_longer", alpha=0.05)
    assert c.row("alibi").verdict == "unstable: stalled on 1 of 3 seeds"
    assert "no better than the first eval" in c.unstable[0] and "2.95" in c.unstable[0]


def test_accuracy_ignores_the_loss_batches_but_not_the_problems():
    # the answer format changes the loss batches, not the problems the accuracy is scored on
    assert _free_keys("acc") == ("eval_batches",) and _free_keys("val_loss") == ()
    assert "tokenizer" in _free_keys("val_bpb")


def test_tuning_pick_and_search_ranking_follow_the_direction():
    results = [(0.5, {"lr": 1e-3}), (0.9, {"lr": 3e-3}), (0.9, {"lr": 2e-3}), (float("-inf"), {"lr": 1e-2})]
    assert _pick(results, lower_is_better=False) == {"lr": 2e-3}  # the highest; ties to the smaller lr
    assert _pick([(2.0, {"lr": 1e-3}), (1.5, {"lr": 3e-3})]) == {"lr": 3e-3}
    from optuna.trial import TrialState

    done = [SimpleNamespace(state=TrialState.COMPLETE, value=v, intermediate_values={}) for v in (0.2, 0.9, 0.5)]
    ranked = sorted(done, key=lambda t: _search_score(t, -1.0))
    assert [t.value for t in ranked] == [0.9, 0.5, 0.2]
    assert _search_score(done[1], -1.0)[2] == 0.9  # the table shows the value, not its negation


def test_study_file_accepts_accuracies(tmp_path):
    path = tmp_path / "s.toml"
    body = 'data = "task:addition(digits=2)"\nvariants = ["baseline", "rope"]\nmetric = "{}"\n'
    path.write_text(body.format("acc_longer"))
    assert load_study(path).metric == "acc_longer"
    path.write_text(body.format("accuracy"))
    with pytest.raises(AblateError, match="unknown metric 'accuracy'.*higher is better"):
        load_study(path)


def test_compare_metric_acc_end_to_end(mlflow_uri, tmp_path, capsys, monkeypatch):
    common = ["--size", "tiny", "--budget", "6steps", "--eval-points", "1", "--eval-batches", "1",
              "--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
              "--tracking-uri", mlflow_uri, "--experiment", "t-acc", "--no-log-checkpoint", "--json"]
    for variant, data, group in (("baseline", "task:addition(digits=2)", "g"), ("rope", "task:addition(digits=2)", "g"),
                                 ("baseline", "task:addition(digits=2,reverse=false)", "normal")):
        assert main(["run", "--variant", variant, "--data", data, "--group", group, *common]) == 0
    capsys.readouterr()
    # a finished (configuration, seed) asked for again in another group trains nothing, and says so
    assert main(["run", "--variant", "rope", "--data", "task:addition(digits=2)", "--group", "other", *common]) == 0
    assert "It stays in the group g, where it was trained; pass --force to train it again in other" in \
        capsys.readouterr().err  # it said "if that was not other": the group it is in is named now
    assert main(["run", "--variant", "rope", "--data", "task:addition(digits=2)", "--group", "g", *common]) == 0
    assert "It is in the group g already" in capsys.readouterr().err
    assert main(["compare", "--tracking-uri", mlflow_uri, "--experiment", "t-acc", "--group", "g",
                 "--metric", "acc", "--no-log", "--out", str(tmp_path / "r1")]) == 0
    text = " ".join(capsys.readouterr().out.split())  # rich wraps the title
    assert "(higher is better)" in text and "rope" in text
    report = (tmp_path / "r1" / "report.md").read_text()
    assert "Metric: acc (higher is better)" in report
    # the answer order as a compared "variant": one architecture on two formats of the same problems
    assert main(["compare", "--tracking-uri", mlflow_uri, "--experiment", "t-acc", "--by-data", "--metric", "acc",
                 "--baseline", "baseline @ task:addition(digits=2)", "--no-log", "--out", str(tmp_path / "r2")]) == 0
    text = capsys.readouterr().out
    assert "reverse=false" in text
    with pytest.raises(SystemExit) as exit_:  # argparse: one usage line naming the choices
        main(["compare", "--tracking-uri", mlflow_uri, "--experiment", "t-acc", "--metric", "accuracy"])
    assert exit_.value.code == 2 and "task accuracy" in capsys.readouterr().err
    # another metric is another report: beside the val_loss one, not over it, on disk and in MLflow
    monkeypatch.chdir(tmp_path)
    for metric in ("val_loss", "acc"):
        assert main(["compare", "--tracking-uri", mlflow_uri, "--experiment", "t-acc", "--group", "g",
                     "--metric", metric]) == 0
    assert "Metric: val_loss" in (tmp_path / "reports" / "g" / "report.md").read_text()
    assert "Metric: acc (higher" in (tmp_path / "reports" / "g-acc" / "report.md").read_text()
    from mlflow import MlflowClient

    from ablate.compare import find_or_create_parent

    client = MlflowClient(mlflow_uri)
    parent = find_or_create_parent(client, client.get_experiment_by_name("t-acc").experiment_id, "g")
    assert {"report", "report-acc"} <= {a.path for a in client.list_artifacts(parent)}
