"""--init-from RUN: a run starts from another run's final weights (fresh optimizer, its own budget);
a parent of another architecture or tokenizer is a one-line error; MLflow records the parent and
`compare` shows pretrained runs as their own variant."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from ablate.cli import main
from ablate.config import RunConfig
from ablate.errors import AblateError
from ablate.train import Callback, train


def _config(corpus, tmp, **kw):
    base = dict(size="tiny", context=32, data=str(corpus), tokenizer="char", budget="10steps", batch_size=4,
                eval_points=2, eval_batches=2, out_dir=str(tmp / "runs"), cache_dir=str(tmp / "cache"), log_every=5)
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def parent(small_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parent")
    result = train(_config(small_corpus, tmp, seed=7))
    assert result.status == "finished"
    return Path(result.run_dir)


class Weights(Callback):
    """The model's weights when training starts, before any optimizer step."""

    def on_start(self, run):
        self.state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        self.step = run.step


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_finetune_starts_from_exactly_the_parents_final_weights(parent, small_corpus, tmp_path):
    seen = Weights()
    cfg = _config(small_corpus, tmp_path, init_from=str(parent), budget="4steps", lr=3e-4, min_lr=3e-5, seed=0)
    result = train(cfg, [seen])
    final = torch.load(parent / "checkpoint.pt", weights_only=True)["model"]
    assert seen.step == 0 and seen.state.keys() == final.keys()
    assert all(torch.equal(seen.state[k], final[k]) for k in final)
    # a scratch run of the same config starts elsewhere (so the check above is not vacuous)
    scratch = Weights()
    train(cfg.replace(init_from="", out_dir=str(tmp_path / "scratch")), [scratch])
    assert not all(torch.equal(scratch.state[k], final[k]) for k in final)
    # its own budget and a fresh optimizer: 4 steps from step 0, the run directory differs from scratch's
    assert result.status == "finished" and result.steps == 4 and result.history[0]["step"] == 1
    assert cfg.fingerprint() != cfg.replace(init_from="").fingerprint()
    init = result.extra["init_from"]
    assert init["run_dir"] == str(parent) and init["seed"] == 7 and init["steps"] == 10
    assert json.loads((Path(result.run_dir) / "config.json").read_text())["init"]["label"] == init["label"]
    # the label names the pretraining recipe, not its seed
    from ablate.init_from import resolve_parent
    assert resolve_parent(str(parent), tmp_path).label().startswith("small.txt 10steps ")


def test_run_directories_made_before_init_from_keep_their_names():
    assert RunConfig().fingerprint() == "c2fd504bcd"  # as before the setting existed
    assert RunConfig(variant="rope", seed=3).fingerprint() == "bafcd9c296"


@pytest.mark.parametrize("change,needle", [
    ({"variant": "rope"}, "architecture differs"),
    ({"variant": "swiglu"}, "architecture differs"),
    ({"context": 16}, "dims differ"),
    ({"tokenizer": "byte"}, "tokenizer differs"),
])
def test_a_parent_that_does_not_fit_is_a_one_line_error(parent, small_corpus, tmp_path, change, needle):
    with pytest.raises(AblateError) as err:
        train(_config(small_corpus, tmp_path, init_from=str(parent), **change))
    assert needle in _one_line(err)


