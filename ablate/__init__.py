"""ablate: an architecture-ablation workbench for GPT-style language models.

The Python API (the CLI calls the same functions)::

    from ablate import RunConfig, compare, parse_variant, train

    result = train(variant="rope+swiglu", budget="200steps", seed=0)      # or train(RunConfig(...))
    train(variant="baseline", budget="200steps", seed=0, group="my-runs")  # logged to MLflow in a group
    result.final["val_loss"], result.run_dir
    table = compare(group="my-runs")             # runs tracked in MLflow -> a Comparison (verdicts)
    table = compare(records, baseline="baseline")   # or RunRecords you built yourself
    parse_variant("llama+gqa(kv_heads=4)").name
    report = run_study("studies/quickstart.toml", set={"seeds": 2})   # a study file -> its verdicts (a dict)

``train`` and ``compare`` are also the modules ``ablate.train`` and ``ablate.compare``; calling the
module calls the function. Nothing heavy (torch, MLflow) is imported until it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["RunConfig", "compare", "load_records", "make_config", "parse_variant", "run_study", "train",
           "__version__"]

_LAZY = {
    "RunConfig": ("ablate.config", "RunConfig"),
    "make_config": ("ablate.config", "make_config"),
    "parse_variant": ("ablate.variant", "parse_variant"),
    "load_records": ("ablate.compare", "load_records"),
    "run_study": ("ablate.api", "run_study"),
}


def __getattr__(name: str) -> Any:
    if name in ("train", "compare"):  # `import ablate; ablate.train(...)`: the callable module
        return importlib.import_module(f"ablate.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ablate' has no attribute {name!r}")
