"""`ablate study run --until-decided`: rounds of seeds only for undecided variants (no training here:
a stand-in worker answers each queued trial with a made-up loss, so the scheduling itself is tested)."""

import random
from pathlib import Path

import pytest
from optuna.trial import TrialState

from ablate.errors import AblateError
from ablate.study import Context, create, load_study, progress, storage_url
from ablate.study import rounds
from ablate.study.keys import K_POINT

from test_study import write_study

EFFECT = {"baseline": 0.0, "rope": -0.3, "init_seed=1": 0.0}  # rope clearly helps; the A/A copy is null


@pytest.fixture
def study(small_corpus, tmp_path, mlflow_uri):
    file = write_study(tmp_path / "seq.toml", small_corpus, name="seq", seeds=5,
                       variants=["baseline", "rope", "init_seed=1"])
    spec = load_study(file)
    ctx = Context(spec, storage_url(spec, None, tmp_path), tracking_uri=mlflow_uri, experiment="t-rounds")
    return spec, ctx


def fake_round(ctx, answered):
    """Pop every queued trial and answer it: seed noise shared by all variants of a seed, plus a little own noise."""
    study = ctx.main()
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        point = trial.user_attrs[K_POINT]
        variant = trial.suggest_categorical("variant", list(ctx.spec.variants))
        seed = trial.user_attrs["seed"]  # a replicate, not a searched parameter
        assert (variant, seed) == (point["variant"], point["seed"])
        shared, own = random.Random(seed).gauss(0, 0.01), random.Random(f"{variant}{seed}").gauss(0, 0.002)
        study.tell(trial, 3.0 + EFFECT[variant] + shared + own)
        answered.append((variant, seed))
    return 0


def test_seeds_go_only_to_undecided_variants(study):
    spec, ctx = study
    design = rounds.design_for(spec)
    assert design.looks == (3, 5)
    ctx.spec = rounds.first_round(spec, design)
    create(ctx)
    ctx.spec = spec
    answered, said = [], []
    result, counts, code = rounds.run_until_decided(ctx, design, lambda: fake_round(ctx, answered), said.append)
    assert code == 0 and result.done and not any(counts["diverged"].values()) and not any(counts["stalled"].values())
    assert result.decisions["rope"].decision == "helps" and result.decisions["rope"].n == 3
    assert result.decisions["init_seed=1"].decision == "no detectable effect" and result.decisions["init_seed=1"].n == 5
    assert sorted(s for v, s in answered if v == "rope") == [0, 1, 2]  # decided: no more seeds
    assert sorted(s for v, s in answered if v == "baseline") == [0, 1, 2, 3, 4]
    assert len(answered) == 13 < len(spec.variants) * len(spec.seeds)
    assert len(said) == 2 and "rope: helps" in said[0]
    record = rounds.save(ctx, result, counts, design)
    assert ctx.main().user_attrs[rounds.K_SEQUENTIAL]["runs_used"] == record["runs_used"] == 13
    cells = rounds.table(record, spec.baseline, spec.metric)
    assert [row[0] for row in cells.rows] == ["rope", "init_seed=1"] and cells.rows[0][-1] == "helps"
    (stage,) = progress(ctx)  # the seeds rope did not need are not missing: the study is complete
    assert (stage.done, stage.expected, stage.missing, stage.outside) == (13, 13, [], 0)


def test_status_and_report_of_a_decided_study_need_its_seeds(study, capsys):
    from ablate.cli import main

    test_seeds_go_only_to_undecided_variants(study)
    spec, _ = study
    where = ["--state-dir", str(spec.path.parent)]
    assert main(["study", "status", str(spec.path), *where]) == 0
    assert "13 done of 13" in capsys.readouterr().out
    for command in (["status"], ["report", "--no-log"]):  # other seeds: the fixed table would read seeds 0-2 only
        assert main(["study", *command, str(spec.path), *where, "--set", "seeds=3"]) == 2
        assert "added seeds until decided, up to 5" in capsys.readouterr().err


