"""The Python API: `from ablate import train, compare` are things you call."""

from pathlib import Path

import pytest

import ablate
from ablate import RunConfig, compare, parse_variant, train
from ablate.report import RunRecord


def test_train_and_compare_are_callable(small_corpus, tmp_path):
    settings = dict(size="tiny", context=16, data=str(small_corpus), budget="3steps", batch_size=2, eval_points=1,
                    eval_batches=1, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    a = train(**settings)
    b = train(RunConfig(**settings, variant="rope"))
    assert a.status == b.status == "finished" and b.variant == parse_variant("rope").name
    with pytest.warns(UserWarning, match="has finished already"):  # the variant as the first argument: the same run
        assert train("rope", **settings).run_dir == b.run_dir
    assert train("rope", force=True, **settings).run_dir == b.run_dir  # trained again
    assert train.train is ablate.train.train  # still the module too
    fair = {"budget": "3steps"}
    records = [RunRecord(f"{v}{s}", v, s, 2.0 + (0.1 + 0.001 * (s % 2) if v == "rope" else 0.0) + 0.01 * s,
                         fairness=fair)
               for v in ("baseline", "rope") for s in range(3)]
    table = compare(records)
    assert table.row("rope").verdict == "hurts" and compare.compare is ablate.compare.compare


def test_importing_ablate_stays_light():
    import subprocess
    import sys

    code = "import sys, ablate; ablate.__version__; print('torch' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    code = "import ablate; print(callable(ablate.train), callable(ablate.compare), ablate.train.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "ablate.train"]  # README: help(ablate.train) in a new interpreter


def test_run_study_runs_a_study_file_and_returns_its_verdicts(small_corpus, tmp_path, mlflow_uri, capsys):
    import pytest

    from ablate.errors import AblateError
    from test_study import write_study

    file = write_study(tmp_path / "api.toml", small_corpus, name="api", seeds=2, variants=["baseline", "rope"])
    report = ablate.run_study(file, state_dir=tmp_path / "state", tracking_uri=mlflow_uri, set={"seeds": 3},
                              experiment="t-api")
    assert [row["variant"] for row in report["rows"]] == ["baseline", "rope"]
    assert report["study"] == "api" and "6 runs" in report["runs_used"]  # set={"seeds": 3} took effect
    assert "verdict" in report["rows"][1] and report["report"]
    capsys.readouterr()
    # the second call finds everything trained: it reports again without training
    again = ablate.run_study(file, state_dir=tmp_path / "state", tracking_uri=mlflow_uri, set={"seeds": 3},
                             experiment="t-api")
    assert again["rows"] == report["rows"]
    with pytest.raises(TypeError, match=r"^run_study\(\) got unexpected keyword argument\(s\) 'colour'$"):
        ablate.run_study(file, colour="red")  # in Python's terms, not the CLI's "--colour red"
    with pytest.raises(AblateError, match="no such study file|not found|does not exist"):
        ablate.run_study(tmp_path / "missing.toml")


def test_run_study_refuses_a_report_it_cannot_give_before_training(tmp_path):
    from pathlib import Path

    import pytest

    from ablate.errors import AblateError

    pretrain = Path(__file__).resolve().parents[1] / "studies" / "pretrain-shakespeare.toml"
    with pytest.raises(AblateError, match="pass report=False"):
        ablate.run_study(pretrain, state_dir=tmp_path / "state")
    assert not (tmp_path / "state").exists()  # nothing was trained or created


def test_the_api_says_what_it_takes_when_called_wrongly(tmp_path):
    """Wrong arguments to the library are clear errors naming the function's own arguments, not failures deep
    inside (an AttributeError on a str, a TypeError from load_records, a dict's characters as run ids)."""
    from ablate import compare, train
    from ablate.api import _flags
    from ablate.errors import AblateError

    with pytest.raises(TypeError, match=r"compare\(\) got unexpected keyword argument\(s\) foo"):
        compare(group="g", foo=1)
    with pytest.raises(AblateError, match="alpha must be a number between 0 and 1"):
        compare(group="g", alpha="x")
    with pytest.raises(TypeError, match="takes a variant's name"):
        compare(group="g", baseline=123)
    with pytest.raises(TypeError, match="a group twice"):
        compare("g", group="h")
    with pytest.raises(TypeError, match="not a dict"):
        train({"variant": "rope"})
    with pytest.raises(TypeError, match="not int"):
        compare(5)
    with pytest.raises(AblateError, match="empty list of runs"):
        compare([])
    from ablate import run_study

    with pytest.raises(TypeError, match=r"run_study\(\) got unexpected keyword argument\(s\) 'bar_baz', 'foo'$"):
        run_study(Path(__file__).parents[1] / "studies" / "quickstart.toml", foo=1, bar_baz=2, report=False)
    with pytest.raises(TypeError, match="'until'"):  # not argparse's abbreviation of --until-decided
        run_study(Path(__file__).parents[1] / "studies" / "quickstart.toml", until=True, report=False)
    with pytest.raises(TypeError, match="set= takes a dict"):
        _flags({"set": "seeds=2"})
    with pytest.raises(AblateError, match="did you mean 'seeds'"):
        from ablate.study import load_study

        load_study(Path(__file__).parents[1] / "studies" / "quickstart.toml", sets=["sedes=2"])


def test_readme_train_then_compare_works_as_written(small_corpus, tmp_path, mlflow_uri, monkeypatch):
    """The README's Python example: runs trained with train(..., group=) are logged to MLflow, and
    compare(group=) finds them. Before, train() logged nothing and refused group=."""
    settings = dict(size="tiny", context=16, data=str(small_corpus), budget="3steps", batch_size=2, eval_points=1,
                    eval_batches=1, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    for seed in range(2):
        for variant in ("baseline", "rope"):
            train(variant=variant, seed=seed, group="api-readme", tracking_uri=mlflow_uri, **settings)
    with pytest.warns(UserWarning, match="has finished already"):  # the loop again: nothing is trained twice
        again = train(variant="rope", seed=1, group="api-readme", tracking_uri=mlflow_uri, **settings)
    assert again.status == "finished" and "rope-seed1-" in again.run_dir
    table = compare(group="api-readme", tracking_uri=mlflow_uri)
    assert [r.variant for r in table.rows] == ["baseline", "rope"] and list(table.row("rope").seeds) == [0, 1]
    assert not any("finished runs" in w for w in table.warnings)  # no repeated (variant, seed)
    with pytest.raises(TypeError, match="logs nothing"):
        train(variant="rope", group="g", track=False, **settings)
    assert "group=" in ablate.train.__doc__ and 'compare(group="my-runs")' in ablate.compare.__doc__  # help()


def test_run_study_passes_ctrl_c_on_as_an_interrupt(monkeypatch):
    """In a notebook, Ctrl-C during run_study became AblateError('the study did not complete (exit 130)')."""
    import ablate.cli.study as cli_study
    from ablate import run_study

    monkeypatch.setattr(cli_study, "cmd_run", lambda args: 130)
    with pytest.raises(KeyboardInterrupt):
        run_study(Path(__file__).parents[1] / "studies" / "quickstart.toml", report=False)
