"""Run configuration: strings and numbers only, layered defaults → TOML file → command-line flags.

Unknown keys and wrong types are errors that name the key (and the file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ablate.errors import AblateError


@dataclass(frozen=True)
class RunConfig:
    # what is trained
    variant: str = "baseline"
    size: str = "cpu"
    d_model: int = 0  # 0: the size preset's
    n_layers: int = 0
    n_heads: int = 0
    context: int = 0
    # on what
    data: str = "shakespeare"
    data_file: str = ""
    tokenizer: str = "char"
    val_split: str = "auto"  # auto | tail | documents (ablate.data.prepare)
    decontaminate: str = ""  # drop training documents sharing an n-gram with this text (path, or NAME:val)
    decontaminate_n: int = 13  # words per n-gram (GPT-3 used 13)
    init_from: str = ""  # a run directory or MLflow run id: start from its final weights (fresh optimizer)
    # for how long, and how
    budget: str = "500steps"
    seed: int = 0
    batch_size: int = 12
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: float = 0.05  # < 1: fraction of the budget; >= 1: optimizer steps
    schedule: str = "cosine"  # cosine | linear | constant | inverse-sqrt
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    label_smoothing: float = 0.0  # training loss only; evaluation never smooths
    # evaluation: at fixed fractions of the budget, on fixed held-out batches
    eval_points: int = 10
    eval_batches: int = 20
    eval_seed: int = 1234  # held-out batches are the same for every variant and every seed
    divergence_factor: float = 3.0  # stop when the loss exceeds this multiple of its start
    # where
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 autocast on capable GPUs) | float32 | bfloat16 | tf32 (CUDA)
    compile: bool = False
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0: at every eval point
    out_dir: str = "runs"
    cache_dir: str = "data/cache"

    def __post_init__(self) -> None:
        from ablate.budget import canonical_budget

        object.__setattr__(self, "budget", canonical_budget(self.budget))  # "30 steps" is 30steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def fingerprint(self, exclude: tuple[str, ...] = ("device", "out_dir", "cache_dir", "log_every", "compile"),
                    variant: str | None = None, task_as_typed: bool = False) -> str:
        """A hash of what determines the result (not where it runs or how often it saves). ``variant``: the
        canonical name of ``self.variant`` where the caller has resolved it, so that two spellings of one
        variant (``swiglu+rope``, ``rope+swiglu``) are one run; canonical spellings keep their hash."""
        items = {k: v for k, v in self.to_dict().items() if k not in exclude}
        items = {k: v for k, v in items.items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}
        items.update({k: v for k, v in NOT_THE_RESULT.items() if k in items})
        if variant is not None and "variant" in items:
            items["variant"] = variant
        if isinstance(items.get("tokenizer"), str):  # "BPE:300" and "bpe:300" are one tokenizer, so one run
            items["tokenizer"] = items["tokenizer"].strip().lower()
        if isinstance(items.get("data"), str) and not task_as_typed:  # task:Addition, task:addition(digits=3): one
            items["data"] = canonical_task(items["data"])  # (task_as_typed: the hash before, of older run dirs)
        return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:10]


def canonical_task(data: str) -> str:
    """``data`` as the task's canonical spec (``task:addition(digits=3,reverse=true)``) when it names a
    task that parses, else unchanged (a corpus, or a spelling that ``prepare_run`` will refuse)."""
    if not data.strip().lower().startswith("task:"):
        return data
    from ablate.tasks import parse_task  # lazily: the tasks import torch, the CLI's parser does not

    try:
        return "task:" + parse_task(data).spec
    except AblateError:
        return data


# settings that do not change what is trained: their default stands in for any value, so a run resumes
# whatever interval it is given (and run directories made at the default keep their names)
NOT_THE_RESULT = {"checkpoint_every": 0}

# settings added after run directories existed: absent from the fingerprint at their defaults, so
# existing run directories keep their names
ADDED_LATER = {"init_from": "", "label_smoothing": 0.0, "val_split": "auto", "decontaminate": "",
               "decontaminate_n": 13}

FIELD_HELP = {
    "variant": "variant string, preset or variants/ file, e.g. rope+swiglu",
    "size": "size preset (see `ablate list`)",
    "data": "tinyshakespeare | shakespeare (offline) | a text file or folder | hf:NAME[:CONFIG] (extra ablate[hf])",
    "data_file": "local copy of the dataset's file (e.g. tinyshakespeare's input.txt)",
    "tokenizer": "char | byte | gpt2 | bpe:N",
    "decontaminate": "evaluation text to decontaminate against: a path, or NAME:val (e.g. tinyshakespeare:val)",
    "decontaminate_n": "n-gram length in words for --decontaminate (13, as GPT-3)",
    "val_split": "auto (last 10%% of characters; held-out documents for corpora >= 256 MiB) | tail | documents",
    "init_from": "start from this run's final weights (run directory or MLflow run id); same variant, dims, tokenizer",
    "budget": "500steps | 2Mtokens | 1e14flops | 90s",
    "warmup": "warmup: a fraction of the budget (<1) or steps (>=1)",
    "schedule": "cosine | linear | constant | inverse-sqrt",
    "label_smoothing": "label smoothing of the training loss, in [0, 1) (0.1 in Vaswani et al. 2017); eval loss never smooths",
    "eval_points": "evaluations spread evenly over the budget",
    "eval_batches": "held-out batches per evaluation (the same for every variant and seed)",
    "eval_seed": "seed of the held-out batches (keep it fixed across a comparison)",
    "checkpoint_every": "steps between checkpoints (0: at each eval point)",
    "d_model": "residual width (0: the size preset's)",
    "n_layers": "transformer blocks (0: the size preset's)",
    "n_heads": "attention heads (0: the size preset's)",
    "context": "tokens of context the model sees (0: the size preset's)",
    "seed": "seed of the initial weights and of the training data order (one seed = one paired sample)",
    "batch_size": "sequences per micro-batch",
    "grad_accum": "micro-batches per optimizer step (tokens per step = batch-size x grad-accum x context)",
    "lr": "peak learning rate of AdamW, reached after the warmup",
    "min_lr": "learning rate at the end of the decay",
    "weight_decay": "AdamW weight decay, on weight matrices and embeddings only (never norms or biases)",
    "beta1": "AdamW beta1 (momentum of the gradient)",
    "beta2": "AdamW beta2 (momentum of its square)",
    "grad_clip": "clip the global gradient norm to this (0: no clipping)",
    "divergence_factor": "stop as diverged when the loss exceeds this multiple of its first value, or of ln(vocabulary) "
                         "where that is higher (a finetune), or is not finite",
    "device": "auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps",
    "dtype": "auto (bf16 autocast on capable GPUs, fp32 on CPU) | float32 | bfloat16 (autocast) | "
             "tf32 (float32 with TF32 tensor-core matmuls; CUDA only)",
    "compile": "torch.compile the model (costs 15-50 s once on CPU; see docs/bench/)",
    "log_every": "steps between training-loss lines (and host reads of the loss)",
    "out_dir": "folder of run directories (one per configuration and seed)",
    "cache_dir": "folder of prepared (tokenized) datasets, shared between runs",
}

# flags of `ablate run` that a config file might try to set; they do not change what is trained
COMMAND_LINE_ONLY = ("threads", "tracking_uri", "experiment", "no_track", "resume", "force", "json", "group")
SCHEDULES = ("cosine", "linear", "constant", "inverse-sqrt")
DTYPES = ("auto", "float32", "bfloat16", "tf32")


def coerce(key: str, value: Any, where: str = "") -> Any:
    """Check ``value`` against RunConfig's field ``key``; ints are accepted where floats are."""
    known = {f.name: f for f in fields(RunConfig)}
    origin = f" in {where}" if where else ""
    if key not in known:
        import difflib

        flag = key.replace("_", "-")
        if key in COMMAND_LINE_ONLY:  # how a run is executed or tracked, not what it trains
            raise AblateError(f"{key!r}{origin} is a flag of the command, not a setting of the run; pass --{flag} "
                              "on the command line instead")
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AblateError(f"unknown setting {key!r}{origin}{hint} (settings: {', '.join(known)})")
    default = known[key].default
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        raise AblateError(f"setting {key!r}{origin} must be {type(default).__name__}, got {value!r}")
    return value


