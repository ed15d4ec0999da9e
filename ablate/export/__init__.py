"""Export a run to Hugging Face ``transformers``: ``config.json`` + ``model.safetensors`` (+ tokenizer, card).

``export_run(run_dir, out_dir)`` loads a run's checkpoint; ``export_hf(model, out_dir)`` does the rest:
pick the architecture (``targets``: GPT-2, LLaMA or Mistral, or a one-line refusal), build it with the
model's weights (``hf``), check that it computes the same logits, and write it with transformers'
``save_pretrained`` into a temporary folder that is moved into place only when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.export.targets import EXPORTABLE, HF_CLASSES, hf_target

GAP_LIMIT = 1e-3  # float32 logits of the same function differ by ~1e-6; more than this is a mapping bug


@dataclass(frozen=True)
class Export:
    """What ``export_hf`` wrote."""

    folder: Path
    target: str  # gpt2 | llama | mistral
    hf_class: str
    variant: str
    params: int
    max_logit_gap: float  # max |logit difference| against ablate's model, float32 on CPU
    tokenizer_saved: bool
    files: tuple[str, ...]
    run_status: str = ""  # the exported run's result.json status (finished, interrupted, diverged); "" if none
    run_steps: int | None = None  # the steps its checkpoint holds


def check_folder(out_dir: str | Path, force: bool) -> Path:
    """``out_dir`` is missing, empty, or (``force``) a folder whose same-named files are overwritten."""
    from ablate.config import check_folder as writable_folder

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise AblateError(f"{out} is a file, not a folder; give a folder to export into")
    writable_folder(out, "export folder")  # a file on the way, or a place folders cannot be made
    run_files = [name for name in ("checkpoint.pt", "result.json", "metrics.jsonl") if (out / name).exists()]
    if run_files:  # an export writes config.json: over a run's own, it would break resume, sample and --init-from
        raise AblateError(f"{out} is a run directory (it holds {run_files[0]}), and an export would overwrite its "
                          f"config.json, even with --force; export into another folder, e.g. {out / 'hf'}")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise AblateError(f"{out} exists and is not empty; give a new folder, or pass --force to overwrite the "
                          f"files an export writes there")
    return out


@contextmanager
def _quiet():
    """No transformers progress bars while writing (the command prints its own summary)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def export_hf(model, out_dir: str | Path, *, tokenizer=None, source: dict[str, Any] | None = None,
              force: bool = False) -> Export:
    """Write ``model`` (an ``ablate.model.GPT``) as a transformers model into ``out_dir``.

    ``tokenizer`` (the run's) is written as ``tokenizer.json`` when an exact Hugging Face form exists;
    ``source`` (``run_dir``, ``config``, ``result``) goes into the model card.
    """
    from ablate.export.card import write_card
    from ablate.export.hf import build_hf_model, logit_gap, require_transformers
    from ablate.export.tokenizer import save_tokenizer

    target = hf_target(model.variant, model.dims)  # a refusal needs no transformers
    out = check_folder(out_dir, force)
    require_transformers()
    eot = getattr(tokenizer, "eot", None)
    hf = build_hf_model(target, model, eot)
    gap = logit_gap(model, hf)
    if not gap <= GAP_LIMIT:
        raise RuntimeError(f"bug: the {HF_CLASSES[target]} built from {model.variant.name} differs from it by "
                           f"{gap:.3g} in the logits; nothing was written")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        with _quiet():
            hf.save_pretrained(tmp)
            saved = save_tokenizer(tokenizer, tmp, model.dims.context)
        write_card(tmp, model, target, gap=gap, tokenizer=tokenizer, tokenizer_saved=saved, source=source or {})
        files = tuple(sorted(p.name for p in tmp.iterdir()))
        for name in files:
            (tmp / name).chmod(0o644)  # some are written private; an export is meant to be shared
        if not out.exists():
            os.replace(tmp, out)
        else:  # empty, or --force: same-named files are replaced, others left alone
            if blocked := [name for name in files if (out / name).is_dir() and not (out / name).is_symlink()]:
                raise AblateError(f"{out} has a folder where the export writes a file ({', '.join(blocked)}); "
                                  "move it away or export into another folder; nothing was written")
            for name in files:
                os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    params = sum(p.numel() for p in model.parameters())
    return Export(out, target, HF_CLASSES[target], model.variant.name, params, gap, saved, files)


def export_run(run_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> Export:
    """Export the model of a run directory (its ``checkpoint.pt``), with its tokenizer and a model card."""
    from ablate.checkpoint import load_run_model

    check_folder(out_dir, force)  # before the checkpoint is read
    info: dict = {}
    model, config, tokenizer = load_run_model(run_dir, info=info)
    try:
        result = json.loads((Path(run_dir) / "result.json").read_text("utf-8"))
    except (OSError, ValueError):
        result = {}
    result = result if isinstance(result, dict) else {}
    if not result:  # no result.json: killed (kill -9, a lost machine), or still training
        result = {"status": "unfinished", "steps": info["step"]}  # the step of the weights exported
    source = {"run_dir": str(run_dir), "config": config.to_dict(), "result": result}
    done = export_hf(model, out_dir, tokenizer=tokenizer, source=source, force=force)
    steps = result.get("steps")
    return dataclasses.replace(done, run_status=str(result.get("status", "")),
                               run_steps=steps if isinstance(steps, int) else None)


__all__ = ["EXPORTABLE", "Export", "check_folder", "export_hf", "export_run", "hf_target"]
