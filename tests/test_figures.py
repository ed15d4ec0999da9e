"""curves.png: the whole run beside a zoom on its last 30%, where the gap the verdict is about lives."""

from __future__ import annotations

from ablate.report import build_comparison
from ablate.report import figures
from test_report import make_records


def test_curves_show_the_whole_run_and_a_zoom_on_its_end(tmp_path, monkeypatch):
    made = []
    real = figures.new_figure
    monkeypatch.setattr(figures, "new_figure", lambda *a: made.append(real(*a)) or made[-1])
    records = make_records(effects={"baseline": 0.0, "rope": -0.05})
    c = build_comparison(records, "baseline", "val_loss")
    assert figures.plot_curves(c, records, tmp_path / "curves.png", "step")
    whole, final = made[0].axes
    assert "nats" in whole.get_ylabel() and "nats" in final.get_ylabel()  # units on both y axes
    # the zoom starts at 70% of the run and its y range is narrow enough to see a 0.05 gap
    assert min(min(line.get_xdata()) for line in final.get_lines()) >= 700
    bottom, top = final.get_ylim()
    assert top - bottom < 0.25 * (whole.get_ylim()[1] - whole.get_ylim()[0])
    labels = [t.get_text() for t in whole.get_legend().get_texts()]
    assert labels == ["baseline (n=3)", "rope (n=3)"]
