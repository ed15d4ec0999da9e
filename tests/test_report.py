"""Tests for ablate.report: comparison building, warnings, rendering and the written report."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from ablate import stats
from ablate.errors import AblateError
from ablate.report import (
    RunRecord,
    build_comparison,
    render_markdown,
    render_table,
    render_text,
    verdict_table,
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
                                 tokens_per_s=tps + 100 * s, decode_tokens_per_s=tps / 50 + s,
                                 status="finished",
                                 fairness=dict(FAIR)))
    return out


def replace(records, run_id, **changes):
    return [dataclasses.replace(r, **changes) if r.run_id == run_id else r for r in records]


# --------------------------------------------------------------------------- build_comparison


def test_rows_baseline_first_with_verdicts_and_costs():
    c = build_comparison(make_records(), "baseline", "val_bpb")
    assert c.baseline == "baseline" and c.metric_name == "val_bpb" and c.lower_is_better
    assert [r.variant for r in c.rows] == ["baseline", "rope", "swiglu"]
    base, rope, swiglu = c.rows
    assert base.is_baseline and base.paired is None and base.verdict is None
    assert base.summary.n == 3 and base.seeds == (0, 1, 2)
    assert rope.verdict == stats.HELPS
    assert rope.paired.n == 3 and rope.paired.mean_diff == pytest.approx(-0.05, abs=0.01)
    assert swiglu.verdict == stats.NO_EFFECT and swiglu.p_adjusted > 0.05  # +0.0002 within noise
    assert rope.params == 10_640_000 and rope.flops_per_token == 6.5e7
    assert rope.kv_bytes_per_token == 12288.0
    assert rope.tokens_per_s == pytest.approx(50100.0)  # median of 50000, 50100, 50200
    assert rope.decode_tokens_per_s == pytest.approx(1001.0)  # median of 1000, 1001, 1002
    table = verdict_table(c)
    assert table.headers[-2:] == ["tokens/s", "decode tok/s"] and table.rows[1][-1] == "1.0k"
    old = build_comparison([dataclasses.replace(r, decode_tokens_per_s=None) for r in make_records()],
                           "baseline", "val_bpb")  # runs logged before decode was measured
    assert old.rows[1].decode_tokens_per_s is None and verdict_table(old).rows[1][-1] == "—"
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


def test_diverged_run_is_a_result_and_the_verdict_says_unstable():
    recs = replace(make_records(), "rope-2", status="diverged", metric=float("nan"))
    c = build_comparison(recs, "baseline", "val_bpb")
    rope = c.row("rope")
    assert rope.summary.n == 2 and rope.paired.n == 2 and rope.paired.seeds == (0, 1)
    assert rope.verdict == "unstable: diverged on 1 of 3 seeds" and rope.diverged == (2,)
    assert c.excluded == [] and c.unstable == ["rope seed 2 (run rope-2): diverged"]
    assert any("rope seed 2 (run rope-2): diverged" in w and "unstable" in w for w in c.warnings)
    assert c.row("swiglu").verdict in (stats.NO_EFFECT, stats.HURTS, stats.HELPS)


def test_diverged_seeds_never_let_the_survivors_say_helps():
    seeds = (0, 1, 2, 3, 4)
    recs = make_records({"baseline": 0.0, "rope": -0.05}, seeds=seeds)
    assert build_comparison(recs, "baseline", "val_loss").row("rope").verdict == stats.HELPS
    for s in (3, 4):
        recs = replace(recs, f"rope-{s}", status="diverged", metric=float("nan"))
    rope = build_comparison(recs, "baseline", "val_loss").row("rope")
    assert rope.paired.n == 3 and rope.paired.ci_high < 0  # the survivors alone would say helps
    assert rope.verdict == "unstable: diverged on 2 of 5 seeds"
    assert rope.verdict != stats.HELPS and stats.is_unstable(rope.verdict)


def test_unstable_baseline_makes_every_verdict_say_so():
    recs = replace(make_records(), "baseline-1", status="diverged", metric=float("nan"))
    c = build_comparison(recs, "baseline", "val_bpb")
    assert c.row("rope").verdict == "unstable: baseline diverged on 1 of 3 seeds"
    assert c.row("swiglu").verdict == "unstable: baseline diverged on 1 of 3 seeds"
    table = verdict_table(c)
    assert table.rows[0][table.headers.index("verdict")] == "unstable: diverged on 1 of 3 seeds"
    other = build_comparison(replace(make_records(), "rope-1", status="diverged", metric=float("nan")), "rope",
                             "val_bpb")  # --baseline rope: the verdicts name it
    assert other.row("swiglu").verdict == "unstable: baseline rope diverged on 1 of 3 seeds"
    from ablate.report.render import _noise_floor_sentence

    assert _noise_floor_sentence(other).startswith("Noise floor: the baseline rope's seed-to-seed")


def test_baseline_with_only_diverged_runs_is_reported_not_raised():
    recs = [dataclasses.replace(r, status="diverged", metric=float("nan")) if r.variant == "baseline" else r
            for r in make_records()]
    c = build_comparison(recs, "baseline", "val_bpb")
    assert c.row("rope").verdict == "unstable: baseline diverged on 3 of 3 seeds"
    assert c.row("rope").paired.n == 0


def test_baseline_with_only_failed_runs_raises():
    recs = [dataclasses.replace(r, status="failed") if r.variant == "baseline" else r
            for r in make_records()]
    with pytest.raises(AblateError, match="no finished or diverged runs"):
        build_comparison(recs, "baseline", "val_bpb")


# --------------------------------------------------------------------------- stalled runs

def test_stall_rule_on_curves():
    from ablate.report.stability import stall_reason

    learning = [(0, 4.2), (50, 2.6), (100, 2.2)]
    flat = [(0, 4.2), (50, 3.31), (100, 3.32)]
    assert stall_reason(learning) is None
    assert "no better than the first eval after step 0" in stall_reason(flat)
    assert stall_reason([(0, 4.2), (100, 3.3)]) is None  # one eval after step 0: no rule applies
    # within max(0.05, 2%) of the unigram entropy 3.30 (margin 0.066), although still improving
    near = [(0, 4.2), (50, 3.5), (100, 3.36)]
    assert stall_reason(near) is None
    assert "unigram entropy" in stall_reason(near, final_loss=3.36, unigram_entropy=3.30)
    assert stall_reason(near, final_loss=3.23, unigram_entropy=3.30) is None  # 0.07 below: learned
    assert stall_reason(learning, final_loss=2.2, unigram_entropy=3.30) is None
    # higher is better: a metric that did not rise
    assert stall_reason([(0, 0.0), (5, 0.4), (10, 0.3)], lower_is_better=False) is not None


def test_stalled_run_is_detected_from_its_curve_and_makes_the_variant_unstable():
    recs = make_records({"baseline": 0.0, "post": -0.05})
    flat = [(0, 4.2), (100, 3.31), (200, 3.312)]
    recs = replace(recs, "post-1", curve=flat)
    c = build_comparison(recs, "baseline", "val_loss")
    post = c.row("post")
    assert post.verdict == "unstable: stalled on 1 of 3 seeds" and post.stalled == (1,)
    assert post.summary.n == 3  # a stalled run keeps its value in the numbers
    assert any("post seed 1" in u and "stalled" in u for u in c.unstable)


def test_stalled_run_by_unigram_entropy():
    recs = make_records({"baseline": 0.0, "post": -0.05})
    h = 1.60  # the records' level sits near 1.55..1.65: call the training data's unigram entropy 1.60
    recs = [dataclasses.replace(r, unigram_entropy=h) for r in recs]
    c = build_comparison(recs, "baseline", "val_loss")
    assert all(stats.is_unstable(r.verdict) for r in c.rows[1:])
    # the same runs measured in another metric use final_loss (nats/token) for the entropy rule
    recs = [dataclasses.replace(r, unigram_entropy=3.3, final_loss=r.metric) for r in make_records()]
    c = build_comparison(recs, "baseline", "val_bpb")
    assert c.row("rope").verdict == stats.HELPS and not c.unstable


def test_stability_rule_is_stated_in_the_report(tmp_path):
    c = build_comparison(make_records(), "baseline", "val_bpb")
    md = render_markdown(c)
    assert "*stalled*" in md and "unigram entropy" in md and "unstable" in md


def test_failed_run_and_nonfinite_finished_run_are_excluded():
    recs = replace(make_records(), "swiglu-0", status="failed")
    recs = replace(recs, "rope-1", metric=float("inf"))
    c = build_comparison(recs, "baseline", "val_bpb")
    text = " ".join(c.warnings)
    assert "swiglu seed 0 (run swiglu-0): failed" in text
    assert "rope seed 1 (run rope-1): final val_bpb is inf" in text
    assert c.row("swiglu").summary.n == 2 and c.row("rope").summary.n == 2


def test_an_interrupted_run_is_excluded_as_interrupted_with_how_to_continue_it():
    c = build_comparison(replace(make_records(), "rope-1", status="interrupted"), "baseline", "val_bpb")
    text = " ".join(c.warnings)
    assert "rope seed 1 (run rope-1): interrupted (continue it" in text and "--resume" in text
    assert c.row("rope").summary.n == 2


def test_missing_baseline_raises_with_variants_listed():
    recs = [r for r in make_records() if r.variant != "baseline"]
    with pytest.raises(AblateError) as e:
        build_comparison(recs, "baseline", "val_bpb")
    msg = str(e.value)
    assert "'baseline'" in msg and "rope" in msg and "swiglu" in msg and "baseline" in msg
    with pytest.raises(AblateError, match="rope, swiglu"):
        build_comparison(make_records(), "gpt2", "val_bpb")


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


def test_a_variant_equal_to_the_baseline_on_every_seed_is_not_called_underpowered():
    """Both at the same value on every seed (e.g. 0 accuracy): no "would need 1000 seeds" for a difference of 0."""
    import dataclasses

    recs = make_records({"baseline": 0.0, "rope": -0.05})
    recs += [dataclasses.replace(r, run_id=f"same-{r.seed}", variant="same") for r in recs if r.variant == "baseline"]
    c = build_comparison(recs, "baseline", "val_bpb")
    assert c.row("same").verdict == stats.NO_EFFECT
    said = [w for w in c.warnings if w.startswith("same:")]
    assert len(said) == 1 and "on every seed (difference 0)" in said[0] and "underpowered" not in said[0]


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
    wide = Console(record=True, width=400, file=io.StringIO(), color_system=None)
    from ablate.report.render import print_comparison

    print_comparison(c, wide, wide=True)  # --wide: every column, as --json, --csv and report.md
    assert "(unadjusted)" in wide.export_text()
    from ablate.stats import named_baseline

    assert named_baseline("baseline (scratch, 143,360 tokens)") == "baseline (scratch, 143,360 tokens)"
    assert named_baseline("rope") == "baseline rope" and named_baseline("baseline") == "baseline"
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
    (tmp_path / "curves.png").write_bytes(PNG_MAGIC)  # an earlier report's, in the same folder
    paths = write_report(c, recs, tmp_path)
    assert [p.name for p in paths] == ["report.md", "differences.png"]
    assert "curves.png" not in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "curves.png").exists()


def test_curves_with_different_eval_points_are_interpolated(tmp_path):
    recs = make_records()
    recs = replace(recs, "rope-1", curve=[(50 * k, 1.6 + 1.0 / (k + 1)) for k in range(21)])
    c = build_comparison(recs, "baseline", "val_bpb")
    paths = write_report(c, recs, tmp_path)
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert len(paths) == 3


# --------------------------------------------------------------------------- figures agree with verdicts

def _records_with_diffs(diffs: dict[str, list[float]]):
    levels = [1.61, 1.58, 1.63, 1.60, 1.59]
    out = [RunRecord(f"baseline-{s}", "baseline", s, lv, fairness=dict(FAIR)) for s, lv in enumerate(levels)]
    for v, ds in diffs.items():
        out += [RunRecord(f"{v}-{s}", v, s, lv + d, fairness=dict(FAIR)) for s, (lv, d) in enumerate(zip(levels, ds))]
    return out


def test_difference_marks_use_the_holm_interval_and_the_verdict_colour():
    from ablate.report.figures import _HELPS_COLOR, _NEUTRAL_COLOR, _UNSTABLE_COLOR, difference_marks

    recs = _records_with_diffs({"big": [-0.05, -0.051, -0.049, -0.052, -0.048],
                                "alibi": [-0.012, -0.02, -0.006, -0.015, -0.002],
                                "null": [0.01, -0.01, 0.004, -0.006, 0.001]})
    c = build_comparison(recs, "baseline", "val_loss")
    alibi = c.row("alibi")
    # alibi's unadjusted interval excludes zero, but Holm does not reject: no detectable effect
    assert alibi.paired.p_value < 0.05 < alibi.p_adjusted and alibi.paired.ci_high < 0
    assert alibi.verdict == stats.NO_EFFECT
    marks = {m.label.split(" ")[0]: m for m in difference_marks(c)}
    m = marks["alibi"]
    assert m.raw_high < 0 <= m.high and m.low < 0  # drawn interval (Holm) includes zero, like the verdict
    assert m.color == _NEUTRAL_COLOR
    assert alibi.holm_level == pytest.approx(1 - 0.05 / 2)
    big = marks["big"]
    assert c.row("big").verdict == stats.HELPS and big.high < 0 and big.color == _HELPS_COLOR
    assert c.row("big").holm_level == pytest.approx(1 - 0.05 / 3)
    # the rule for every row: the drawn interval excludes zero exactly when the verdict decides
    for r in c.rows[1:]:
        lo, hi = r.holm_ci
        assert (lo > 0 or hi < 0) == (r.verdict in (stats.HELPS, stats.HURTS))
    # unstable variants are drawn in the unstable colour whatever their interval
    recs = replace(recs, "big-4", status="diverged", metric=float("nan"))
    marks = {m.label.split(" ")[0]: m for m in difference_marks(build_comparison(recs, "baseline", "val_loss"))}
    assert marks["big"].color == _UNSTABLE_COLOR and stats.is_unstable(marks["big"].verdict)


def test_holm_levels_agree_with_holm_decisions():
    rng = np.random.default_rng(3)
    for _ in range(200):
        ps = {f"v{i}": float(p) for i, p in enumerate(rng.uniform(0, 0.08, size=rng.integers(1, 6)))}
        adj, levels = stats.holm(ps), stats.holm_levels(ps, 0.05)
        for k, p in ps.items():
            assert (p < 1 - levels[k]) == (adj[k] < 0.05)


def test_markdown_table_shows_both_intervals():
    c = build_comparison(make_records(), "baseline", "val_bpb")
    md = render_markdown(c)
    assert "[Holm CI]" in md and "95% CI (unadjusted)" in md and "Bonferroni" in md
    assert "[Holm CI]" in render_text(c) and "unadjusted" not in render_text(c).split("Noise floor")[0]


# --------------------------------------------------------------------------- no verdict over unfair runs

def test_mixed_fairness_is_refused_in_one_line_naming_key_values_and_how_to_select():
    from ablate.compare import compare, require_one_group, select_records

    recs = make_records()
    recs = recs + [dataclasses.replace(r, run_id=r.run_id + "-long", fairness={**FAIR, "budget": "30steps"})
                   for r in recs if r.variant != "swiglu"]
    with pytest.raises(AblateError) as e:
        compare(recs, baseline=None, metric="val_loss", alpha=0.05)
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 2
    assert "differ in budget tokens=2000000 (9 runs) vs 30steps (6 runs)" in msg
    assert "--group NAME" in msg and "--budget tokens=2000000" in msg
    picked = select_records(recs, {"budget": "30steps"})
    assert {r.fairness["budget"] for r in picked} == {"30steps"} and len(picked) == 6
    require_one_group(picked)
    c = compare(picked, baseline=None, metric="val_loss", alpha=0.05)
    assert [r.variant for r in c.rows] == ["baseline", "rope"]
    with pytest.raises(AblateError, match="no runs with budget=1steps; the runs have budget: 30steps, tokens=2000000"):
        select_records(recs, {"budget": "1steps"})
    with pytest.raises(AblateError, match="cannot select on 'width'"):
        select_records(recs, {"width": "64"})


def test_missing_fairness_key_is_its_own_group_and_the_header_reads_the_runs():
    from ablate.compare import require_one_group
    from ablate.report.render import comparison_header

    recs = replace(make_records(), "rope-0", fairness={k: v for k, v in FAIR.items() if k != "tokenizer"})
    with pytest.raises(AblateError, match=r"tokenizer char \(8 runs\) vs <not recorded> \(1 run\)"):
        require_one_group(recs)
    fair = {**FAIR, "dims": "64x2x4@32", "batch": "4x1"}
    recs = [dataclasses.replace(r, fairness=fair, dataset="shakespeare") for r in make_records()]
    c = build_comparison(recs, "baseline", "val_loss")
    header = comparison_header(c, recs)
    for part in ("9 runs, 3 variants x 3 seeds (0, 1, 2)", "budget tokens=2000000", "64x2x4@32", "4x1",
                 "data shakespeare (fingerprint tinyshakespeare)", "tokenizer char"):
        assert part in header
    uneven = [r for r in recs if not (r.variant == "rope" and r.seed == 2)]  # rope has 2 seeds, the others 3
    assert "8 runs, 3 variants, 2-3 seeds each (0, 1, 2)" in comparison_header(c, uneven)
    staggered = [r for r in recs if r.seed != (2 if r.variant == "rope" else 0)]  # 2 seeds each, not the same
    assert "3 variants, 2 seeds each (0, 1, 2)" in comparison_header(c, staggered)


@pytest.mark.parametrize("width", [80, 120])
def test_the_verdict_tables_fit_the_terminal_without_cutting_cells(width):
    from ablate.report.render import print_comparison

    c = build_comparison(make_records(), "baseline", "val_bpb")
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    print_comparison(c, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    for needle in ("helps", "no detectable effect", "rope", "swiglu", "10.6M", "what each variant costs"):
        assert needle in text.replace("\n", " ") or needle in text
    wide = Console(record=True, width=200, file=io.StringIO(), color_system=None)
    print_comparison(c, wide, wide=True)
    full = wide.export_text()
    assert "FLOPs/token" in full and "p (Holm)" in full and "what each variant costs" not in full


def test_a_cell_table_as_csv_and_strict_json():
    import csv
    import json

    from ablate.report.tables import CellTable, strict_json

    table = CellTable("t", ["variant", "Δ [CI]"])
    table.add("rope+swiglu", "-0.1, \"x\"")
    assert list(csv.reader(io.StringIO(table.to_csv()))) == [["variant", "Δ [CI]"], ["rope+swiglu", '-0.1, "x"']]
    text = strict_json({"loss": float("inf"), "rows": [float("nan"), 1.5], "ok": True})
    assert json.loads(text) == {"loss": None, "rows": [None, 1.5], "ok": True}
    assert "NaN" not in text and "Infinity" not in text


def test_one_seed_prints_no_noise_floor_and_no_count_of_zero_comparisons():
    from ablate.report.render import print_comparison

    c = build_comparison(make_records(seeds=(0,)), "baseline", "val_bpb")
    console = Console(record=True, width=200, file=io.StringIO())
    print_comparison(c, console)
    text = console.export_text()
    assert "noise floor: not available (1 finished seed(s) of the baseline;" in text and "nan" not in text
    assert "across the 0 variant" not in render_markdown(c)


def test_a_metric_no_run_recorded_is_named_as_such_not_as_failed_runs():
    recs = [dataclasses.replace(r, metric=float("nan")) for r in make_records()]
    with pytest.raises(AblateError, match="none of the 9 finished runs recorded 'acc'; pick a metric"):
        build_comparison(recs, "baseline", "acc")


def test_repeated_runs_are_one_warning_per_seed_and_other_settings_are_named():
    recs = make_records()
    extra = [dataclasses.replace(r, run_id=f"{r.run_id}-again{i}") for r in recs if r.run_id == "rope-0"
             for i in range(2)]
    recs = [dataclasses.replace(r, recipe={"lr": "0.00185" if r.run_id == "rope-0" else "0.001"}) for r in recs]
    c = build_comparison(recs + [dataclasses.replace(e, recipe={"lr": "0.001"}) for e in extra], "baseline", "val_bpb")
    repeated = [w for w in c.warnings if "finished runs" in w]
    assert repeated == ["rope seed 0 has 3 finished runs (rope-0, rope-0-again0, rope-0-again1); using rope-0."]
    assert c.warnings[0].startswith("rope's runs were trained with different settings (lr 0.00185 for seed(s) 0; "
                                    "lr 0.001 for seed(s) 1, 2)")
    assert not any(w.startswith("baseline's runs") for w in c.warnings)


def test_runs_of_one_variant_from_two_versions_of_its_plugin_code_are_named():
    """Each run records its plugin components' code (the ablate.components tag, read into RunRecord.code); seeds
    trained with another version of it are not replicates, as with other settings."""
    recs = [dataclasses.replace(r, code=f"scalenorm file sha256:{'aaa' if r.seed == 0 else 'bbb'}")
            if r.variant == "rope" else r for r in make_records()]
    c = build_comparison(recs, "baseline", "val_loss")
    assert c.warnings[0].startswith("rope's runs were trained with different settings (plugin code scalenorm file "
                                    "sha256:aaa for seed(s) 0; plugin code scalenorm file sha256:bbb for seed(s) 1, 2)")
    same = [dataclasses.replace(r, code="scalenorm file sha256:aaa") if r.variant == "rope" else r
            for r in make_records()]
    assert not any("different settings" in w for w in build_comparison(same, "baseline", "val_loss").warnings)


def test_the_components_tag_reads_as_code():
    from ablate.compare import _code

    assert _code('{"scalenorm": "file sha256:1a2b"}') == "scalenorm file sha256:1a2b"
    assert _code("{}") == _code("") == _code("not json") == ""
