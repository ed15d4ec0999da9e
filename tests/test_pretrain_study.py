"""The pretrain-then-finetune protocol (issue 12 item 5): strict [pretrain]/[finetune] tables, the
equal-total-compute budget, and a tiny study end to end: stage 1 pretrains, stage 2's pretrained arm
starts from its weights, the report shows both verdicts and the pretraining gap."""

from pathlib import Path

import pytest

from ablate.cli import main
from ablate.errors import AblateError
from ablate.study import Context, load_study, storage_url
from tests.test_study import write_study

PRE_TINY = {"size": "tiny", "context": 16, "budget": "6steps", "tokenizer": "byte"}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, offline_text):
    folder = tmp_path_factory.mktemp("two")
    pre, fine = folder / "pre.txt", folder / "fine.txt"
    pre.write_text(offline_text[:40_000])
    fine.write_text(offline_text[-20_000:])
    return pre, fine


def _study(tmp_path: Path, corpora, pretrain: dict | None = None, finetune: dict | None = None, **top) -> Path:
    pre, fine = corpora
    tables = {"pretrain": {"data": str(pre), "budget": "8steps", **(pretrain or {})}}
    if finetune is not None:
        tables["finetune"] = finetune
    top = {"protocol": "pretrain-then-finetune", "seeds": 3, **PRE_TINY, **top}
    return write_study(tmp_path / "pf.toml", fine, tables, **top)


def test_the_protocol_parses_and_computes_the_equal_total_budget(corpora, tmp_path, capsys):
    from ablate.study.pretrain import total_budget
    from ablate.study.stages import arm_config, finetune_points, pretrain_points

    spec = load_study(_study(tmp_path, corpora, {"lr": 2e-3, "batch_size": 8}, {"lr": 3e-4}))
    assert spec.variants == ("baseline",) and spec.baseline == "baseline"
    assert spec.pretrain == {"config": {"data": str(corpora[0]), "budget": "8steps", "lr": 2e-3, "batch_size": 8},
                             "seed": 1000, "per_seed": False}
    # 8 steps x 8 x 16 pretraining tokens + 6 steps x 4 x 16 finetune tokens
    assert total_budget(spec.config, spec.pretrain) == f"{8 * 8 * 16 + 6 * 4 * 16}tokens"
    assert pretrain_points(spec) == [{"variant": "baseline", "seed": 1000}]
    assert len(finetune_points(spec)) == 9
    pre = arm_config(spec, "baseline", 1, "pretrained", "runs/x")
    assert (pre.init_from, pre.lr, pre.budget, pre.data) == ("runs/x", 3e-4, "6steps", spec.config.data)
    assert arm_config(spec, "baseline", 1, "scratch").lr == spec.config.lr
    assert arm_config(spec, "baseline", 1, "scratch-total").budget == "1408tokens"
    per_seed = load_study(_study(tmp_path, corpora, {"per_seed": True}), sets=["pretrain.budget=4steps"])
    assert [p["seed"] for p in pretrain_points(per_seed)] == [0, 1, 2]
    assert per_seed.pretrain["config"]["budget"] == "4steps" and per_seed.fingerprint() != spec.fingerprint()
    assert main(["study", "show", str(_study(tmp_path, corpora))]) == 0
    out = capsys.readouterr().out
    assert "stage 1, pretraining" in out and "scratch-total" in out


