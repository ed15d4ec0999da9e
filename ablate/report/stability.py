"""Which runs are results of a kind the statistics must not hide: diverged and stalled runs.

The rule (stated in every report's Method section):

* A run is **diverged** when the trainer says so (its status is ``diverged``).
* A finished run is **stalled** when either
  - its final validation loss (nats/token) is within ``max(0.05 nats, 2%)`` of the unigram entropy
    of the training split, or above it: the model learned no more than token frequencies
    (only when the run recorded ``unigram_entropy``); or
  - its final evaluation is no better than its first evaluation after step 0 (the curve of the
    compared metric; needs at least two evaluations after step 0). For a task accuracy
    (higher is better) the report gives this rule the validation-loss curve instead.

A variant with any diverged or stalled seed gets the verdict ``"unstable: …"``
(:func:`ablate.stats.unstable_verdict`) and is never called helps or hurts on the strength of the
seeds that survived; when the baseline has such seeds, every variant's verdict says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: A final loss this close to the unigram entropy (or above it) counts as stalled: the larger of the two.
STALL_MARGIN_NATS = 0.05
STALL_MARGIN_FRACTION = 0.02

RULE = (
    "A run counts as *diverged* when the trainer stopped it as diverged, and as *stalled* when its final "
    f"validation loss is within max({STALL_MARGIN_NATS:g} nats, {STALL_MARGIN_FRACTION:.0%}) of the unigram "
    "entropy of the training data (or above it), or when its final evaluation is no better than its first "
    "evaluation after step 0 (for a task accuracy: of the validation loss, as an accuracy can sit at 100% "
    "or 0% while the model still learns). Diverged and stalled runs are results, not gaps: a variant with any of them "
    "gets the verdict *unstable* (e.g. \"unstable: diverged on 2 of 5 seeds\") and is never called *helps* "
    "or *hurts* on the strength of the seeds that survived, and when the baseline has any, every "
    "variant's verdict says so. Stalled runs keep their (finite) values in the numbers; diverged runs "
    "have none."
)


def stall_margin(unigram_entropy: float) -> float:
    """How close to the unigram entropy (nats/token) a final loss may come and still count as stalled."""
    return max(STALL_MARGIN_NATS, STALL_MARGIN_FRACTION * abs(float(unigram_entropy)))


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def stall_reason(
    curve: Sequence[tuple[float, float]],
    final_loss: float | None = None,
    unigram_entropy: float | None = None,
    lower_is_better: bool = True,
) -> str | None:
    """Why a finished run counts as stalled, or ``None`` when it does not.

    ``curve`` holds ``(step, value)`` of the evaluations (any step order); ``final_loss`` is the final
    validation loss in nats/token and ``unigram_entropy`` the unigram entropy of the training split in
    the same unit. Without ``unigram_entropy`` only the no-improvement rule applies.
    """
    if _finite(final_loss) and _finite(unigram_entropy):
        h, loss = float(unigram_entropy), float(final_loss)
        if loss >= h - stall_margin(h):
            where = (f"within {stall_margin(h):.3g} of" if loss < h else
                     "above" if loss > h else "at")
            return f"final val loss {loss:.3f} is {where} the unigram entropy {h:.3f} of the training data"
    points = sorted((float(s), float(v)) for s, v in curve if _finite(v))
    after_start = [(s, v) for s, v in points if s > 0]
    if len(after_start) >= 2:
        (s0, first), (s1, last) = after_start[0], after_start[-1]
        no_better = last >= first if lower_is_better else last <= first
        if no_better:
            return (f"final eval {last:.4g} (step {s1:g}) is no better than the first eval after step 0, "
                    f"{first:.4g} (step {s0:g})")
    return None


def result_stall_reason(evals: Sequence[dict], final: dict, unigram_entropy: float | None, metric: str,
                        lower_is_better: bool) -> str | None:
    """:func:`stall_reason` for one run's own records (its evaluation rows and final figures), as the
    report applies it: the compared metric's curve, or, for a task accuracy, the validation loss's."""
    name = metric if lower_is_better else "val_loss"
    curve = [(r["step"], r[name]) for r in evals if r.get(name) is not None]
    return stall_reason(curve, final.get("val_loss"), unigram_entropy)
