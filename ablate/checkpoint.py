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


def load_run_model(run_dir: str | Path, device: str = "cpu", info: dict | None = None):
    """The model of a run directory, in eval mode, with its settings (a ``RunConfig``) and tokenizer.

    A text run built its model and tokenizer from what it saved (``config.json``, ``tokenizer.json``), so
    it loads from any folder without its corpus. A task run, or one made before tokenizers were saved,
    prepares its data again; if that data is no longer what the run was trained on, it says so. ``info``, if
    given, receives the checkpoint's ``step``."""
    import json

    from ablate.config import RunConfig
    from ablate.data.tokenizer_file import load_tokenizer
    from ablate.model import build_model
    from ablate.slots import Dims
    from ablate.run_inputs import prepare_run
    from ablate.variant import parse_variant

    run_dir = Path(run_dir)
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        raise AblateError(f"no checkpoint in {run_dir}; pass the run directory printed by `ablate run`")
    if not path.is_file():
        raise AblateError(f"{path} is not a checkpoint file; delete it and train the run again")
    fix = f"train the run again (ablate run ... --force), or delete {path}"
    ckpt = read_checkpoint(path, device, fix)
    if info is not None:
        info["step"] = int(ckpt["step"])
    try:
        config = RunConfig(**ckpt["config"])
    except TypeError as err:
        raise AblateError(f"checkpoint {path} holds settings this version does not know ({err}); {fix}") from None
    try:
        saved = json.loads((run_dir / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        saved = {}
    tokenizer = load_tokenizer(run_dir, Path(config.cache_dir))
    if tokenizer is not None and isinstance(saved.get("dims"), dict):
        variant = parse_variant(saved.get("variant_name") or config.variant)
        dims = Dims(**saved["dims"])
    else:
        variant, dims, _, data, *_ = prepare_run(config)
        trained_on = (saved.get("data") or {}).get("fingerprint")
        if trained_on and data.meta.get("fingerprint") != trained_on:
            raise AblateError(f"the data {config.data!r} is not what {run_dir} was trained on (it changed since), so "
                              "its tokenizer cannot be rebuilt; restore that data, or train the run again")
        tokenizer = data.tokenizer
    model = build_model(variant, dims, device=device)
    load_weights(model, ckpt["model"], path, fix)
    return model.eval(), config, tokenizer
