"""A study as Optuna and optuna-dashboard see it: the objective named after the metric, the seed a user
attribute (not a parameter), so parameter importances and the best trial speak of the variants; the
report as strict JSON and CSV; studies made when the seed was a parameter still resume and report."""

import argparse
import csv
import io
import json
from collections import Counter

import pytest

from ablate.cli import build_parser, main
from ablate.study import COMPARE_KEY, K_SKIP, Context, load_study, storage_url
from ablate.study.keys import K_POINT
from ablate.study.queue import key_of, trial_point

from test_study import write_study

SEEDS = (0, 1, 2)
VARIANTS = ("baseline", "rope")


def _strict(text: str):
    """json.loads that refuses NaN and infinities, as strict parsers (JavaScript, jq) do."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def compare_study(small_corpus, tmp_path_factory, mlflow_uri):
    """A finished compare study: baseline vs rope over 3 seeds (tiny model, 10 steps)."""
    folder = tmp_path_factory.mktemp("optuna-study")
    file = write_study(folder / "dash.toml", small_corpus, name="dash", seeds=len(SEEDS), variants=list(VARIANTS))
    assert main(["study", "run", str(file), "--tracking-uri", mlflow_uri, "--state-dir", str(folder)]) == 0
    spec = load_study(file)
    return file, folder, Context(spec, storage_url(spec, None, folder), tracking_uri=mlflow_uri)


def test_the_seed_is_a_user_attribute_so_importances_and_the_best_trial_are_about_variants(compare_study):
    import optuna
    from optuna.trial import TrialState

    _, _, ctx = compare_study
    study = ctx.main()
    assert study.metric_names == ["val_loss"]  # optuna-dashboard's axis and column, not "Objective 0"
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not t.user_attrs.get(K_SKIP)]
    assert sorted((t.params["variant"], t.user_attrs["seed"]) for t in done) == sorted(
        (v, s) for v in VARIANTS for s in SEEDS)
    assert all(set(t.params) == {"variant"} and set(t.distributions) == {"variant"} for t in done)
    for evaluator in (None, optuna.importance.FanovaImportanceEvaluator(seed=0)):
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
        assert set(importances) == {"variant"} and importances["variant"] == pytest.approx(1.0)
    best = study.best_trial
    assert "seed" not in best.params and best.user_attrs["seed"] in SEEDS
    assert key_of(trial_point(best), COMPARE_KEY) == key_of(best.user_attrs[K_POINT], COMPARE_KEY)


def test_optuna_dashboard_shows_the_metric_and_no_seed_parameter(compare_study):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    from wsgiref.util import setup_testing_defaults

    _, _, ctx = compare_study
    app = optuna_dashboard.wsgi(ctx.storage)

    def get(path: str):
        environ: dict = {}
        setup_testing_defaults(environ)
        environ["PATH_INFO"] = path
        status = []
        body = b"".join(app(environ, lambda s, headers, exc=None: status.append(s)))
        assert status[0].startswith("200"), (path, status, body[:200])
        return json.loads(body)

    study_id = next(s["study_id"] for s in get("/api/studies")["study_summaries"] if s["study_name"] == "dash")
    detail = get(f"/api/studies/{study_id}")
    assert detail["objective_names"] == ["val_loss"]
    assert [p["name"] for p in detail["union_search_space"]] == ["variant"]
    assert "seed" in {a["key"] for a in detail["union_user_attrs"]}
    assert all("seed" not in {p["name"] for p in t["params"]} for t in detail["trials"])
    importances = get(f"/api/studies/{study_id}/param_importances")["param_importances"][0]
    assert [i["name"] for i in importances] == ["variant"]


def test_study_report_as_json_and_csv(compare_study, mlflow_uri, capsys):
    file, folder, _ = compare_study
    base = ["study", "report", str(file), "--state-dir", str(folder), "--out", str(folder / "rep"), "--no-log"]
    capsys.readouterr()
    assert main(base + ["--json"]) == 0
    report = _strict(capsys.readouterr().out)  # nothing but the JSON on stdout
    assert report["study"] == "dash" and report["protocol"] == "compare" and report["metric"] == "val_loss"
    assert [row["variant"] for row in report["rows"]] == list(VARIANTS)
    assert isinstance(report["warnings"], list) and report["missing"] == []
    assert "6 runs" in report["runs_used"] and (folder / "rep" / "report.md").is_file()

    # the same rows as `ablate compare --json` over the study's runs (one renderer, one shape)
    assert main(["compare", "--group", "dash", "--tracking-uri", mlflow_uri, "--json", "--no-log",
                 "--out", str(folder / "cmp")]) == 0
    compared = _strict(capsys.readouterr().out)
    assert compared["rows"] == report["rows"] and compared["runs_used"] == report["runs_used"]

    assert main(base + ["--csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == list(report["rows"][0]) and [r[0] for r in rows[1:]] == list(VARIANTS)
    assert [dict(zip(rows[0], r)) for r in rows[1:]] == report["rows"]

    with pytest.raises(SystemExit) as exit_:  # one or the other
        main(base + ["--json", "--csv"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_a_study_made_when_the_seed_was_a_parameter_resumes_and_reports(compare_study, tmp_path, capsys):
    """Copy the finished study into the shape the previous version wrote (seed among the params, no
    seed attribute, no metric name), leaving one point queued the old way; `study run` finishes it."""
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.trial import TrialState

    file, _, ctx = compare_study
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "dash.journal")))
    old = optuna.create_study(study_name="dash", storage=storage, direction="minimize")
    for key, value in ctx.main().user_attrs.items():
        old.set_user_attr(key, value)
    left = {"variant": "rope", "seed": 2}
    distributions = {"variant": CategoricalDistribution(list(VARIANTS)), "seed": IntDistribution(0, max(SEEDS))}
    for t in ctx.main().get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        point = trial_point(t)
        attrs = {k: v for k, v in t.user_attrs.items() if k != "seed"}
        if point == left:
            old.enqueue_trial(dict(point), user_attrs={k: attrs[k] for k in ("ablate.key", "ablate.role", K_POINT)})
            continue
        old.add_trial(optuna.trial.create_trial(params=dict(point), distributions=distributions, value=t.value,
                                                user_attrs=attrs))
    assert old.metric_names is None

    argv = ["study", "run", str(file), "--state-dir", str(tmp_path)]
    assert main(argv) == 0
    study = optuna.load_study(study_name="dash", storage=storage)
    assert study.metric_names == ["val_loss"]  # named when the study is opened to run
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not t.user_attrs.get(K_SKIP)]
    assert Counter(key_of(trial_point(t), COMPARE_KEY) for t in done) == Counter(
        key_of({"variant": v, "seed": s}, COMPARE_KEY) for v in VARIANTS for s in SEEDS)  # each once
    resumed = next(t for t in done if trial_point(t) == left)
    assert resumed.params == {"variant": "rope"} and resumed.user_attrs["seed"] == 2

    capsys.readouterr()
    assert main(["study", "report", str(file), "--state-dir", str(tmp_path), "--json", "--no-log",
                 "--out", str(tmp_path / "rep")]) == 0
    report = _strict(capsys.readouterr().out)
    assert [row["variant"] for row in report["rows"]] == list(VARIANTS) and report["missing"] == []
    assert all(row["seeds"] == str(len(SEEDS)) for row in report["rows"])


def _study_flags():
    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    study = top.choices["study"]
    sub = next(a for a in study._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                yield f"study {name} {'/'.join(action.option_strings) or action.dest}", action.help


@pytest.mark.parametrize("flag,text", list(_study_flags()))
def test_every_study_flag_says_what_it_does(flag, text):
    assert text and text != argparse.SUPPRESS, f"{flag} has no help"
    words = text.replace("(default", "").split()
    assert len(words) >= 4, f"{flag}: help {text!r} says too little"
