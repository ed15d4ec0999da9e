"""Simulation: does `--until-decided` keep its error rate, and how many runs does it save?

Uses the vectorised simulator of :mod:`ablate.sequential` (the same rules as ``decide``, checked
against it in tests/test_sequential.py) on normal per-seed differences, with half of each
difference's variance being the shared baseline noise, as in a real study.

* Null: no variant has an effect. The family-wise false-positive rate (any "helps" or "hurts")
  must stay at or below alpha; printed with its exact (Clopper-Pearson) 95% interval.
* Partial null: RoPE's real effect next to a variant with none (Holm raises the second variant's
  level once RoPE is decided; its false-positive rate must still be <= alpha).
* Quickstart: the effect sizes and sd of the differences measured in docs/results.md (200 steps,
  3 seeds: RoPE -0.19202 [-0.20784, -0.17620], SwiGLU +0.00462 [-0.01532, +0.02455]; the sd is
  recovered from the 95% t interval: half-width * sqrt(3) / t(0.975, 2)), and the hypothetical
  SwiGLU of the issue (-0.006, sd 0.005). Runs used versus the fixed designs: 3 variants x 10 seeds
  (the sequential maximum) and the shipped 3 x 3, with the fixed designs' power (paired t-test,
  Holm across variants, as `ablate study report` does).

    .venv/bin/python benchmarks/sequential_sim.py --repeats 10000
"""

import argparse
import math

import numpy as np
from scipy import stats

from ablate.sequential import Design, boundaries, simulate

