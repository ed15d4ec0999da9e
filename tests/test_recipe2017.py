"""The 2017 recipe (issue 13): label smoothing on the training loss only, the sqrt(d_model) embedding scale as a
model option, and recipes/vaswani2017.toml. Defaults change nothing (tests/test_train_history.py pins that)."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ablate.config import RunConfig, make_config
from ablate.errors import AblateError
from ablate.train import evaluate, train
from ablate.testing import tiny_model
from ablate.variant import parse_variant
from conftest import write_generated_corpus

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    words = "a man a plan a canal panama was it a car or a cat i saw"
    return write_generated_corpus(tmp_path_factory.mktemp("ls") / "gen.txt", words, 2000, seed=1, longest=10)


def test_label_smoothing_is_an_argument_of_the_loss_and_zero_is_plain_cross_entropy():
    model = tiny_model("baseline")
    x = torch.randint(0, 50, (2, 16))
    y = torch.randint(0, 50, (2, 16))
    y[0, :4] = -1  # ignored positions stay ignored
    logits, plain = model(x, y)
    _, zero = model(x, y, label_smoothing=0.0)
    _, smooth = model(x, y, label_smoothing=0.1)
    assert zero.item() == plain.item()
    flat = logits.float().view(-1, logits.size(-1))
    assert plain.item() == F.cross_entropy(flat, y.view(-1), ignore_index=-1).item()
    assert smooth.item() == pytest.approx(
        F.cross_entropy(flat, y.view(-1), ignore_index=-1, label_smoothing=0.1).item(), rel=1e-6)
    assert smooth.item() != plain.item()


def test_label_smoothing_changes_the_training_loss_but_never_the_evaluation_loss(corpus, tmp_path):
    common = dict(data=str(corpus), size="tiny", budget="3steps", batch_size=4, eval_points=1, eval_batches=2,
                  warmup=1.0, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), log_every=1)
    plain = train(make_config(**common))
    smooth = train(make_config(**common, label_smoothing=0.1))
    # the same initial weights and batch: the step-0 evaluation is identical (eval never smooths) ...
    assert plain.evals[0]["step"] == smooth.evals[0]["step"] == 0
    assert plain.evals[0]["val_loss"] == smooth.evals[0]["val_loss"]
    # ... while the first training loss is the smoothed objective, which is larger near the uniform start
    assert smooth.history[0]["train_loss"] != plain.history[0]["train_loss"]
    # later evaluations are plain cross-entropy of the (differently trained) model, not a smoothed loss
    run_model_loss = smooth.evals[-1]["val_loss"]
    assert math.isfinite(run_model_loss) and smooth.evals[-1]["step"] == 3


def test_evaluate_never_smooths():
    model = tiny_model("baseline")
    batches = [(torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))) for _ in range(2)]
    expected = sum(model(x, y)[1].item() for x, y in batches) / 2
    assert evaluate(model, batches, "cpu", None) == expected


def test_label_smoothing_is_range_checked_and_absent_from_the_fingerprint_at_its_default():
    with pytest.raises(AblateError, match=r"label_smoothing must be .*\[0, 1\)"):
        make_config(label_smoothing=1.0)
    with pytest.raises(AblateError, match="label_smoothing must be"):
        make_config(label_smoothing=-0.1)
    from ablate.config import ADDED_LATER

    # absent from the fingerprint at its default, so run directories of existing runs keep their names
    assert ADDED_LATER["label_smoothing"] == RunConfig().label_smoothing == 0.0
    config = RunConfig()
    assert config.replace(label_smoothing=0.1).fingerprint() != config.fingerprint()


def test_emb_scale_multiplies_the_token_embedding_by_sqrt_d_model():
    seen = {}

    def capture(name):
        def hook(module, args):
            seen[name] = args[0].detach().clone()
        return hook

    x = torch.randint(0, 50, (2, 16))
    for text in ("none", "none+emb_scale=true"):
        model = tiny_model(text)  # same seed: the scale is applied in forward, the initial weights are equal
        model.blocks[0].register_forward_pre_hook(capture(text))
        model(x)
    d = tiny_model("none").dims.d_model
    torch.testing.assert_close(seen["none+emb_scale=true"], seen["none"] * math.sqrt(d), rtol=0, atol=0)
    a, b = tiny_model("sinusoidal"), tiny_model("sinusoidal+emb_scale=true")
    assert not torch.equal(a(x)[0], b(x)[0])


def test_emb_scale_is_a_model_option_absent_from_the_hash_by_default():
    base, scaled = parse_variant("baseline"), parse_variant("emb_scale=true")
    assert "emb_scale" not in base.to_dict()["model"] and base.hash == "7afe0bfc6576"
    assert scaled.name == "emb_scale=true" and scaled.hash != base.hash
    assert parse_variant(scaled.name) == scaled
    with pytest.raises(AblateError, match="emb_scale"):
        parse_variant("emb_scale=2")


def test_the_2017_recipe_file_loads():
    config = make_config(ROOT / "recipes" / "vaswani2017.toml")
    assert config.label_smoothing == 0.1 and config.schedule == "inverse-sqrt"
    assert (config.beta1, config.beta2) == (0.9, 0.98)
    variant = parse_variant(config.variant)
    assert variant.model.emb_scale and variant.model.dropout == 0.1
    assert variant["position"].name == "sinusoidal" and variant["block"].name == "post"
    assert variant["mlp"].name == "relu"
