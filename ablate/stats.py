"""Statistics for seed-paired ablation verdicts.

Everything here is pure numpy/scipy and knows nothing about runs, MLflow or torch. The unit of
evidence is a *seed*: the same seed gives every variant the same data order and the same eval
batches, so a variant is compared with the baseline through per-seed differences
``variant - baseline`` and a two-sided paired t-test over those differences.

Conventions:

* Metrics are "lower is better" by default (validation loss, bits per byte); :func:`verdict`
  takes ``lower_is_better=False`` for the other kind.
* Too little data never crashes: with fewer than two values (or pairs) the spread, the confidence
  interval and the p-value are ``nan`` and :func:`verdict` says ``"too few seeds"``.
* Non-finite metric values (a diverged run's ``nan``/``inf``) are a user error: such runs must be
  excluded before the statistics, and the message says which seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from ablate.errors import AblateError

__all__ = [
    "HELPS",
    "HURTS",
    "NO_EFFECT",
    "TOO_FEW",
    "UNSTABLE",
    "SEEDS_CAP",
    "Summary",
    "Paired",
    "summarize",
    "paired_difference",
    "holm",
    "holm_levels",
    "interval_at",
    "unstable_verdict",
    "is_unstable",
    "verdict",
    "power_paired",
    "seeds_needed",
    "noise_floor",
]

HELPS = "helps"
HURTS = "hurts"
NO_EFFECT = "no detectable effect"
TOO_FEW = "too few seeds"
#: Prefix of the verdict of a variant with diverged or stalled runs (or compared with such a baseline),
#: e.g. ``"unstable: diverged on 2 of 5 seeds"``; see :func:`unstable_verdict`.
UNSTABLE = "unstable"

#: Upper bound returned by :func:`seeds_needed` when even this many seeds would not suffice.
SEEDS_CAP = 1000

_NAN = float("nan")


@dataclass(frozen=True)
class Summary:
    """Mean of a sample with a two-sided t confidence interval (``level``, default 95%)."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    level: float = 0.95


@dataclass(frozen=True)
class Paired:
    """Seed-paired comparison ``variant - baseline`` over the seeds both sides have.

    ``seeds`` lists the seeds used, ascending. ``ci_low``/``ci_high`` bound the mean difference at
    ``level``; ``p_value`` is the two-sided paired t-test (``nan`` when ``n < 2``).
    """

    n: int
    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    seeds: tuple[int, ...]
    level: float = 0.95


def _check_level(level: float) -> None:
    if not (0.0 < float(level) < 1.0):
        raise AblateError(f"confidence level must be between 0 and 1 (e.g. 0.95), got {level!r}")


