"""Factorial designs: which factors a set of variants spans, and the effects and interactions of a 2^k design."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ablate.errors import AblateError

@dataclass(frozen=True)
class Factor:
    field: str  # slot or model option
    low: str  # the baseline's level (coded -1)
    high: str  # the other level (coded +1); the factor's name


@dataclass(frozen=True)
class Effect:
    term: str
    order: int
    estimate: float  # the 2^order-scaled contrast: a difference (of differences) of the metric
    se: float
    low: float
    high: float
    p_value: float
    meaning: str


@dataclass(frozen=True)
class FactorialResult:
    factors: list[Factor]
    effects: list[Effect]
    additivity: list[Effect]  # full combination vs baseline: observed, sum of single changes, their gap
    n_runs: int
    n_seeds: int
    df: int
    level: float
    metric: str


def _levels(variant: str) -> dict[str, str]:
    from ablate.variant import ModelOptions, format_value, parse_variant

    v = parse_variant(variant)
    out = {c.slot: c.label() for c in v.choices}
    for f in dataclasses.fields(ModelOptions):
        out[f"model.{f.name}"] = f"{f.name}={format_value(getattr(v.model, f.name))}"
    return out


def factorial_design(variants: Sequence[str], baseline: str) -> list[Factor] | None:
    """The factors when ``variants`` form a full 2^k factorial (k >= 2) around ``baseline``."""
    if baseline not in variants:
        return None
    levels = {v: _levels(v) for v in variants}
    base = levels[baseline]
    factors = []
    for fld in base:
        values = {lv[fld] for lv in levels.values()}
        if len(values) == 1:
            continue
        if len(values) != 2:
            return None
        (high,) = values - {base[fld]}
        factors.append(Factor(fld, base[fld], high))
    k = len(factors)
    if k < 2 or len(variants) != 2 ** k:
        return None
    combos = {tuple(levels[v][f.field] == f.high for f in factors) for v in variants}
    return factors if len(combos) == 2 ** k else None


def factorial_effects(rows: Sequence[tuple[str, int, float]], factors: list[Factor], *, level: float = 0.95,
                      metric: str = "val_loss") -> FactorialResult:
    """Main effects and interactions from a linear model on +-1 coded factors, blocked by seed.

    ``rows`` are (variant, seed, value) of finished runs. The model is the saturated factorial
    (every interaction up to order k) plus one effect per seed; each term is reported as its
    contrast: a main effect is mean(metric | on) - mean(metric | off), a two-factor interaction is the
    difference of differences (AB - A - B + baseline, averaged over the other factors), and so on,
    i.e. 2^order times the coefficient, with a t-based confidence interval.
    """
    import numpy as np
    from scipy import stats as st

    k = len(factors)
    terms = [c for r in range(1, k + 1) for c in itertools.combinations(range(k), r)]
    seeds = sorted({s for _, s, _ in rows})
    codes = {}
    for variant, _, _ in rows:
        if variant not in codes:
            lv = _levels(variant)
            codes[variant] = [1.0 if lv[f.field] == f.high else -1.0 for f in factors]

    def design_row(code: list[float], seed: int | None) -> list[float]:
        row = [1.0] + [1.0 if seed == s else 0.0 for s in seeds[1:]]
        row += [float(np.prod([code[i] for i in term])) for term in terms]
        return row

    X = np.array([design_row(codes[v], s) for v, s, _ in rows])
    y = np.array([float(val) for _, _, val in rows])
    n, p = X.shape
    rank = np.linalg.matrix_rank(X)
    df = n - rank
    if rank < p or df < 1:
        raise AblateError(f"the factorial needs every combination on at least two seeds to estimate its noise "
                          f"(have {n} finished runs for {2 ** k} combinations); run more seeds")
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    sigma2 = float(resid @ resid) / df
    cov = sigma2 * np.linalg.pinv(X.T @ X)
    tcrit = float(st.t.ppf(0.5 + level / 2, df))
    offset = len(seeds)

    def contrast(vec: np.ndarray, name: str, order: int, meaning: str) -> Effect:
        est = float(vec @ beta)
        se = float(math.sqrt(max(vec @ cov @ vec, 0.0)))
        p_value = float(2 * st.t.sf(abs(est) / se, df)) if se > 0 else (0.0 if est else 1.0)
        return Effect(name, order, est, se, est - tcrit * se, est + tcrit * se, p_value, meaning)

    effects = []
    for j, term in enumerate(terms):
        vec = np.zeros(p)
        vec[offset + j] = 2.0 ** len(term)
        name = " x ".join(factors[i].high for i in term)
        if len(term) == 1:
            meaning = f"{factors[term[0]].high} vs {factors[term[0]].low}, averaged over the other factors"
        else:
            meaning = "difference of differences: how far the combination departs from adding the parts"
        effects.append(contrast(vec, name, len(term), meaning))

    def cell(code: list[float]) -> np.ndarray:
        row = np.array(design_row(code, None))
        row[1:offset] = 0.0  # seed effects cancel in differences
        return row

    low = cell([-1.0] * k)
    full = cell([1.0] * k) - low
    singles = sum(cell([1.0 if i == j else -1.0 for i in range(k)]) - low for j in range(k))
    combo = "+".join(f.high for f in factors)
    additivity = [
        contrast(full, f"{combo} vs baseline (observed)", k, "the whole change at once"),
        contrast(singles, "sum of the single changes", 1, "what adding the parts predicts"),
        contrast(full - singles, "non-additivity", k, "observed minus the sum; 0 means the parts add up"),
    ]
    return FactorialResult(factors, effects, additivity, n, len(seeds), df, level, metric)


def effect_reading(effect: Effect, lower_is_better: bool = True) -> str:
    if effect.low <= 0 <= effect.high:
        return "no detectable effect" if effect.order == 1 and "sum" not in effect.term else \
            ("additive within noise" if effect.order > 1 or "non-additivity" in effect.term else "no detectable effect")
    better = (effect.estimate < 0) == lower_is_better
    if effect.term.startswith("non-additivity") or (effect.order > 1 and " x " in effect.term):
        return "synergy: more than the sum" if better else "interference: less than the sum"
    return "helps" if better else "hurts"
