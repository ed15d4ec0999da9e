"""Tests of ablate.sequential: the group-sequential verdicts behind `--until-decided`."""

import math

import numpy as np
import pytest
from scipy import stats

from ablate.errors import AblateError
from ablate.sequential import (
    UNDECIDED,
    Design,
    boundaries,
    decide,
    plan,
    repeated_ci,
    schedule,
    simulate,
    spent,
)
from ablate.stats import HELPS, HURTS, NO_EFFECT

LOOKS = (3, 5, 7, 9, 10)


def with_t(t: float, n: int = 3, mean: float = -0.01) -> list[float]:
    """n differences with the given mean whose t statistic is exactly t (sign taken from mean)."""
    z = np.linspace(-1.0, 1.0, n)
    z = z / z.std(ddof=1)
    sd = abs(mean) * math.sqrt(n) / abs(t)
    return list(mean + sd * z)


# --- schedule and boundaries -------------------------------------------------------------------


def test_schedule_rounds():
    assert schedule() == LOOKS == Design().looks
    assert schedule(3, 2, 9) == (3, 5, 7, 9)
    assert schedule(5, 2, 5) == (5,)
    assert schedule(2, 3, 10) == (2, 5, 8, 10)


@pytest.mark.parametrize("args", [(1, 2, 10), (3, 0, 10), (4, 2, 3), (2.5, 2, 10)])
def test_schedule_rejects_bad_rounds(args):
    with pytest.raises(AblateError):
        schedule(*args)


@pytest.mark.parametrize("kw", [{"alpha": 0.0}, {"alpha": 1.0}, {"rho": 0.0}, {"margin": 0.0},
                                {"margin": -0.1}, {"margin": math.inf}, {"start": 1}])
def test_design_rejects_bad_settings(kw):
    with pytest.raises(AblateError):
        Design(**kw)


def test_spending_is_kim_demets_power_family():
    assert spent(0.5, 0.05) == pytest.approx(0.0125)
    assert spent(1.0, 0.05) == pytest.approx(0.05)
    assert spent(0.3, 0.05, rho=1.0) == pytest.approx(0.015)


def test_boundaries_first_is_exact_t_quantile_and_they_shrink():
    c = boundaries(LOOKS, 0.05)
    first_spend = 0.05 * (3 / 10) ** 2
    assert c[0] == pytest.approx(stats.t.ppf(1 - first_spend / 2, 2))
    assert all(a > b for a, b in zip(c, c[1:]))
    # Stricter level -> higher boundaries; every sequential boundary is above the fixed t test's.
    assert all(a > b for a, b in zip(boundaries(LOOKS, 0.025), c))
    assert c[-1] > stats.t.ppf(0.975, 9)
    # A single look is the ordinary paired t-test.
    assert boundaries((10,), 0.05)[0] == pytest.approx(stats.t.ppf(0.975, 9))


def test_boundaries_reject_bad_looks():
    with pytest.raises(AblateError):
        boundaries((3, 3, 5), 0.05)
    with pytest.raises(AblateError):
        boundaries((1, 5), 0.05)


# --- decisions on constructed data --------------------------------------------------------------


def test_large_effect_helps_at_first_look_small_one_needs_more_seeds():
    diffs = {"rope": [-0.192, -0.185, -0.199], "swiglu": [-0.006, 0.002, -0.011]}
    out = decide(diffs)
    assert out["rope"].decision == HELPS and out["rope"].n == 3
    assert out["rope"].ci_high < 0  # the interval agrees with the verdict
    assert out["swiglu"].decision == UNDECIDED and out["swiglu"].ci_low < 0 < out["swiglu"].ci_high
    p = plan(diffs)
    assert p.seeds == {"swiglu": (3, 4)} and p.baseline_seeds == (3, 4)
    assert not p.done and p.runs_used == 3 + 6


def test_direction_follows_lower_is_better():
    diffs = {"worse": [0.19, 0.2, 0.21]}
    assert decide(diffs)["worse"].decision == HURTS
    assert decide(diffs, Design(lower_is_better=False))["worse"].decision == HELPS


def test_holm_raises_the_level_of_the_others_at_the_same_look():
    c1, c2 = boundaries(LOOKS, 0.05)[0], boundaries(LOOKS, 0.025)[0]
    between = (c1 + c2) / 2  # passes alpha/1 but not alpha/2
    both = decide({"big": with_t(c2 * 1.5), "mid": with_t(between)})
    assert both["big"].decision == HELPS and both["big"].level == pytest.approx(0.025)
    assert both["mid"].decision == HELPS and both["mid"].level == pytest.approx(0.05)
    alone = decide({"small": with_t(2.0), "mid": with_t(between)})
    assert alone["mid"].decision == UNDECIDED and alone["mid"].boundary == pytest.approx(c2)


def test_a_variant_that_leaves_the_test_stays_in_holms_family():
    """A variant that turns unstable leaves the test, but not the family: with it dropped, the others were
    re-decided at alpha/(m-1), so an earlier "helps" at level 0.025 was reported at 0.05 with a narrower
    interval, and a variant undecided at its look could become decided after the fact."""
    c1, c2 = boundaries(LOOKS, 0.05)[0], boundaries(LOOKS, 0.025)[0]
    between = (c1 + c2) / 2
    alone = decide({"mid": with_t(between)}, family=2)
    assert alone["mid"].decision == UNDECIDED and alone["mid"].level == pytest.approx(0.025)
    assert decide({"mid": with_t(between)})["mid"].decision == HELPS  # a family of one
    assert decide({"a": with_t(c2 * 1.5), "b": with_t(between)}, family=1)["b"].level == pytest.approx(0.05)


