"""`ablate study run --until-decided`: rounds of seeds only for undecided variants (no training here:
a stand-in worker answers each queued trial with a made-up loss, so the scheduling itself is tested)."""

import random

import pytest
from optuna.trial import TrialState

from ablate.errors import AblateError
from ablate.study import Context, create, load_study, storage_url
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
    result, diverged, code = rounds.run_until_decided(ctx, design, lambda: fake_round(ctx, answered), said.append)
    assert code == 0 and result.done and not any(diverged.values())
    assert result.decisions["rope"].decision == "helps" and result.decisions["rope"].n == 3
    assert result.decisions["init_seed=1"].decision == "no detectable effect" and result.decisions["init_seed=1"].n == 5
    assert sorted(s for v, s in answered if v == "rope") == [0, 1, 2]  # decided: no more seeds
    assert sorted(s for v, s in answered if v == "baseline") == [0, 1, 2, 3, 4]
    assert len(answered) == 13 < len(spec.variants) * len(spec.seeds)
    assert len(said) == 2 and "rope: helps" in said[0]
    record = rounds.save(ctx, result, diverged, design)
    assert ctx.main().user_attrs[rounds.K_SEQUENTIAL]["runs_used"] == record["runs_used"] == 13
    cells = rounds.table(record, spec.baseline, spec.metric)
    assert [row[0] for row in cells.rows] == ["rope", "init_seed=1"] and cells.rows[0][-1] == "helps"


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