T975_2 = stats.t.ppf(0.975, 2)
ROPE = (-0.19202, (-0.17620 - -0.20784) / 2 * math.sqrt(3) / T975_2)
SWIGLU = (0.00462, (0.02455 - -0.01532) / 2 * math.sqrt(3) / T975_2)
SWIGLU_ISSUE = (-0.006, 0.005)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = 1 - level
    lo = stats.beta.ppf(a / 2, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(1 - a / 2, k + 1, n - k) if k < n else 1.0
    return float(lo), float(hi)


def fixed_design(diffs: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Verdict codes of the fixed design on the first n seeds: paired t-test, Holm across variants
    (1 helps, 2 hurts, 3 no detectable effect)."""
    d = diffs[..., :n]
    mean, sd = d.mean(axis=2), d.std(axis=2, ddof=1)
    p = 2 * stats.t.sf(np.abs(mean / (sd / math.sqrt(n))), n - 1)
    m = p.shape[1]
    order = np.argsort(p, axis=1)
    ps = np.take_along_axis(p, order, axis=1) * (m - np.arange(m))
    adj_sorted = np.minimum(np.maximum.accumulate(ps, axis=1), 1.0)
    adj = np.empty_like(p)
    np.put_along_axis(adj, order, adj_sorted, axis=1)
    return np.where(adj < alpha, np.where(mean < 0, 1, 2), 3)


def naive_fwer(diffs: np.ndarray, looks: tuple[int, ...], alpha: float, rho: float) -> np.ndarray:
    """What plain normal alpha spending would do: boundaries for a known-variance z statistic
    (computed on the z law) applied to the t statistic with the sd estimated from the seeds,
    Bonferroni across variants. Returns whether each study had a false positive (null data)."""
    n = np.asarray(looks)
    rng = np.random.default_rng(12345)
    z = np.abs(np.cumsum(rng.standard_normal((400_000, n[-1])), axis=1)[:, n - 1] / np.sqrt(n))
    a = alpha / diffs.shape[1]
    inc = np.diff([0.0] + [a * (k / n[-1]) ** rho for k in n])
    c = [stats.norm.ppf(1 - inc[0] / 2)]
    alive = z[:, 0] < c[0]
    for k in range(1, n.size):
        v = np.sort(z[alive, k])[::-1]
        cnt = int(round(inc[k] * z.shape[0]))
        c.append((v[cnt - 1] + v[cnt]) / 2)
        alive &= z[:, k] < c[-1]
    mean = np.cumsum(diffs, axis=2)[..., n - 1] / n
    sd = np.sqrt((np.cumsum(diffs * diffs, axis=2)[..., n - 1] - n * mean**2) / (n - 1))
    return (np.abs(mean / (sd / np.sqrt(n))) >= np.asarray(c)).any(axis=(1, 2))


def rate(hits: np.ndarray) -> str:
    k, n = int(hits.sum()), hits.size
    lo, hi = clopper_pearson(k, n)
    return f"{k / n:.4f} [{lo:.4f}, {hi:.4f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--margin", type=float, default=0.01,
                    help="equivalence margin (nats) for the rows with a margin")
    args = ap.parse_args()
    design = Design(alpha=args.alpha)
    looks = design.looks
    R = args.repeats
    print(f"design: looks at {looks} seeds, alpha {args.alpha} family-wise, Kim-DeMets rho {design.rho}, "
          f"group-sequential Holm; {R} simulated studies per row")
    for m in (1, 2, 4):
        c = boundaries(looks, args.alpha / m, design.rho)
        print(f"  |t| boundaries at level alpha/{m}: " + ", ".join(f"{x:.2f}" for x in c))
    print(f"quickstart differences: rope {ROPE[0]:+.5f} (sd {ROPE[1]:.5f}), "
          f"swiglu {SWIGLU[0]:+.5f} (sd {SWIGLU[1]:.5f})")

    print("\n1. Null (no variant has an effect): family-wise false-positive rate [95% CI]")
    print(f"{'scenario':<46} {'FWER':>26} {'runs (mean)':>12} {'fixed':>6}")
    rows = [
        ("2 variants, quickstart sds", [0.0, 0.0], [ROPE[1], SWIGLU[1]], None),
        ("2 variants, sd 0.005", [0.0, 0.0], [0.005, 0.005], None),
        ("4 variants, sd 0.005", [0.0] * 4, [0.005] * 4, None),
        (f"2 variants, sd 0.005, margin {args.margin:g}", [0.0, 0.0], [0.005, 0.005], args.margin),
    ]
    for i, (name, eff, sd, margin) in enumerate(rows):
        r = simulate(eff, sd, Design(alpha=args.alpha, margin=margin), R, seed=args.seed + i)
        fp = np.isin(r["decision"], ["helps", "hurts"]).any(axis=1)
        print(f"{name:<46} {rate(fp):>26} {r['runs'].mean():>12.2f} {(len(eff) + 1) * looks[-1]:>6}")

    r = simulate([0.0, 0.0], [0.005, 0.005], design, R, seed=args.seed + 1)
    naive = naive_fwer(r["diffs"], looks, args.alpha, design.rho)
    print(f"{'(for contrast) normal z boundaries, sd plugged in':<46} {rate(naive):>26}")

    print("\n2. Partial null: RoPE's effect next to a null variant (sd 0.008)")
    r = simulate([ROPE[0], 0.0], [ROPE[1], 0.008], design, R, seed=args.seed + 10)
    fp = np.isin(r["decision"][:, 1], ["helps", "hurts"])
    print(f"  false positives on the null variant: {rate(fp)}; rope helps: "
          f"{(r['decision'][:, 0] == 'helps').mean():.4f}")

    print("\n3. Quickstart effects: verdicts, seeds and runs (fixed designs: same data, t-test + Holm)")
    cases = (("measured (200 steps)", SWIGLU), ("issue's SwiGLU -0.006, sd 0.005", SWIGLU_ISSUE))
    for i, (label, sw) in enumerate(cases):
        for margin in (None, args.margin):
            r = simulate([ROPE[0], sw[0]], [ROPE[1], sw[1]], Design(alpha=args.alpha, margin=margin),
                         R, seed=args.seed + 20 + i)
            dec, seeds = r["decision"], r["seeds"]
            f10, f3 = fixed_design(r["diffs"], looks[-1], args.alpha), fixed_design(r["diffs"], 3, args.alpha)
            print(f"  SwiGLU {label}, margin {margin if margin else 'none'}:")
            for j, v in enumerate(("rope", "swiglu")):
                share = {k: (dec[:, j] == k).mean() for k in ("helps", "hurts", "no detectable effect")}
                first = (seeds[:, j] == looks[0]).mean()
                print(f"    {v:<7} helps {share['helps']:.3f}  hurts {share['hurts']:.3f}  "
                      f"no effect {share['no detectable effect']:.3f}  | decided at {looks[0]} seeds "
                      f"{first:.3f}, mean seeds {seeds[:, j].mean():.2f} | fixed 10 seeds: helps "
                      f"{(f10[:, j] == 1).mean():.3f} hurts {(f10[:, j] == 2).mean():.3f}; fixed 3: "
                      f"helps {(f3[:, j] == 1).mean():.3f} hurts {(f3[:, j] == 2).mean():.3f}")
            print(f"    runs: sequential mean {r['runs'].mean():.2f} (median {np.median(r['runs']):.0f}, "
                  f"max {r['runs'].max()}) vs fixed {3 * looks[-1]} (3 x {looks[-1]}) and shipped 9 (3 x 3)")


if __name__ == "__main__":
    main()
