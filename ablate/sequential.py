"""Seeds spent where they decide: a group-sequential paired t-test across variants.

Seeds are added in rounds (by default 3, then 5, 7, 9, 10). At each *look* every running variant
gets a verdict from its seed-paired differences ``variant - baseline`` (seed 0 first): ``"helps"``,
``"hurts"``, ``"no detectable effect"`` or ``"undecided - add seeds"``. Decided variants get no
more seeds; the baseline runs the seeds any running variant needs.

Method (and why):

* **Group-sequential two-sided t-test, Lan-DeMets alpha spending** (Lan & DeMets 1983, "Discrete
  sequential boundaries for clinical trials", Biometrika 70:659-663) with the **Kim-DeMets power
  function** ``alpha * t**rho``, ``rho = 2``, information fraction ``t = n / max_seeds`` (Kim &
  DeMets 1987, Biometrics 43:857-864). The boundary at look ``k`` is a critical ``|t|`` such that,
  with no effect, the chance of first crossing at look ``k`` is the alpha spent since look ``k-1``.
* **t boundaries calibrated on the exact null law.** With 3-10 seeds the variance is unknown and
  badly estimated: normal boundaries with a plugged-in sd are anti-conservative at n = 3 (t with
  2 df has heavy tails). For normal differences with mean zero the joint law of the t statistics at
  all looks is free of the unknown sd (scale invariance), so it is simulated once per schedule
  (``CALIBRATION_PATHS`` paths, fixed RNG seed, cached). The first boundary is exact (a t quantile);
  later ones carry Monte Carlo error of about ``sqrt(a / CALIBRATION_PATHS)`` in the level ``a``.
  O'Brien-Fleming-type spending would need ``|t| > 150`` at 3 seeds: it almost never stops early.
* **Across variants: group-sequential Holm** (Maurer & Bretz 2013, "Multiple testing in group
  sequential trials using graphical approaches", Stat Biopharm Res 5:311-320; Tamhane, Xi & Gou
  2021, "Group sequential Holm and Hochberg procedures", Stat Med 40:5333-5350; validity by closed
  testing of Bonferroni group-sequential tests). With ``m`` variants of which ``r`` are rejected,
  a running variant is tested at level ``alpha / (m - r)`` with that level's boundaries; a rejection
  raises the others' level at the same look. The family-wise rate of a false "helps" or "hurts"
  over all looks and variants is at most ``alpha``.
* **Intervals** are repeated confidence intervals (Jennison & Turnbull 1989, JRSS B 51:305-361),
  ``mean +- c_k * sd / sqrt(n)`` at the verdict's boundary and level: "helps"/"hurts" exactly when
  the interval excludes zero; at level ``a`` it covers at all looks at once with probability
  ``>= 1 - a`` (jointly over variants at the Bonferroni level ``alpha / m``).
* **Futility (non-binding: cannot raise the error rate):** stop as ``"no detectable effect"`` when
  the interval lies inside ``(-margin, +margin)`` (if set) or at ``max_seeds`` undecided.

Not chosen: anytime-valid confidence sequences (Howard et al. 2021, Ann Stat 49:1055-1080; Lai
1976's t-mixture) allow unlimited looks but at 3 seeds reject at ``alpha/m`` only for huge effects.
Assumes independent, roughly normal differences; ``nan`` raises. Call :func:`plan` after a round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import stats as _st

from ablate.errors import AblateError
from ablate.stats import HELPS, HURTS, NO_EFFECT

__all__ = ["UNDECIDED", "Design", "Look", "Plan", "schedule", "spent", "boundaries",
           "decide", "plan", "repeated_ci", "simulate"]

UNDECIDED = "undecided - add seeds"
CALIBRATION_PATHS = 400_000  #: simulated null paths calibrating the boundaries after the first
_CALIBRATION_SEED = 20240601
_NAN = float("nan")


def schedule(start: int = 3, step: int = 2, max_seeds: int = 10) -> tuple[int, ...]:
    """Seed counts at which verdicts are taken: ``start, start+step, ...``, then ``max_seeds``."""
    whole = all(int(x) == x for x in (start, step, max_seeds))
    if not whole or not (2 <= start <= max_seeds) or step < 1:
        raise AblateError(f"schedule: need whole numbers 2 <= start <= max_seeds and step >= 1, "
                          f"got start={start}, step={step}, max_seeds={max_seeds}")
    return tuple(range(int(start), int(max_seeds), int(step))) + (int(max_seeds),)


@dataclass(frozen=True)
class Design:
    """Sequential design: the seed schedule, the family-wise ``alpha``, the spending exponent
    ``rho`` and the optional equivalence ``margin`` (metric units) for stopping as no effect."""

    start: int = 3
    step: int = 2
    max_seeds: int = 10
    alpha: float = 0.05
    rho: float = 2.0
    margin: float | None = None
    lower_is_better: bool = True

    def __post_init__(self) -> None:
        schedule(self.start, self.step, self.max_seeds)
        if not (0.0 < self.alpha < 1.0) or not (self.rho > 0.0):
            raise AblateError(f"Design: need 0 < alpha < 1, rho > 0; got {self.alpha}, {self.rho}")
        if self.margin is not None and not (0.0 < self.margin < math.inf):
            raise AblateError(f"Design: margin must be a positive number or None: {self.margin!r}")

    @property
    def looks(self) -> tuple[int, ...]:
        return schedule(self.start, self.step, self.max_seeds)


@dataclass(frozen=True)
class Look:
    """A variant's verdict at its latest look: ``n`` seeds, mean/sd of the differences, the t
    statistic, the boundary and per-variant ``level`` used, and the repeated CI at that level."""

    n: int
    mean: float
    sd: float
    t: float
    boundary: float
    level: float
    ci_low: float
    ci_high: float
    decision: str
    reason: str


@dataclass(frozen=True)
class Plan:
    """``seeds[v]``: seed indices variant ``v`` needs for its next look; ``baseline_seeds``: their
    union; ``done``: every verdict decided; ``runs_used``: baseline plus variant runs so far."""

    looks: tuple[int, ...]
    decisions: dict[str, Look]
    seeds: dict[str, tuple[int, ...]]
    baseline_seeds: tuple[int, ...]
    done: bool
    runs_used: int


def spent(t: float, alpha: float, rho: float = 2.0) -> float:
    """Kim-DeMets alpha spent by information fraction ``t``: ``alpha * t**rho``."""
    return float(alpha) * min(max(float(t), 0.0), 1.0) ** float(rho)


@lru_cache(maxsize=4)
def _null_abs_t(looks: tuple[int, ...]) -> np.ndarray:
    """|t| at each look on CALIBRATION_PATHS simulated null paths (float32, paths x looks)."""
    rng, n = np.random.default_rng(_CALIBRATION_SEED), np.asarray(looks)
    out = np.empty((CALIBRATION_PATHS, n.size), dtype=np.float32)
    for i in range(0, CALIBRATION_PATHS, 50_000):  # chunks bound the memory for long schedules
        z = rng.standard_normal((min(50_000, CALIBRATION_PATHS - i), looks[-1]))
        mean = np.cumsum(z, axis=1)[:, n - 1] / n
        var = (np.cumsum(z * z, axis=1)[:, n - 1] - n * mean * mean) / (n - 1)
        out[i:i + z.shape[0]] = np.abs(mean) / np.sqrt(var / n)
    return out


@lru_cache(maxsize=256)
def boundaries(looks: tuple[int, ...], alpha: float, rho: float = 2.0) -> tuple[float, ...]:
    """Two-sided critical ``|t|`` at each look for level ``alpha`` (spent as ``alpha * t**rho``).

    With no effect the probability of crossing at any look is ``alpha``. The first boundary is the
    exact t quantile; later ones come from the simulated null law (see the module docstring).
    """
    looks = tuple(int(n) for n in looks)
    if not looks or looks[0] < 2 or any(b <= a for a, b in zip(looks, looks[1:])):
        raise AblateError(f"boundaries: looks must be increasing seed counts >= 2, got {looks}")
    inc = np.diff([0.0] + [spent(n / looks[-1], alpha, rho) for n in looks])
    c = [float(_st.t.ppf(1.0 - inc[0] / 2.0, looks[0] - 1))]
    null = _null_abs_t(looks) if len(looks) > 1 else np.zeros((0, 1))
    alive = null[:, 0] < c[0]
    for k in range(1, len(looks)):  # spend inc[k] on the paths that have not crossed yet
        v, cnt = null[alive, k], int(round(inc[k] * null.shape[0]))
        i = v.size - cnt  # the boundary sits between the cnt-th and (cnt+1)-th largest |t|
        part = np.partition(v, [i - 1, i]) if cnt > 0 else None
        c.append(math.inf if part is None else float(part[i - 1] + part[i]) / 2)
        alive &= null[:, k] < c[-1]
    return tuple(c)


def _finite(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1:
        raise AblateError(f"sequential: differences for {name!r} must be a flat list of numbers")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise AblateError(f"sequential: {name!r} seed #{int(bad[0])} difference is "
                          f"{arr[bad[0]]!r}; decide diverged or failed runs first")
    return arr


def _moments(d: np.ndarray) -> tuple[float, float, float]:
    """Mean, sd and t of the differences; zero spread gives sd 0 and t = +-inf (0 if mean 0)."""
    if d.size < 2:
        return (float(d.mean()) if d.size else _NAN), _NAN, _NAN
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    tiny = 1e-13 * max(float(np.max(np.abs(d))), 1.0)
    if sd <= tiny:  # all equal up to rounding: decide exactly, as ablate.stats does
        return (0.0, 0.0, 0.0) if abs(mean) <= tiny else (mean, 0.0, math.copysign(math.inf, mean))
    return mean, sd, mean / (sd / math.sqrt(d.size))


def _rci(mean: float, sd: float, n: int, c: float) -> tuple[float, float]:
    half = c * sd / math.sqrt(n) if sd > 0 else 0.0
    return mean - half, mean + half


def repeated_ci(values: Sequence[float], design: Design = Design(),
                alpha: float | None = None) -> tuple[float, float]:
    """Repeated confidence interval of the mean difference at the latest look ``<= len(values)``
    at per-variant level ``alpha`` (default ``design.alpha``; :func:`decide` uses
    ``alpha / (m - r)``, kept in :attr:`Look.level`). ``(nan, nan)`` before the first look."""
    d, looks = _finite(values, "repeated_ci"), design.looks
    k = sum(n <= d.size for n in looks) - 1
    if k < 0:
        return _NAN, _NAN
    mean, sd, _ = _moments(d[: looks[k]])
    c = boundaries(looks, design.alpha if alpha is None else float(alpha), design.rho)[k]
    return _rci(mean, sd, looks[k], c)


def decide(diffs: Mapping[str, Sequence[float]], design: Design = Design(), family: int = 0) -> dict[str, Look]:
    """Sequential verdict of every variant from its per-seed differences (seed order).

    The looks are replayed from the first, so the result depends only on the data: a variant stops
    at the first look where it is decided, and its seeds beyond that look are ignored. A variant
    with fewer seeds than its next look is ``UNDECIDED``, with the statistics of its latest look.
    ``family``: the number of hypotheses Holm's levels are split over when it is more than the variants
    given (a study's variants that left the test, unstable, stay in the family: dropping them would raise
    the others' levels after the fact, on the strength of an outcome).
    """
    data = {name: _finite(v, name) for name, v in diffs.items()}
    looks, m, rejected = design.looks, max(len(data), family), 0
    final: dict[str, Look] = {}
    latest = {v: Look(d.size, *_moments(d), _NAN, _NAN, _NAN, _NAN, UNDECIDED, "before first look")
              for v, d in data.items()}
    for k, n in enumerate(looks):
        running = [v for v, d in data.items() if v not in final and d.size >= n]
        if not running:
            break
        mom = {v: _moments(data[v][:n]) for v in running}
        changed = True
        while changed and rejected < m:  # Holm: a rejection raises the others' level, same look
            changed, level = False, design.alpha / (m - rejected)
            c = boundaries(looks, level, design.rho)[k]
            for v in (v for v in running if v not in final and abs(mom[v][2]) >= c):
                mean, sd, t = mom[v]
                verdict = HELPS if (mean < 0) == design.lower_is_better else HURTS
                final[v] = Look(n, mean, sd, t, c, level, *_rci(mean, sd, n, c), verdict,
                                f"crossed the boundary at {n} seeds")
                rejected, changed = rejected + 1, True
        for v in (v for v in running if v not in final):
            mean, sd, t = mom[v]
            lo, hi = _rci(mean, sd, n, c)
            latest[v] = Look(n, mean, sd, t, c, level, lo, hi, UNDECIDED,
                             f"inside the boundary at {n} seeds")
            if design.margin is not None and -design.margin < lo and hi < design.margin:
                why = f"interval within +-{design.margin:g} at {n} seeds"
                final[v] = replace(latest[v], decision=NO_EFFECT, reason=why)
            elif k == len(looks) - 1:
                why = f"undecided at the maximum, {n} seeds"
                final[v] = replace(latest[v], decision=NO_EFFECT, reason=why)
    return {v: final.get(v, latest[v]) for v in data}


def plan(diffs: Mapping[str, Sequence[float]], design: Design = Design(), family: int = 0) -> Plan:
    """Verdicts so far and the seeds to run next: each undecided variant needs the seeds up to its
    next look (with no runs yet: seeds 0, 1, 2); the baseline needs their union. ``family``: see
    :func:`decide`."""
    decisions = decide(diffs, design, family)
    seeds = {v: tuple(range(len(diffs[v]), next(n for n in design.looks if n > len(diffs[v]))))
             for v, look in decisions.items() if look.decision == UNDECIDED}
    have = [len(diffs[v]) for v in decisions]
    return Plan(design.looks, decisions, seeds, tuple(sorted(set().union(*seeds.values()))),
                not seeds, max(have, default=0) + sum(have))


def simulate(effects: Sequence[float], sd_diff: Sequence[float], design: Design = Design(),
             repeats: int = 10_000, seed: int = 0,
             baseline_share: float = 0.5) -> dict[str, np.ndarray]:
    """Vectorised Monte Carlo of :func:`decide` on normal data (same rules, many studies at once).

    Variant ``i``'s per-seed differences have mean ``effects[i]`` and sd ``sd_diff[i]``, a share
    ``baseline_share`` of their variance being the baseline's noise (common to all variants, as in
    a real study). Returns ``diffs`` (repeats x variants x max_seeds), ``decision`` (repeats x
    variants, strings), ``seeds`` used per variant and ``runs`` per study (baseline + variants).
    """
    eff, sds = np.asarray(effects, float)[:, None], np.asarray(sd_diff, float)[:, None]
    m, looks, rng = eff.size, np.asarray(design.looks), np.random.default_rng(seed)
    base = rng.standard_normal((repeats, 1, looks[-1]))
    own = rng.standard_normal((repeats, m, looks[-1]))
    d = eff + sds * (math.sqrt(1 - baseline_share) * own - math.sqrt(baseline_share) * base)
    mean = np.cumsum(d, axis=2)[..., looks - 1] / looks
    ss = np.maximum(np.cumsum(d * d, axis=2)[..., looks - 1] - looks * mean**2, 0.0)
    sd = np.sqrt(ss / (looks - 1))
    t = mean / (sd / np.sqrt(looks))
    table = np.array([boundaries(design.looks, design.alpha / (m - r), design.rho)
                      for r in range(m)])  # row r: boundaries once r variants are rejected
    code = np.zeros((repeats, m), dtype=int)  # 0 running, 1 helps, 2 hurts, 3 no detectable effect
    used, rejected = np.zeros((repeats, m), dtype=int), np.zeros(repeats, dtype=int)
    for k, n in enumerate(looks):
        while True:
            c = table[np.minimum(rejected, m - 1), k][:, None]
            new = (code == 0) & (np.abs(t[..., k]) >= c)
            if not new.any():
                break
            code[new] = np.where((mean[..., k] < 0) == design.lower_is_better, 1, 2)[new]
            used[new], rejected = n, rejected + new.sum(axis=1)
        stop = code == 0
        if k < len(looks) - 1:  # before the last look only the equivalence rule stops
            half = c * sd[..., k] / math.sqrt(n)
            stop &= (np.abs(mean[..., k]) + half < design.margin) if design.margin else False
        code[stop], used[stop] = 3, n
    names = np.array(["", HELPS, HURTS, NO_EFFECT])
    return {"diffs": d, "decision": names[code], "seeds": used,
            "runs": used.max(axis=1) + used.sum(axis=1)}