def read_toml(path: str | Path, what: str, hint: str = "") -> dict[str, Any]:
    """A user's TOML file (config, study, variant); a missing or malformed file is one clear line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AblateError(f"{what} {path} not found{hint}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise AblateError(f"cannot read {what} {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise AblateError(f"{what} {path} is not valid TOML: {err}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    return {k: coerce(k, v, str(path)) for k, v in read_toml(path, "config file").items()}


def make_config(file: str | Path | None = None, **overrides) -> RunConfig:
    """Defaults, then the file's settings, then explicit overrides (None means "not given")."""
    values: dict[str, Any] = {}
    if file:
        values.update(load_config_file(file))
    values.update({k: coerce(k, v) for k, v in overrides.items() if v is not None})
    config = RunConfig(**values)
    validate(config)
    return config


# every number's range, checked in one place: (low, low inclusive, high, high inclusive, example)
RANGES: dict[str, tuple[float | None, bool, float | None, bool, str]] = {
    "lr": (0, False, None, False, "3e-4"), "min_lr": (0, True, None, False, "1e-4"),
    "beta1": (0, True, 1, False, "0.9"), "beta2": (0, True, 1, False, "0.99"),
    "weight_decay": (0, True, None, False, "0.1"), "grad_clip": (0, True, None, False, "1.0 (0: no clipping)"),
    "warmup": (0, True, None, False, "0.05 (a fraction) or 100 (steps)"),
    "label_smoothing": (0, True, 1, False, "0.1"), "divergence_factor": (1, False, None, False, "3.0"),
    "checkpoint_every": (0, True, None, False, "0 (at each eval point) or 100"),
    "seed": (0, True, 2**32 - 1, True, "0"), "eval_seed": (0, True, 2**32 - 1, True, "1234"),  # torch/numpy seeds
    "d_model": (0, True, None, False, "0 (the size preset's) or 256"), "n_layers": (0, True, None, False, "4"),
    "n_heads": (0, True, None, False, "4"), "context": (0, True, None, False, "256"),
}


