"""Accuracy vs operand length per variant, from task runs tracked in MLflow (issue 11; docs/results.md).

    python scripts/accuracy_vs_length.py --tracking-uri URI --experiment NAME [--group NAME] [--by-data] \
        --title TITLE --out docs/addition-positions-lengths.png [--trained 2]

Each line is one variant (``--by-data``: one variant on one data spec, as ``ablate compare --by-data``
labels them): the mean over seeds of the final ``acc_len<L>`` (the longer operand has exactly L digits),
with every seed as a dot; ``--trained N`` shades the lengths past N, never trained on. Prints the table
(mean and per-seed values) in Markdown. Uses matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections import defaultdict


def collect(uri: str, experiment: str, group: str | None, by_data: bool) -> dict[str, dict[int, list[float]]]:
    from ablate.compare import variant_label
    from ablate.track import client_for, find_parent, find_runs

    client, _ = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    where = {}
    if group:
        where = {"mlflow.parentRunId": find_parent(client, exp.experiment_id, group)}
    out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in find_runs(client, [exp.experiment_id], where):
        tags, metrics = run.data.tags, run.data.metrics
        if "ablate.variant" not in tags or tags.get("ablate.status") != "finished":
            continue
        label = variant_label(tags, by_data)
        for key, value in metrics.items():
            m = re.fullmatch(r"final_acc_len(\d+)", key)
            if m:
                out[label][int(m.group(1))].append(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--experiment", default="ablate")
    p.add_argument("--group", default=None)
    p.add_argument("--by-data", action="store_true")
    p.add_argument("--title", default="exact-match accuracy vs operand length")
    p.add_argument("--trained", type=int, default=None, help="longest operand length trained on")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = collect(args.tracking_uri, args.experiment, args.group, args.by_data)
    lengths = sorted({L for per in data.values() for L in per})
    fig = Figure(figsize=(7, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, label in enumerate(sorted(data)):
        per = data[label]
        xs = [L for L in lengths if per.get(L)]
        means = [100 * statistics.mean(per[L]) for L in xs]
        line, = ax.plot([x + 0.03 * (i - 2) for x in xs], means, "o-", label=f"{label} ({len(per[xs[0]])} seeds)")
        for L in xs:
            ax.scatter([L + 0.03 * (i - 2)] * len(per[L]), [100 * v for v in per[L]], s=10, alpha=0.4,
                       color=line.get_color())
    if args.trained is not None and lengths:
        ax.axvspan(args.trained + 0.5, max(lengths) + 0.5, color="grey", alpha=0.12, label="never trained on")
    ax.set_xticks(lengths)
    ax.set_xlabel("digits of the longer operand")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(args.out)
    print("| variant | " + " | ".join(f"len {L}" for L in lengths) + " |")
    print("|:---|" + "---:|" * len(lengths))
    for label in sorted(data):
        cells = []
        for L in lengths:
            vals = data[label].get(L, [])
            cells.append(f"{100 * statistics.mean(vals):.1f}" if vals else "—")
        print(f"| `{label}` | " + " | ".join(cells) + " |")
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
