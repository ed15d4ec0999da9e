"""Reading what ``ablate run`` checkpointed: every damage a user can meet (truncated, garbage, empty, an
unsafe pickle, the wrong keys or shapes, content changed since it was written) is one line naming the
file and the fix, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ablate.errors import AblateError
from ablate.fileio import digest_matches


CHECKPOINT_KEYS = ("model", "optimizer", "step", "tokens", "train_seconds", "history", "evals", "initial_loss",
                   "rng_cpu", "fingerprint", "config")


def digest_path(checkpoint: Path) -> Path:
    """Where a checkpoint's content digest is kept (written after the checkpoint; absent in older runs)."""
    return checkpoint.with_name(checkpoint.name + ".digest")


def read_checkpoint(path: Path, device: str, fix: str) -> dict[str, Any]:
    """A checkpoint ``ablate run`` wrote, or one line naming the file and ``fix`` (truncated, garbage, empty,
    an unsafe pickle that ``weights_only`` refuses, a file that lacks a checkpoint's keys, or one whose
    content no longer matches the digest written beside it)."""
    if not Path(path).is_file():
        raise AblateError(f"checkpoint {path} is not a file; {fix}")
    recorded = digest_path(path)
    if digest_matches(path, recorded) is False:
        raise AblateError(f"checkpoint {path} has changed since it was written (its digest does not match "
                          f"{recorded.name}); {fix}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged file
        why = _clip(str(err).strip().splitlines()[0]) if str(err).strip() else type(err).__name__
        raise AblateError(f"checkpoint {path} cannot be read ({why}); {fix}") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise AblateError(f"checkpoint {path} is not an ablate checkpoint (no {', '.join(missing[:3])}); {fix}")
    return ckpt


def load_weights(module, state: Any, path: Path, fix: str) -> None:
    """``module.load_state_dict(state)``, a mismatch (other keys or shapes) one line naming the file."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
        why = _clip(" ".join(str(err).split()), 160)
        raise AblateError(f"checkpoint {path} does not fit this model ({why}); {fix}") from None


def _clip(text: str, limit: int = 120) -> str:
    """``text`` cut at a word boundary within ``limit`` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(" ,.;:") + " …"