def test_a_plain_run_of_an_until_decided_study_is_refused(study, capsys, monkeypatch):
    """`study run` without --until-decided queued the whole grid over a sequential study and left its record:
    status then counted the seeds a decided variant had not needed as not needed, and the report hid them."""
    import ablate.cli.study as cli_study
    from ablate.cli import main

    test_seeds_go_only_to_undecided_variants(study)
    spec, ctx = study
    capsys.readouterr()
    monkeypatch.setattr(cli_study, "_run_round", lambda args, ctx, threads: 0)  # train nothing
    where = ["--state-dir", str(spec.path.parent), "--tracking-uri", ctx.tracking_uri]
    assert main(["study", "run", str(spec.path), *where]) == 2
    assert "adds seeds until decided; continue it with --until-decided" in capsys.readouterr().err
    assert ctx.main().user_attrs.get(rounds.K_SEQUENTIAL)  # the record is kept and nothing was queued
    (stage,) = progress(ctx)
    assert (stage.done, stage.expected, stage.missing) == (13, 13, [])
    assert rounds.recorded(ctx)


def test_the_design_cannot_change_once_the_study_has_run_until_decided(study, capsys, monkeypatch):
    """A second `--until-decided` run with another --margin or fewer seeds re-decided the verdicts after the
    data were seen (and saved them): the design is now fixed at the first run and a change is refused."""
    import ablate.cli.study as cli_study
    from ablate.cli import main

    spec, ctx = study
    monkeypatch.setattr(cli_study, "_run_round", lambda args, ctx, threads: fake_round(ctx, []))
    where = [str(spec.path), "--until-decided", "--state-dir", str(spec.path.parent), "--tracking-uri", ctx.tracking_uri]
    assert main(["study", "run", *where]) == 0
    record = ctx.main().user_attrs[rounds.K_SEQUENTIAL]
    capsys.readouterr()
    for change in (["--margin", "0.5"], ["--set", "seeds=4"]):
        assert main(["study", "run", *where, *change]) == 2, change
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "adds seeds until decided with no --margin, at most 5 seeds" in err, err
        assert ctx.main().user_attrs[rounds.K_SEQUENTIAL] == record  # the verdicts stand
    assert main(["study", "run", *where]) == 0  # as it was made: fine
    assert main(["study", "run", *where, "--margin", "0.5", "--fresh"]) == 0  # or over again
    assert ctx.main().user_attrs[rounds.K_DESIGN]["margin"] == 0.5


def test_until_decided_honours_report_and_prints_the_report_command(study, capsys, monkeypatch):
    """`study run --until-decided --report` printed no report (the flag was ignored), nor the command for it."""
    import ablate.cli.study as cli_study
    from ablate.cli import main

    spec, ctx = study
    monkeypatch.setattr(cli_study, "_run_round", lambda args, ctx, threads: fake_round(ctx, []))
    reports = []
    monkeypatch.setattr(cli_study, "cmd_report", lambda args: reports.append(args.file))
    where = [str(spec.path), "--until-decided", "--state-dir", str(spec.path.parent), "--tracking-uri", ctx.tracking_uri]
    assert main(["study", "run", *where]) == 0 and reports == []
    assert "verdict: ablate study report " in " ".join(capsys.readouterr().out.split())
    assert main(["study", "run", *where, "--report"]) == 0 and reports == [str(spec.path)]


def test_a_study_refuses_another_tracking_store(study, capsys, monkeypatch, tmp_path):
    """A later `study run` with another --tracking-uri (or $MLFLOW_TRACKING_URI) logged the new runs to that
    store, and neither store could report the study."""
    import ablate.cli.study as cli_study
    from ablate.cli import main

    spec, ctx = study
    monkeypatch.setattr(cli_study, "_run_round", lambda args, ctx, threads: fake_round(ctx, []))
    where = [str(spec.path), "--state-dir", str(spec.path.parent), "--experiment", "t-rounds"]
    assert main(["study", "run", *where, "--tracking-uri", ctx.tracking_uri]) == 0
    capsys.readouterr()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    for command in (["run", *where, "--tracking-uri", other], ["status", *where, "--tracking-uri", other]):
        assert main(["study", *command]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "logs to" in err and "--name NEW" in err, err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert main(["study", "status", *where]) == 2
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ctx.tracking_uri)  # the study's own store: fine
    assert main(["study", "status", *where]) == 0