def test_a_char_vocabulary_from_another_corpus_is_another_tokenizer(parent, offline_text, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(offline_text[200_000:260_000] + "\u00e9")  # one character the parent never saw
    with pytest.raises(AblateError) as err:
        train(_config(other, tmp_path, init_from=str(parent)))
    text = _one_line(err)
    assert "tokenizer differs" in text and "byte or gpt2" in text


def test_missing_damaged_or_unfinished_parents(parent, small_corpus, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(parent, copy)
    cfg = _config(small_corpus, tmp_path, init_from=str(copy))
    (copy / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AblateError) as err:
        train(cfg)
    assert "cannot read" in _one_line(err) and "damaged" in str(err.value)
    (copy / "checkpoint.pt").unlink()
    with pytest.raises(AblateError) as err:
        train(cfg)
    assert "no checkpoint.pt" in _one_line(err)
    shutil.copy(parent / "checkpoint.pt", copy / "checkpoint.pt")
    result = json.loads((copy / "result.json").read_text())
    (copy / "result.json").write_text(json.dumps(dict(result, status="interrupted")))
    with pytest.raises(AblateError) as err:
        train(cfg)
    assert "has not finished" in _one_line(err)
    with pytest.raises(AblateError) as err:
        train(cfg.replace(init_from=str(tmp_path / "nowhere")))
    assert "not an MLflow run id" in _one_line(err)


def test_cli_mismatch_exits_2_with_one_line(parent, small_corpus, tmp_path, capsys):
    from conftest import tiny_run_args

    argv = ["run", "--variant", "rope", "--init-from", str(parent), "--no-track", *tiny_run_args(small_corpus, tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "architecture differs" in err


def test_mlflow_parent_by_run_id_tags_and_compare(small_corpus, tmp_path, mlflow_uri, monkeypatch):
    from mlflow.tracking import MlflowClient

    from ablate.compare import load_records
    from ablate.track import MLflowTracker

    exp = "t-init-from"
    base = _config(small_corpus, tmp_path, budget="6steps")
    pre = train(base.replace(seed=11, out_dir=str(tmp_path / "pre")), [MLflowTracker(mlflow_uri, exp)])
    client = MlflowClient(mlflow_uri)
    (pre_run,) = client.search_runs([client.get_experiment_by_name(exp).experiment_id], "tags.`ablate.seed` = '11'")
    parent_id = pre_run.info.run_id
    # the parent's folder is gone from this machine: its logged checkpoint is downloaded
    shutil.rmtree(pre.run_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    seen = Weights()
    fine = train(base.replace(init_from=parent_id, budget="4steps"), [seen, MLflowTracker(mlflow_uri, exp)])
    assert fine.status == "finished"
    downloaded = torch.load(tmp_path / "cache" / "parents" / parent_id / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(seen.state[k], downloaded[k]) for k in downloaded)
    train(base.replace(budget="4steps"), [MLflowTracker(mlflow_uri, exp)])  # scratch, same seed 0
    # by run directory: the tracker finds the parent's MLflow id through the directory it recorded
    pre2 = train(base.replace(seed=12, out_dir=str(tmp_path / "pre2")), [MLflowTracker(mlflow_uri, exp)])
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    train(base.replace(init_from=pre2.run_dir, budget="4steps", seed=1), [MLflowTracker(mlflow_uri, exp)])
    runs = client.search_runs([client.get_experiment_by_name(exp).experiment_id], "tags.`ablate.init_from` != ''")
    by_from = {r.data.tags["ablate.init_from"]: r.data.tags for r in runs}
    assert by_from[parent_id]["ablate.init_parent_run_id"] == parent_id
    (pre2_run,) = client.search_runs([client.get_experiment_by_name(exp).experiment_id], "tags.`ablate.seed` = '12'")
    assert by_from[pre2.run_dir]["ablate.init_parent_run_id"] == pre2_run.info.run_id
    assert by_from[parent_id]["ablate.init_label"] == by_from[pre2.run_dir]["ablate.init_label"]  # one recipe
    records = load_records(tracking_uri=mlflow_uri, experiment=exp)
    variants = {r.variant for r in records}
    label = by_from[parent_id]["ablate.init_label"]
    assert f"baseline (init: {label})" in variants and "baseline" in variants
    # same budget, data, tokenizer for scratch and finetuned runs: no fairness key separates them
    tuned = [r for r in records if r.variant != "baseline"]
    scratch = [r for r in records if r.variant == "baseline" and r.seed == 0 and "steps" in r.fairness["budget"]
               and r.fairness["budget"] == "4steps"]
    assert scratch and all(r.fairness == scratch[0].fairness for r in tuned)