@pytest.mark.parametrize(
    "top,pretrain,finetune,needles",
    [
        ({}, {"lrr": 1e-3}, None, ["pretrain.lrr", "did you mean 'lr'"]),
        ({}, {"context": 32}, None, ["pretrain.context", "shared by both stages"]),
        ({}, {"tokenizer": "char"}, None, ["pretrain.tokenizer", "top level"]),
        ({}, {"variant": "rope"}, None, ["pretrain.variant"]),
        ({}, {"seed": -1}, None, ["pretrain.seed"]),
        ({}, {"per_seed": "yes"}, None, ["pretrain.per_seed"]),
        ({}, {"budget": "30s"}, None, ["pretrain.budget", "steps or tokens"]),
        ({"budget": "1e9flops"}, {}, None, ["'budget'", "steps or tokens"]),
        ({"tokenizer": "char"}, {}, None, ["tokenizer", "byte"]),
        ({}, {"lr": "fast"}, None, ["pretrain.lr", "float"]),
        ({}, {}, {"budget": "2steps"}, ["finetune.budget", "[finetune]"]),
        ({"protocol": "compare", "variants": ["baseline", "rope"]}, {}, None, ["pretrain", "belongs to protocol"]),
    ],
)
def test_bad_pretrain_tables_are_one_line(top, pretrain, finetune, needles, corpora, tmp_path, capsys):
    file = _study(tmp_path, corpora, pretrain, finetune, **top)
    assert main(["study", "show", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(file) in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_stages_that_build_different_models_are_refused_before_training(corpora, tmp_path):
    """A text corpus pretrained, a task finetuned: the pretraining trials trained, then every finetune arm
    failed to load their weights (another vocabulary and context)."""
    from ablate.study import preflight

    file = _study(tmp_path, corpora, tokenizer="byte", data="task:addition(digits=2)", metric="acc")
    with pytest.raises(AblateError, match=r"different models \(vocab_size 256 vs 20\).*one tokenizer"):
        preflight(load_study(file))


def test_missing_pretrain_table_is_one_line(corpora, tmp_path, capsys):
    file = write_study(tmp_path / "p.toml", corpora[1], protocol="pretrain-then-finetune", **PRE_TINY)
    assert main(["study", "show", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[pretrain] table" in err, err


def test_a_tiny_study_pretrains_then_finetunes_from_the_pretrained_weights(corpora, tmp_path, mlflow_uri, capsys):
    import torch
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from ablate.study.stages import finetune_trials, pretrain_trials

    file = _study(tmp_path, corpora, {"lr": 3e-3, "decontaminate": str(corpora[1]), "decontaminate_n": 8},
                  {"lr": 5e-4}, name="pf")
    assert main(["study", "run", str(file), "--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)]) == 0
    spec = load_study(file)
    ctx = Context(spec, storage_url(spec, None, tmp_path), tracking_uri=mlflow_uri)
    pre = pretrain_trials(ctx)
    assert list(pre) == [("baseline", 1000)] and pre[("baseline", 1000)].state == TrialState.COMPLETE
    pre_dir = pre[("baseline", 1000)].user_attrs["ablate.run_dir"]
    trials, missing = finetune_trials(ctx)
    assert not missing and len(trials) == 9
    client = MlflowClient(mlflow_uri)
    pre_run = pre[("baseline", 1000)].user_attrs["ablate.mlflow_run_id"]
    for (variant, seed, arm), t in trials.items():
        run = client.get_run(t.user_attrs["ablate.mlflow_run_id"])
        config = run.data.params
        if arm == "pretrained":
            assert run.data.tags["ablate.init_from"] == pre_dir
            assert run.data.tags["ablate.init_parent_run_id"] == pre_run
            assert float(config["config.lr"]) == 5e-4 and config["config.init_from"] == pre_dir
        else:
            assert "ablate.init_from" not in run.data.tags and config["config.init_from"] == ""
    parent_ckpt = torch.load(Path(pre_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert parent_ckpt["step"] == 8
    steps = {arm: trials[("baseline", 0, arm)].user_attrs["ablate.steps"] for arm in ("scratch", "pretrained",
                                                                                     "scratch-total")}
    assert steps == {"scratch": 6, "pretrained": 6, "scratch-total": 6 + 8}
    capsys.readouterr()
    out_dir = tmp_path / "report"
    assert main(["study", "report", str(file), "--state-dir", str(tmp_path), "--out", str(out_dir), "--no-log"]) == 0
    out = capsys.readouterr().out
    assert "stage 1: pretraining" in out and "equal finetune budget" in out and "equal total compute" in out
    report = (out_dir / "report.md").read_text()
    assert "baseline (init: pre.txt 8steps" in report and "baseline (scratch, 896tokens)" in report
    assert "equal-total-compute/differences.png" in report and "val − train" in report
    assert "documents" in report  # the decontamination counts of the pretraining data
    assert (out_dir / "equal-finetune-budget" / "report.md").exists()
    assert (out_dir / "equal-total-compute" / "differences.png").exists()
