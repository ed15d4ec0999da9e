"""The metrics a comparison or a study can be judged on, and which way is better for each.

Loss-like metrics (``val_loss``, ``val_bpb``) are lower-is-better. The exact-match accuracies of the
synthetic tasks (:mod:`ablate.tasks`) are higher-is-better: ``acc`` (in distribution),
``acc_len<L>`` (the longer operand has L digits), ``acc_longer`` (mean over lengths never trained on)
and ``acc_op_add|sub|mul|div`` (per operator, calculator). A run records the final value of metric
``m`` as ``final_<m>`` in MLflow and as ``m`` in ``result.final``; its eval curve under ``m``.
"""

from __future__ import annotations

import re

from ablate.errors import AblateError

LOSS_METRICS = ("val_loss", "val_bpb")
ACCURACY_PATTERN = re.compile(r"acc(_len[1-9][0-9]*|_longer|_op_(add|sub|mul|div))?")
ACCURACY_EXAMPLES = "acc, acc_len1 … acc_len<2·digits>, acc_longer, acc_op_add|sub|mul|div"


def is_accuracy(metric: str) -> bool:
    """A task accuracy (exact match, in [0, 1], higher is better)."""
    return bool(ACCURACY_PATTERN.fullmatch(metric))


def known(metric: str) -> bool:
    return metric in LOSS_METRICS or is_accuracy(metric)


def lower_is_better(metric: str) -> bool:
    return not is_accuracy(metric)


def direction(metric: str) -> str:
    """Optuna's study direction for ``metric``."""
    return "minimize" if lower_is_better(metric) else "maximize"


def worst(metric: str) -> float:
    """The objective a diverged trial gets: worse than any real value."""
    return float("inf") if lower_is_better(metric) else float("-inf")


def check(metric: str) -> str:
    """``metric`` if it is known, else :class:`AblateError` naming the choices."""
    if not isinstance(metric, str) or not known(metric):
        raise AblateError(f"unknown metric {metric!r}; choose {', '.join(LOSS_METRICS)} or a task accuracy "
                          f"({ACCURACY_EXAMPLES})")
    return metric
