"""Shared fixtures. Test data come from ../shared/data (or the ABLATE_TEST_* variables .ci/run sets);
the product itself never reads that folder: tests hand the files to it through its own options."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _shared_file(env: str, relative: str) -> Path:
    path = Path(os.environ.get(env) or SHARED / relative)
    if not path.is_file():
        pytest.skip(f"test data {relative} not found (set {env})")
    return path


@pytest.fixture(scope="session")
def tinyshakespeare_path() -> Path:
    return _shared_file("ABLATE_TEST_TINYSHAKESPEARE", "tinyshakespeare/input.txt")


@pytest.fixture(scope="session")
def gpt2_ranks_path() -> Path:
    return _shared_file("ABLATE_TEST_GPT2_RANKS", "tiktoken/gpt2.tiktoken")