def test_a_study_refuses_data_that_changed_under_the_same_path(small_corpus, tmp_path, mlflow_uri, capsys, monkeypatch):
    """The same data path with other contents (an edited file, or a relative path read from another folder)
    trained the new seeds on it silently; the report then refused the whole study as unfair."""
    import ablate.cli.study as cli_study
    from ablate.cli import main

    corpus = tmp_path / "corpus.txt"
    text = small_corpus.read_text()
    corpus.write_text(text)
    file = write_study(tmp_path / "d.toml", corpus, name="d", seeds=2, variants=["baseline", "rope"])
    monkeypatch.setattr(cli_study, "_run_round", lambda args, ctx, threads: fake_round(ctx, []))
    where = [str(file), "--state-dir", str(tmp_path), "--tracking-uri", mlflow_uri, "--experiment", "t-data"]
    assert main(["study", "run", *where]) == 0
    assert main(["study", "run", *where]) == 0  # the same data: fine
    corpus.write_text(text[len(text) // 2:] + text[: len(text) // 2])
    capsys.readouterr()
    assert main(["study", "run", *where, "--set", "seeds=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was made on other data" in err and "--name NEW" in err, err


def test_study_report_over_unfair_runs_names_its_own_fixes(study, monkeypatch):
    """study report passed on compare's fix (--group NAME, --where ...), flags study report does not have."""
    from types import SimpleNamespace

    import sys

    import ablate.compare
    from ablate.report import study as report_study

    spec, ctx = study

    def unfair(*args, **kwargs):
        raise AblateError("no verdict over unfair runs: the runs differ in data a (2 runs) vs b (2 runs) (2 groups); "
                          "compare one group: --group NAME, or select with --where data=a (or --where KEY=VALUE)")

    monkeypatch.setattr(sys.modules["ablate.study.progress"], "compare_trials", lambda ctx: ([SimpleNamespace(user_attrs={"run": 1})], []))
    monkeypatch.setattr(ablate.compare, "load_records", lambda **kw: [])
    monkeypatch.setattr(ablate.compare, "compare", unfair)
    monkeypatch.setattr("ablate.study.keys.K_RUN", "run")
    with pytest.raises(AblateError) as err:
        report_study.compare_report(ctx, Path("unused"), console=None)
    text = str(err.value)
    assert "differ in data a (2 runs) vs b" in text and "--fresh" in text and "--name NEW" in text
    assert "--group NAME" not in text


def test_a_relative_tracking_uri_is_stored_as_its_file(small_corpus, tmp_path, capsys, monkeypatch):
    """A study made with --tracking-uri sqlite:///m.db stored it relative: from another folder the right file,
    named in full, was refused, and no flag meant ./m.db there."""
    import ablate.cli.study as cli_study
    from ablate.cli import main

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    file = write_study(here / "r.toml", small_corpus, name="r", seeds=2, variants=["baseline", "rope"])
    monkeypatch.setattr(cli_study, "_run_round", lambda args, ctx, threads: fake_round(ctx, []))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    where = [str(file), "--state-dir", str(here), "--experiment", "t-rel"]
    monkeypatch.chdir(here)
    assert main(["study", "run", *where, "--tracking-uri", "sqlite:///m.db"]) == 0
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # set for this process's own trials
    monkeypatch.chdir(elsewhere)
    assert main(["study", "status", *where, "--tracking-uri", f"sqlite:///{here / 'm.db'}"]) == 0
    assert main(["study", "status", *where]) == 0
    assert not (elsewhere / "m.db").exists()


def test_printed_commands_are_quoted_for_a_shell(tmp_path):
    """A --set with parentheses and a path with a space were printed as is (bash: syntax error); the
    "run ... first" hint left out the --set that made the study's settings."""
    import shlex

    from ablate.study import Context, load_study

    folder = tmp_path / "sp ace"
    folder.mkdir()
    file = folder / "m.toml"
    file.write_text('variants = ["baseline", "rope"]\ndata = "task:addition(digits=2)"\nsize = "tiny"\n'
                    'budget = "2steps"\n')
    spec = load_study(file, sets=["data=task:addition(digits=2,reverse=false)", "seeds=2"], name="n1")
    command = Context(spec, "unused.journal").run_command()
    assert shlex.split(command) == ["ablate", "study", "run", str(file), "--set",
                                    "data=task:addition(digits=2,reverse=false)", "--set", "seeds=2", "--name", "n1"]


def stalling_round(ctx, answered, stalls):
    """fake_round, with the trials of the variants in ``stalls`` marked stalled as run_trial marks them."""
    from ablate.study.keys import K_STALLED

    study = ctx.main()
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        variant = trial.suggest_categorical("variant", list(ctx.spec.variants))
        seed = trial.user_attrs["seed"]
        if variant in stalls:
            trial.set_user_attr(K_STALLED, "final val loss 3.624 is above the unigram entropy 3.310")
        study.tell(trial, 3.0 + EFFECT[variant] + random.Random(seed).gauss(0, 0.01))
        answered.append((variant, seed))
    return 0


def first_round_queued(study):
    """The study created with its first round's seeds queued; returns (spec, ctx, design)."""
    spec, ctx = study
    design = rounds.design_for(spec)
    ctx.spec = rounds.first_round(spec, design)
    create(ctx)
    ctx.spec = spec
    return spec, ctx, design


def test_a_variant_with_stalled_seeds_is_unstable_never_helps_or_hurts(study):
    spec, ctx, design = first_round_queued(study)
    answered, said = [], []
    result, counts, code = rounds.run_until_decided(ctx, design, lambda: stalling_round(ctx, answered, {"rope"}),
                                                    said.append)
    assert "rope" not in result.decisions and counts["stalled"]["rope"] == 3  # its clear "helps" is not a verdict
    assert result.decisions["init_seed=1"].level == pytest.approx(design.alpha / 2)  # rope stays in the family
    assert "rope: unstable (stalled on 3 seed(s))" in said[0] and not said[0].startswith("  round at 3 seeds: ;")
    record = rounds.save(ctx, result, counts, design)
    rows = {row[0]: row[-1] for row in rounds.table(record, spec.baseline, spec.metric).rows}
    assert rows["rope"] == "unstable: stalled on 3 seed(s)"
    assert record["runs_used"] == len(answered)
    (stage,) = progress(ctx)  # rope left the test after 3 seeds: its other seeds are not missing
    assert stage.missing == [] and stage.done == stage.expected == len(answered)


def test_a_stalled_baseline_stops_the_sequential_test(study):
    spec, ctx, design = first_round_queued(study)
    with pytest.raises(AblateError, match="the baseline stalled on 3 seed"):
        rounds.run_until_decided(ctx, design, lambda: stalling_round(ctx, [], {"baseline"}), lambda _: None)


def test_a_run_stalls_by_its_own_records_as_the_report_judges_it():
    from ablate.report.stability import result_stall_reason

    evals = [{"step": 0, "val_loss": 4.2}, {"step": 10, "val_loss": 3.0}, {"step": 20, "val_loss": 2.5}]
    assert result_stall_reason(evals, {"val_loss": 2.5}, 3.3, "val_loss", True) is None
    assert "above the unigram entropy" in result_stall_reason(evals[:2], {"val_loss": 3.6}, 3.3, "val_loss", True)
    flat = [*evals[:2], {"step": 20, "val_loss": 3.1, "acc": 0.9}]
    assert "no better than the first eval" in result_stall_reason(flat, {"val_loss": 3.1, "acc": 0.9}, None,
                                                                  "acc", False)


def test_until_decided_needs_a_compare_study_with_enough_seeds(small_corpus, tmp_path):
    few = load_study(write_study(tmp_path / "few.toml", small_corpus, name="few", seeds=2,
                                 variants=["baseline", "rope"]))
    with pytest.raises(AblateError, match="at least 3 seeds"):
        rounds.design_for(few)
    search = load_study(write_study(tmp_path / "s.toml", small_corpus, {"search": {"mlp": ["gelu", "swiglu"]}},
                                    name="s", protocol="search", variants=["baseline"], seeds=[0]))
    with pytest.raises(AblateError, match="protocol"):
        rounds.design_for(search)


def test_a_stored_tracking_uri_never_holds_a_password(study, monkeypatch):
    spec, ctx = study
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fresh = Context(spec, ctx.storage_url)
    with pytest.raises(AblateError, match="give its password through --tracking-uri"):
        fresh.adopt_tracking({"ablate.tracking_uri": "postgresql://me:***@db/mlflow"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://me:secret@db/mlflow")
    again = Context(spec, ctx.storage_url)
    again.adopt_tracking({"ablate.tracking_uri": "postgresql://me:***@db/mlflow"})
    assert again.tracking_uri == "postgresql://me:secret@db/mlflow"


def test_runs_of_seeds_taken_out_of_the_file_are_counted_apart(study):
    """seeds = 5, all run, then seeds = 3: "9 done of 9, 6 more finished that this plan does not need", not "15 done of 9"."""
    import dataclasses

    spec, ctx = study
    create(ctx)
    fake_round(ctx, [])
    ctx.spec = dataclasses.replace(spec, seeds=spec.seeds[:3])
    (stage,) = progress(ctx)
    assert (stage.done, stage.expected, stage.missing, stage.outside) == (9, 9, [], 6)


def test_creating_a_local_study_takes_turns(tmp_path):
    """Two `study run` of a new study at once each made an MLflow parent run; creation now holds a lock on the
    storage file (journal or SQLite), which a second process waits for."""
    import threading
    import time

    from ablate.study.create import _one_at_a_time

    for url in (str(tmp_path / "s.journal"), f"sqlite:///{tmp_path / 's.db'}"):
        held, order = threading.Event(), []

        def first():
            with _one_at_a_time(url):
                held.set()
                time.sleep(0.4)
                order.append("first done")

        thread = threading.Thread(target=first)
        thread.start()
        held.wait()
        with _one_at_a_time(url):
            order.append("second in")
        thread.join()
        assert order == ["first done", "second in"]


@pytest.mark.parametrize("sets,words", [(["budget=1e3flops"], "variant baseline: .*less than one optimizer step"),
                                        (["budget=10steps", "warmup=50"], "variant baseline: .*warmup 50 steps is not")])
def test_a_budget_no_variant_can_use_is_refused_before_the_study_starts(small_corpus, tmp_path, sets, words):
    """Under a FLOP budget a costlier variant gets fewer steps: its trial would fail hours into the study."""
    from ablate.study import preflight

    file = write_study(tmp_path / "pre.toml", small_corpus, name="pre", variants=["baseline", "rope"])
    with pytest.raises(AblateError, match=words):
        preflight(load_study(file, sets=sets))
    assert preflight(load_study(file)) == 2
    from ablate.cli import main

    state = tmp_path / "state"
    assert main(["study", "run", str(file), "--state-dir", str(state), *[f"--set={s}" for s in sets]]) == 2
    assert not list(state.glob("*.journal"))  # refused before anything was made: no empty journal left behind


def test_a_task_accuracy_on_a_corpus_is_refused_before_the_study_starts(small_corpus, tmp_path):
    """metric = "acc" on a text corpus trained every run, then failed each one: a corpus has no accuracy."""
    from ablate.study import preflight

    file = write_study(tmp_path / "acc.toml", small_corpus, name="acc", variants=["baseline", "rope"], metric="acc")
    with pytest.raises(AblateError, match="metric 'acc' is a task's accuracy and data .* is not a task; use metric"):
        preflight(load_study(file))
    task = write_study(tmp_path / "task.toml", small_corpus, name="task", variants=["baseline", "rope"], metric="acc",
                       data="task:addition(digits=2)")
    assert preflight(load_study(task)) == 2


def test_an_interrupted_trial_is_queued_again_for_any_worker(study):
    """Ctrl-C on `study run` failed the trial it was training, and only a later `study run` queued it again:
    a `study worker` then said done with the study unfinished."""
    from optuna.trial import TrialState

    from ablate.study.queue import make_sampler, grid_space, requeue
    from ablate.study.work import work_grid

    spec, ctx = study
    create(ctx)
    grid = ctx.main(sampler=make_sampler("grid", 0, 0, grid_space(spec, "compare")))
    waiting = len(grid.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def interrupted(trial):
        ctx.current_trial = trial.number
        trial.suggest_categorical("variant", list(spec.variants))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        work_grid(ctx, grid, interrupted)
    (failed,) = grid.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    again = grid.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert len(again) == waiting and failed.user_attrs["ablate.key"] in {t.user_attrs["ablate.key"] for t in again}
    assert requeue(grid, failed.number) is False  # queued already: never twice

    calls = []

    def failing_then_interrupted_early(trial):
        calls.append(trial.number)
        if len(calls) == 1:
            ctx.current_trial = trial.number
            raise RuntimeError("a real failure")  # failed, and stays failed
        raise KeyboardInterrupt  # before this trial's objective took it: nothing to queue, and not the last one

    with pytest.raises(KeyboardInterrupt):
        work_grid(ctx, grid, failing_then_interrupted_early)
    assert len(grid.get_trials(deepcopy=False, states=(TrialState.WAITING,))) == waiting - 2


def test_a_queued_trial_survives_a_sampled_one_on_its_grid():
    """Two workers: one asks just as the other pops the last queued trial, so Optuna samples a grid point; the
    next queued trial then failed after training (GridSampler.after_trial: KeyError 'grid_id'), exit 1."""
    import warnings

    import optuna

    from ablate.study.queue import make_sampler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(sampler=make_sampler("grid", 0, 0, {"variant": ["baseline", "rope"]}))
        sampled = study.ask()  # the race: no queued trial left when this worker asked
        sampled.suggest_categorical("variant", ["baseline", "rope"])
        study.tell(sampled, 3.0)
        study.enqueue_trial({"variant": "baseline"})
        study.optimize(lambda t: 3.0 + 0 * len(t.suggest_categorical("variant", ["baseline", "rope"])), n_trials=1,
                       catch=())
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_a_diverged_variant_needs_only_the_seeds_it_ran():
    """The record counts diverged and stalled seeds per variant, zeros included: a variant's zero stalls must
    not hide its divergences (merging the two counts did)."""
    from types import SimpleNamespace

    from ablate.study.progress import needed_points

    spec = SimpleNamespace(variants=("baseline", "rope"), baseline="baseline", seeds=(0, 1, 2, 3, 4))
    points = [{"variant": v, "seed": s} for v in spec.variants for s in spec.seeds]
    record = {"decisions": {}, "diverged": {"baseline": 0, "rope": 2}, "stalled": {"baseline": 0, "rope": 0}}
    ran = {(v, s) for v in spec.variants for s in range(3)}
    assert sorted((p["variant"], p["seed"]) for p in needed_points(spec, points, record, ran)) == sorted(ran)


@pytest.mark.parametrize("code", [130, 143])
def test_an_interrupted_until_decided_study_saves_no_verdicts(study, capsys, monkeypatch, code):
    """Ctrl-C (or SIGTERM) during a round printed 'round at 0 seeds', saved the verdicts of the seeds that had
    finished (rope: 'undecided (most seeds reached)') and the report showed them as the study's."""
    import ablate.cli.study as cli_study
    from ablate.cli import main

    spec, ctx = study
    monkeypatch.setattr(cli_study, "_run_round", lambda args, ctx, threads: code)
    where = [str(spec.path), "--until-decided", "--state-dir", str(spec.path.parent), "--tracking-uri", ctx.tracking_uri]
    assert main(["study", "run", *where]) == code
    out = capsys.readouterr().out
    assert "round at" not in out and "repeated CI" not in out
    assert not ctx.main().user_attrs.get(rounds.K_SEQUENTIAL)
