"""Tests for ablate.report: comparison building, warnings, rendering and the written report."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from rich.table import Table

from ablate import stats
from ablate.errors import AblateError
from ablate.report import (
    Comparison,
    RunRecord,
    build_comparison,
    render_markdown,
    render_table,
    render_text,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAIR = {"budget": "tokens=2000000", "data": "tinyshakespeare", "tokenizer": "char",
        "eval_batches": "20x8@1234"}
COSTS = {  # params, FLOPs/token, KV bytes/token, tokens/s
    "baseline": (10_770_000, 6.6e7, 12288.0, 51000.0),
    "rope": (10_640_000, 6.5e7, 12288.0, 50000.0),
    "swiglu": (10_780_000, 6.6e7, 12288.0, 48000.0),
}


def make_records(effects=None, seeds=(0, 1, 2), rng_seed=0, curve_points=11):
    """Synthetic seed-paired runs: a per-seed level shared by all variants plus small noise."""
    effects = effects or {"baseline": 0.0, "rope": -0.05, "swiglu": 0.002}
    rng = np.random.default_rng(rng_seed)
    level = {s: 1.60 + rng.normal(0, 0.02) for s in seeds}
    out = []
    for v, eff in effects.items():
        params, flops, kv, tps = COSTS.get(v, COSTS["baseline"])
        for s in seeds:
            m = float(level[s] + eff + rng.normal(0, 0.003))
            curve = [(k * 100, m + 2.0 * math.exp(-k / 3)) for k in range(curve_points)]
            out.append(RunRecord(run_id=f"{v}-{s}", variant=v, seed=s, metric=m, curve=curve,
                                 params=params, flops_per_token=flops, kv_bytes_per_token=kv,
                                 tokens_per_s=tps + 100 * s, status="finished",
                                 fairness=dict(FAIR)))
    return out


def replace(records, run_id, **changes):
    return [dataclasses.replace(r, **changes) if r.run_id == run_id else r for r in records]


# --------------------------------------------------------------------------- build_comparison


def test_rows_baseline_first_with_verdicts_and_costs():
    c = build_comparison(make_records(), "baseline", "val_bpb")
    assert isinstance(c, Comparison)
    assert [r.variant for r in c.rows] == ["baseline", "rope", "swiglu"]
    base, rope, swiglu = c.rows
    assert base.is_baseline and base.paired is None and base.verdict is None
    assert base.summary.n == 3 and base.seeds == (0, 1, 2)
    assert rope.verdict == stats.HELPS
    assert rope.paired.n == 3 and rope.paired.mean_diff == pytest.approx(-0.05, abs=0.01)
    assert swiglu.verdict in (stats.NO_EFFECT, stats.HURTS, stats.HELPS)
    assert rope.params == 10_640_000 and rope.flops_per_token == 6.5e7
    assert rope.kv_bytes_per_token == 12288.0
    assert rope.tokens_per_s == pytest.approx(50100.0)  # median of 50000, 50100, 50200
    # Holm across the two non-baseline variants: adjusted >= raw, and matches stats.holm.
    adj = stats.holm({"rope": rope.paired.p_value, "swiglu": swiglu.paired.p_value})
    assert rope.p_adjusted == pytest.approx(adj["rope"]) and rope.p_adjusted >= rope.paired.p_value
    assert c.n_comparisons == 2
    base_values = [x.metric for x in make_records() if x.variant == "baseline"]
    assert c.noise_floor == pytest.approx(np.std(base_values, ddof=1))
    assert c.noise_floor_n == 3
    assert c.fairness == FAIR
    assert not [w for w in c.warnings if "unfair" in w]


def test_planted_degradation_is_called_hurts_end_to_end():
    recs = make_records({"baseline": 0.0, "bad": +0.05}, seeds=(0, 1, 2, 3, 4))
    assert build_comparison(recs, "baseline", "val_loss").row("bad").verdict == stats.HURTS


def test_null_study_end_to_end_mostly_no_detectable_effect():
    """Baseline re-runs as variants, 200 seeded repeats through build_comparison."""
    calls = []
    for i in range(200):
        recs = make_records({"baseline": 0.0, "again1": 0.0, "again2": 0.0}, rng_seed=1000 + i,
                            curve_points=2)
        c = build_comparison(recs, "baseline", "val_bpb")
        calls += [r.verdict for r in c.rows[1:]]
    assert calls.count(stats.NO_EFFECT) / len(calls) >= 0.95


def test_unfair_budget_warning_names_key_and_values():
    recs = replace(make_records(), "swiglu-1", fairness={**FAIR, "budget": "tokens=4000000"})
    c = build_comparison(recs, "baseline", "val_bpb")
    unfair = [w for w in c.warnings if "unfair" in w]
    assert len(unfair) == 1
    assert "'budget'" in unfair[0]
    assert "tokens=2000000" in unfair[0] and "tokens=4000000" in unfair[0]
    assert "swiglu seed 1" in unfair[0]
    assert "budget" not in c.fairness and c.fairness["data"] == "tinyshakespeare"
    assert c.warnings[0] == unfair[0]  # unfairness is stated first


def test_missing_fairness_key_is_unfair():
    recs = replace(make_records(), "rope-0", fairness={k: v for k, v in FAIR.items()
                                                       if k != "tokenizer"})
    c = build_comparison(recs, "baseline", "val_bpb")
    assert any("'tokenizer'" in w and "<not recorded>" in w for w in c.warnings)


def test_diverged_run_is_excluded_and_named():
    recs = replace(make_records(), "rope-2", status="diverged", metric=float("nan"))
    c = build_comparison(recs, "baseline", "val_bpb")
    rope = c.row("rope")
    assert rope.summary.n == 2 and rope.paired.n == 2 and rope.paired.seeds == (0, 1)
    excluded = [w for w in c.warnings if "excluded" in w]
    assert len(excluded) == 1
    assert "rope seed 2" in excluded[0] and "rope-2" in excluded[0] and "diverged" in excluded[0]
    assert c.excluded == ["rope seed 2 (run rope-2): diverged"]
    assert any("rope" in w and "baseline seed(s) 2" in w for w in c.warnings)


def test_failed_run_and_nonfinite_finished_run_are_excluded():
    recs = replace(make_records(), "swiglu-0", status="failed")
    recs = replace(recs, "rope-1", metric=float("inf"))
    c = build_comparison(recs, "baseline", "val_bpb")
    text = " ".join(c.warnings)
    assert "swiglu seed 0 (run swiglu-0): failed" in text
    assert "rope seed 1 (run rope-1): final val_bpb is inf" in text
    assert c.row("swiglu").summary.n == 2 and c.row("rope").summary.n == 2


def test_missing_baseline_raises_with_variants_listed():
    recs = [r for r in make_records() if r.variant != "baseline"]
    with pytest.raises(AblateError) as e:
        build_comparison(recs, "baseline", "val_bpb")
    msg = str(e.value)
    assert "'baseline'" in msg and "rope" in msg and "swiglu" in msg and "baseline" in msg
    with pytest.raises(AblateError, match="rope, swiglu"):
        build_comparison(make_records(), "gpt2", "val_bpb")


def test_baseline_with_only_diverged_runs_raises():
    recs = [dataclasses.replace(r, status="diverged") if r.variant == "baseline" else r
            for r in make_records()]
    with pytest.raises(AblateError, match="no finished runs"):
        build_comparison(recs, "baseline", "val_bpb")


def test_no_records_raises():
    with pytest.raises(AblateError):
        build_comparison([], "baseline", "val_bpb")


def test_seeds_without_baseline_pair_are_warned():
    recs = make_records() + [
        RunRecord("rope-7", "rope", 7, 1.55, [], 10_640_000, 6.5e7, 12288.0, None, "finished",
                  dict(FAIR))
    ]
    c = build_comparison(recs, "baseline", "val_bpb")
    rope = c.row("rope")
    assert rope.summary.n == 4 and rope.paired.n == 3
    assert any(w.startswith("rope: seed(s) 7 have no finished baseline run") for w in c.warnings)


def test_underpowered_warning_states_seeds_needed():
    # A small, noisy difference: not detectable with 3 seeds.
    recs = make_records({"baseline": 0.0, "tiny": 0.001})
    c = build_comparison(recs, "baseline", "val_bpb")
    tiny = c.row("tiny")
    assert tiny.verdict == stats.NO_EFFECT
    assert tiny.seeds_needed == stats.seeds_needed(tiny.paired.sd_diff, tiny.paired.mean_diff)
    assert tiny.seeds_needed > 3
    under = [w for w in c.warnings if "underpowered" in w]
    assert len(under) == 1 and under[0].startswith("tiny:")
    assert f"{tiny.seeds_needed} seeds" in under[0] or "at least 1000" in under[0]


def test_single_seed_gives_too_few_seeds():
    c = build_comparison(make_records(seeds=(0,)), "baseline", "val_bpb")
    assert {r.verdict for r in c.rows[1:]} == {stats.TOO_FEW}
    assert math.isnan(c.noise_floor) and c.noise_floor_n == 1
    assert any("only 1 seed(s)" in w for w in c.warnings)
    render_markdown(c)  # nan everywhere must still render


def test_duplicate_seed_runs_use_the_first_and_warn():
    recs = make_records()
    dup = dataclasses.replace(recs[3], run_id="rope-0-again", metric=9.9)
    c = build_comparison(recs + [dup], "baseline", "val_bpb")
    assert c.row("rope").summary.n == 3 and c.row("rope").summary.mean < 2
    assert any("rope-0-again" in w for w in c.warnings)


# --------------------------------------------------------------------------- rendering


def test_render_table_and_text():
    c = build_comparison(make_records(), "baseline", "val_bpb")
    table = render_table(c)
    assert isinstance(table, Table) and table.row_count == 3
    text = render_text(c)
    for name in ("baseline", "rope", "swiglu", "helps", "Noise floor"):
        assert name in text


def test_write_report_three_by_three(tmp_path):
    recs = replace(make_records(), "swiglu-2", status="diverged", metric=float("nan"))
    c = build_comparison(recs, "baseline", "val_bpb")
    paths = write_report(c, recs, tmp_path / "out")
    names = [p.name for p in paths]
    assert names == ["report.md", "curves.png", "differences.png"]
    assert all(p.exists() and p.parent == tmp_path / "out" for p in paths)
    md = (tmp_path / "out" / "report.md").read_text()
    for variant in ("baseline", "rope", "swiglu"):
        assert f"| `{variant}` |" in md
    assert "paired t-test" in md and "Holm" in md and "95%" in md
    assert "Noise floor" in md and "swiglu seed 2 (run swiglu-2): diverged" in md
    assert "![curves](curves.png)" in md and "![differences](differences.png)" in md
    for png in paths[1:]:
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_write_report_without_curves_skips_curves_png(tmp_path):
    recs = [dataclasses.replace(r, curve=[]) for r in make_records()]
    c = build_comparison(recs, "baseline", "val_bpb")
    paths = write_report(c, recs, tmp_path)
    assert [p.name for p in paths] == ["report.md", "differences.png"]
    assert "curves.png" not in (tmp_path / "report.md").read_text()


def test_curves_with_different_eval_points_are_interpolated(tmp_path):
    recs = make_records()
    recs = replace(recs, "rope-1", curve=[(50 * k, 1.6 + 1.0 / (k + 1)) for k in range(21)])
    c = build_comparison(recs, "baseline", "val_bpb")
    paths = write_report(c, recs, tmp_path)
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert len(paths) == 3
