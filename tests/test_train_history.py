"""The trainer's loss history is bit-identical to one recorded from commit 4241a7d (before the trainer was
split into named steps): same data order, same arithmetic, same RNG use. If this fails, results changed."""

import json
from pathlib import Path

import pytest

from ablate.config import RunConfig
from ablate.train import train
from conftest import write_generated_corpus

RECORDED = Path(__file__).parent / "data" / "train_history.json"


@pytest.fixture(scope="module")
def generated_corpus(tmp_path_factory) -> Path:
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly bumpkins"
    return write_generated_corpus(tmp_path_factory.mktemp("generated") / "gen.txt", words, 3000, seed=0)


@pytest.mark.parametrize("variant", ["baseline", "rope+swiglu", "rmsnorm+post"])
def test_loss_history_is_bit_identical_to_the_recorded_one(variant, generated_corpus, tmp_path):
    recorded = json.loads(RECORDED.read_text())[variant]
    settings = dict(recorded["config"], data=str(generated_corpus), out_dir=str(tmp_path / "runs"),
                    cache_dir=str(tmp_path / "cache"))
    result = train(RunConfig(**settings))
    assert result.steps == recorded["steps"]
    for key in ("train_loss", "grad_norm", "lr"):
        assert [float(h[key]).hex() for h in result.history] == recorded[key], key
    assert [float(e["val_loss"]).hex() for e in result.evals] == recorded["val_loss"]