def _as_finite_array(values: Iterable[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1:
        raise AblateError(f"{what}: expected a flat list of numbers")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise AblateError(
            f"{what}: value #{int(bad[0])} is {arr[bad[0]]!r}; exclude diverged or failed runs "
            "before computing statistics"
        )
    return arr


def _t_interval(mean: float, sd: float, n: int, level: float) -> tuple[float, float]:
    if n < 2 or not math.isfinite(sd):
        return _NAN, _NAN
    half = float(_st.t.ppf(0.5 + level / 2.0, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def summarize(values: Iterable[float], level: float = 0.95) -> Summary:
    """Mean, sample sd (ddof=1) and t confidence interval of ``values``.

    ``n == 0`` gives all-``nan``; ``n == 1`` gives the value as mean and ``nan`` sd and interval.
    """
    _check_level(level)
    arr = _as_finite_array(values, "summarize")
    n = int(arr.size)
    if n == 0:
        return Summary(0, _NAN, _NAN, _NAN, _NAN, level)
    mean = float(arr.mean())
    sd = float(arr.std(ddof=1)) if n >= 2 else _NAN
    lo, hi = _t_interval(mean, sd, n, level)
    return Summary(n, mean, sd, lo, hi, level)


def paired_difference(
    baseline: Mapping[int, float], variant: Mapping[int, float], level: float = 0.95
) -> Paired:
    """Paired t-test of ``variant - baseline`` over the seeds present in both mappings.

    Seeds only one side has are ignored here (the report warns about them). The p-value equals
    ``scipy.stats.ttest_rel(variant, baseline)``; when every difference is identical (zero spread)
    the t-test is undefined; then ``p = 1`` if the differences are all zero, else the exact p-value of
    the sign-flip permutation test, ``2 / 2**n`` (all n differences share one sign: the least extreme
    result that test can give), with a zero-width interval. Two seeds that happen to differ by the same
    amount (a discrete metric such as an accuracy) are then p = 0.5, not a certainty.
    """
    _check_level(level)
    seeds = tuple(sorted(set(baseline) & set(variant)))
    b = _as_finite_array((baseline[s] for s in seeds), "paired_difference (baseline)")
    v = _as_finite_array((variant[s] for s in seeds), "paired_difference (variant)")
    d = v - b
    n = int(d.size)
    if n == 0:
        return Paired(0, _NAN, _NAN, _NAN, _NAN, _NAN, seeds, level)
    mean = float(d.mean())
    if n < 2:
        return Paired(1, mean, _NAN, _NAN, _NAN, _NAN, seeds, level)
    sd = float(d.std(ddof=1))
    # Differences that are all equal (up to rounding) make the t statistic infinite or 0/0;
    # scipy then warns about catastrophic cancellation. Decide that case exactly instead.
    scale = max(float(np.max(np.abs(d))), float(np.max(np.abs(b))), 1.0)
    if sd <= 1e-13 * scale:
        p = 1.0 if np.all(d == 0) else min(1.0, 2.0 ** (1 - n))
        return Paired(n, mean, 0.0, mean, mean, p, seeds, level)
    p = float(_st.ttest_rel(v, b).pvalue)
    lo, hi = _t_interval(mean, sd, n, level)
    return Paired(n, mean, sd, lo, hi, p, seeds, level)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni step-down adjusted p-values, keyed like the input.

    ``nan`` p-values pass through as ``nan`` and do not count as hypotheses. Adjusted values are
    monotone in the raw ones and capped at 1.
    """
    out: dict[str, float] = {}
    finite: list[tuple[float, str]] = []
    for key, p in p_values.items():
        p = float(p)
        if math.isnan(p):
            out[key] = _NAN
            continue
        if not (0.0 <= p <= 1.0):
            raise AblateError(f"holm: p-value for {key!r} is {p!r}, outside [0, 1]")
        finite.append((p, key))
    m = len(finite)
    running = 0.0
    for rank, (p, key) in enumerate(sorted(finite, key=lambda t: t[0])):
        running = max(running, min(1.0, (m - rank) * p))
        out[key] = running
    return {key: out[key] for key in p_values}


def holm_levels(p_values: Mapping[str, float], alpha: float = 0.05) -> dict[str, float]:
    """The confidence level at which Holm's step-down procedure tests each hypothesis, keyed like the input.

    With ``m`` finite p-values sorted ascending, Holm tests the (k+1)-th smallest at ``alpha / (m - k)``
    and stops at the first that is not rejected. A hypothesis rejected at step k gets level
    ``1 - alpha / (m - k)``; every hypothesis from the first non-rejected step ``k*`` on gets
    ``1 - alpha / (m - k*)``. A paired t interval at that level excludes zero exactly when the Holm
    adjusted p-value is below ``alpha``, so intervals drawn at these levels agree with the verdicts.
    The widest level, ``1 - alpha / m``, is the Bonferroni simultaneous level; the narrower step-down
    levels agree with Holm's decisions but are not simultaneous coverage statements. ``nan``
    p-values get ``nan``.
    """
    if not (0.0 < alpha < 1.0):
        raise AblateError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha!r}")
    out = {key: _NAN for key in p_values}
    finite = sorted((float(p), key) for key, p in p_values.items() if not math.isnan(float(p)))
    m = len(finite)
    stopped_at: int | None = None
    for k, (p, key) in enumerate(finite):
        if stopped_at is None and p < alpha / (m - k):
            out[key] = 1.0 - alpha / (m - k)
            continue
        if stopped_at is None:
            stopped_at = k
        out[key] = 1.0 - alpha / (m - stopped_at)
    return out


def interval_at(paired: Paired, level: float) -> tuple[float, float]:
    """The paired t interval of ``paired.mean_diff`` at another ``level`` (``nan`` when undefined)."""
    if math.isnan(level):
        return _NAN, _NAN
    _check_level(level)
    if paired.n >= 2 and paired.sd_diff == 0.0:
        return paired.mean_diff, paired.mean_diff
    return _t_interval(paired.mean_diff, paired.sd_diff, paired.n, level)


def named_baseline(baseline: str) -> str:
    """"baseline", or "baseline rope" when the baseline is another variant than the one called ``baseline``
    (which can then be a row of its own): how verdicts, warnings and messages name it."""
    if baseline in ("", "baseline") or baseline.startswith(("baseline ", "baseline@")):  # "baseline (scratch, ...)"
        return baseline or "baseline"
    return f"baseline {baseline}"


def unstable_verdict(
    diverged: int, stalled: int, seeds: int,
    baseline_diverged: int = 0, baseline_stalled: int = 0, baseline_seeds: int = 0, baseline_name: str = "",
) -> str | None:
    """``"unstable: diverged on 2 of 5 seeds"`` (or stalled, or both, or about the baseline), or ``None``
    when neither the variant nor the baseline has a diverged or stalled seed.

    The verdict of a variant with such seeds is this, never helps/hurts from the seeds that survived;
    a baseline with such seeds makes every variant's verdict this too (named when it is not the variant
    called ``baseline``: "baseline rope stalled on 1 of 3 seeds").
    """
    def part(div: int, stall: int, n: int, who: str) -> str | None:
        bits = [f"{word} on {k}" for word, k in (("diverged", div), ("stalled", stall)) if k]
        if not bits:
            return None
        return f"{who}{', '.join(bits)} of {n} seed{'s' if n != 1 else ''}"

    parts = [x for x in (part(diverged, stalled, seeds, ""),
                         part(baseline_diverged, baseline_stalled, baseline_seeds, named_baseline(baseline_name) + " "))
             if x]
    return f"{UNSTABLE}: " + "; ".join(parts) if parts else None


def is_unstable(verdict_text: str | None) -> bool:
    """Whether a verdict string is an "unstable: …" verdict."""
    return bool(verdict_text) and str(verdict_text).startswith(UNSTABLE)


def verdict(
    paired: Paired,
    adjusted_p: float | None = None,
    alpha: float = 0.05,
    lower_is_better: bool = True,
) -> str:
    """``"helps"``, ``"hurts"``, ``"no detectable effect"`` or ``"too few seeds"``.

    A variant helps (hurts) when the (adjusted) p-value is below ``alpha`` and the mean difference
    points the good (bad) way. ``adjusted_p=None`` uses the raw ``paired.p_value``.
    """
    if not (0.0 < alpha < 1.0):
        raise AblateError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha!r}")
    p = paired.p_value if adjusted_p is None else float(adjusted_p)
    if paired.n < 2 or math.isnan(p) or math.isnan(paired.mean_diff):
        return TOO_FEW
    if p < alpha and paired.mean_diff != 0.0:
        better = paired.mean_diff < 0.0 if lower_is_better else paired.mean_diff > 0.0
        return HELPS if better else HURTS
    return NO_EFFECT


def power_paired(n: int, sd_diff: float, effect: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs against a true mean difference
    ``effect`` whose per-seed differences have standard deviation ``sd_diff``."""
    if n < 2:
        return 0.0
    effect = abs(float(effect))
    if effect == 0.0:
        return float(alpha)
    if sd_diff == 0.0:
        return 1.0
    df = n - 1
    nc = effect / float(sd_diff) * math.sqrt(n)
    tc = float(_st.t.ppf(1.0 - alpha / 2.0, df))
    upper = float(_st.nct.sf(tc, df, nc))
    lower = float(_st.nct.cdf(-tc, df, nc))
    # scipy's noncentral t can return nan far in the tails (large df and nc); the normal
    # approximation is accurate exactly there.
    if not math.isfinite(upper):
        upper = float(_st.norm.sf(tc - nc))
    if not math.isfinite(lower):
        lower = float(_st.norm.cdf(-tc - nc))
    return min(1.0, max(0.0, upper + lower))


def seeds_needed(
    sd_diff: float,
    effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    cap: int = SEEDS_CAP,
) -> int:
    """Smallest number of seeds (pairs, at least 2) at which a two-sided paired t-test at ``alpha``
    detects a true mean difference ``effect`` with probability ``power``, given per-seed
    differences with sd ``sd_diff``. Uses the exact noncentral-t power; returns ``cap`` when even
    ``cap`` seeds would not reach the power (including ``effect == 0``)."""
    sd_diff = float(sd_diff)
    effect = abs(float(effect))
    if not math.isfinite(sd_diff) or sd_diff < 0:
        raise AblateError(f"seeds_needed: sd_diff must be a finite number >= 0, got {sd_diff!r}")
    if not math.isfinite(effect):
        raise AblateError(f"seeds_needed: effect must be finite, got {effect!r}")
    if not (0.0 < alpha < 1.0) or not (0.0 < power < 1.0):
        raise AblateError(f"seeds_needed: alpha and power must lie in (0, 1), got {alpha!r}, {power!r}")
    cap = max(int(cap), 2)
    if effect == 0.0:
        return cap
    if sd_diff == 0.0:
        return 2
    # Power grows with n: bracket the answer by doubling, then bisect for the first n that
    # reaches the target.
    lo, hi = 2, 2
    while power_paired(hi, sd_diff, effect, alpha) < power:
        if hi >= cap:
            return cap
        lo, hi = hi + 1, min(2 * hi, cap)
    while lo < hi:
        mid = (lo + hi) // 2
        if power_paired(mid, sd_diff, effect, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def noise_floor(baseline_values: Iterable[float]) -> float:
    """The baseline's seed-to-seed standard deviation (ddof=1); ``nan`` with fewer than 2 seeds.

    Differences between variants that are small next to this number are indistinguishable from
    re-running the baseline with another seed.
    """
    return summarize(baseline_values).sd