def test_seeds_past_the_deciding_look_are_ignored():
    rope = [-0.192, -0.185, -0.199] + [0.5] * 7
    look = decide({"rope": rope, "other": [0.0] * 10})["rope"]
    assert look.decision == HELPS and look.n == 3
    assert look.mean == pytest.approx(np.mean(rope[:3]))


def test_undecided_at_the_maximum_is_no_detectable_effect():
    rng = np.random.default_rng(0)
    d = list(0.001 + 0.01 * rng.standard_normal(10))
    look = decide({"v": d})["v"]
    assert look.decision == NO_EFFECT and look.n == 10 and "maximum" in look.reason
    assert plan({"v": d}).done


def test_equivalence_margin_stops_early_as_no_effect():
    d = [0.0005, -0.0004, 0.0001]
    assert decide({"v": d})["v"].decision == UNDECIDED
    look = decide({"v": d}, Design(margin=0.01))["v"]
    assert look.decision == NO_EFFECT and "within" in look.reason
    assert -0.01 < look.ci_low and look.ci_high < 0.01


def test_repeated_ci_matches_the_decision():
    diffs = {"rope": [-0.192, -0.185, -0.199, -0.19, -0.2], "z": [0.01, -0.02, 0.0, 0.005, -0.01]}
    out = decide(diffs)
    for v, look in out.items():
        lo, hi = repeated_ci(diffs[v][: look.n], Design(), alpha=look.level)
        assert (lo, hi) == pytest.approx((look.ci_low, look.ci_high))
        assert (look.decision in (HELPS, HURTS)) == (not lo <= 0 <= hi)
    assert all(math.isnan(x) for x in repeated_ci([0.1, 0.2], Design()))


# --- edge cases -----------------------------------------------------------------------------


def test_fewer_seeds_than_the_first_look():
    out = decide({"none": [], "one": [-0.1], "two": [-0.1, -0.12]})
    assert all(look.decision == UNDECIDED for look in out.values())
    assert math.isnan(out["none"].mean) and math.isnan(out["one"].sd)
    assert out["two"].n == 2 and math.isnan(out["two"].boundary)
    p = plan({"none": [], "two": [-0.1, -0.12]})
    assert p.seeds == {"none": (0, 1, 2), "two": (2,)} and p.baseline_seeds == (0, 1, 2)
    assert p.runs_used == 2 + 2
    assert plan({}).done and decide({}) == {}


def test_zero_variance_is_decided_exactly():
    out = decide({"const": [-0.01] * 3, "zero": [0.0] * 3})
    assert out["const"].decision == HELPS and out["const"].t == -math.inf
    assert out["const"].ci_low == out["const"].ci_high == pytest.approx(-0.01)
    assert out["zero"].decision == UNDECIDED and out["zero"].t == 0.0
    assert decide({"zero": [0.0] * 3}, Design(margin=0.001))["zero"].decision == NO_EFFECT


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_differences_raise_naming_the_seed(bad):
    with pytest.raises(AblateError, match=r"'swiglu' seed #1"):
        decide({"rope": [-0.1] * 3, "swiglu": [0.0, bad, 0.1]})
    with pytest.raises(AblateError):
        plan({"v": [[0.1, 0.2]]})


# --- error rate -----------------------------------------------------------------------------


def test_false_positive_rate_under_the_null_with_decide():
    """2000 studies with two null variants: any false 'helps'/'hurts' at most alpha (+ MC noise)."""
    rng = np.random.default_rng(2024)
    repeats, alpha = 2000, 0.05
    base = rng.standard_normal((repeats, 10))
    own = rng.standard_normal((repeats, 2, 10))
    diffs = 0.007 * (own - base[:, None, :])  # shared baseline noise, as in a real study
    false = 0
    for r in range(repeats):
        out = decide({"a": diffs[r, 0], "b": diffs[r, 1]})
        false += any(look.decision in (HELPS, HURTS) for look in out.values())
    # alpha + 3 binomial standard errors (0.0146): fails for a real inflation such as naive
    # normal boundaries at n = 3 would give.
    assert false / repeats <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / repeats)


def test_vectorised_simulation_matches_decide():
    design = Design(margin=0.01)
    r = simulate([-0.05, -0.006, 0.0], [0.01, 0.005, 0.005], design, repeats=300, seed=3)
    for i in range(300):
        out = decide({f"v{j}": r["diffs"][i, j] for j in range(3)}, design)
        assert [out[f"v{j}"].decision for j in range(3)] == list(r["decision"][i])
        assert [out[f"v{j}"].n for j in range(3)] == list(r["seeds"][i])


def test_simulated_null_rate_and_runs_saved():
    r = simulate([0.0, 0.0], [0.005, 0.005], Design(), repeats=4000, seed=5)
    fwer = np.isin(r["decision"], [HELPS, HURTS]).any(axis=1).mean()
    assert fwer <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4000)
    q = simulate([-0.192, -0.006], [0.0064, 0.005], Design(), repeats=2000, seed=6)
    assert (q["seeds"][:, 0] == 3).mean() > 0.99  # RoPE decides at the first round
    assert q["runs"].mean() < 0.7 * 30  # fewer runs than 3 variants x 10 seeds