def _check_range(config: RunConfig, key: str) -> None:
    import math

    value = getattr(config, key)
    low, low_in, high, high_in, example = RANGES[key]
    bad = not math.isfinite(value) or (low is not None and (value < low or (value == low and not low_in))) \
        or (high is not None and (value > high or (value == high and not high_in)))
    if bad:
        lo = "" if low is None else ("[" if low_in else "(") + f"{low:g}, "
        hi = "inf)" if high is None else (f"{high}" if isinstance(high, int) else f"{high:g}") + ("]" if high_in else ")")
        raise AblateError(f"{key} must be a finite number in {lo}{hi}, got {value}; e.g. --{key.replace('_', '-')} {example}")


def check_folder(path: str | Path, flag: str) -> None:
    """A folder ablate will write into: absent (it is made), or a writable directory; never a file."""
    import os
    import tempfile

    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise AblateError(f"{flag} {path}: {part} is a file, not a folder; pass the path of a folder")
            if not os.access(part, os.W_OK | os.X_OK):
                raise AblateError(f"{flag} {path}: {part} is not writable; pass a folder you can write to")
            try:  # what access() cannot tell: /proc, read-only mounts, a full disk's inodes
                tempfile.TemporaryDirectory(dir=part).cleanup()
            except OSError as err:
                raise AblateError(f"{flag} {path}: cannot create folders in {part} ({err.strerror}); pass a folder "
                                  "you can write to") from None
            return


def validate(config: RunConfig) -> None:
    for key in RANGES:
        _check_range(config, key)
    check_folder(config.out_dir, "--out-dir")
    check_folder(config.cache_dir, "--cache-dir")
    if config.schedule not in SCHEDULES:
        raise AblateError(f"unknown schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    for key in ("batch_size", "grad_accum", "eval_points", "eval_batches", "log_every"):
        if getattr(config, key) < 1:
            flag = key.replace("_", "-")
            raise AblateError(f"--{flag} ({key} in a config file) must be at least 1, got {getattr(config, key)}; "
                              f"e.g. --{flag} {getattr(RunConfig, key)}")
    if config.lr <= 0 or config.min_lr < 0 or config.min_lr > config.lr:
        raise AblateError(f"need 0 <= min_lr <= lr and lr > 0; got lr={config.lr}, min_lr={config.min_lr}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise AblateError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}; e.g. 0.1")
    if config.dtype not in DTYPES:
        raise AblateError(f"unknown dtype {config.dtype!r}; choose {', '.join(DTYPES)}")
    if config.device not in ("auto", "cpu", "cuda", "mps") and not config.device.startswith("cuda:"):
        raise AblateError(f"unknown device {config.device!r}; choose auto, cpu, cuda, cuda:N or mps")
    if config.decontaminate_n != ADDED_LATER["decontaminate_n"] and not config.decontaminate:
        raise AblateError(f"--decontaminate-n {config.decontaminate_n} sets the n-gram length of --decontaminate, "
                          "which is not given; add --decontaminate PATH, or leave --decontaminate-n out")
