"""The report of a pretrain-then-finetune study: the pretraining runs' train/val gap and decontamination,
then two verdicts per variant, each paired by seed: pretrained vs scratch at equal finetune budget, and
pretrained vs scratch given the pretraining tokens too (equal total compute). Each verdict is the usual
comparison (:func:`ablate.compare.compare`), written to its own folder; ``report.md`` holds all."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from rich.console import Console

from ablate.errors import AblateError
from ablate.format import num
from ablate.report.render import comparison_header, print_comparison, render_markdown, write_report
from ablate.report.tables import CellTable

EQUAL_FINETUNE = "equal-finetune-budget"
EQUAL_TOTAL = "equal-total-compute"


def _decontamination(run_dir: str) -> str:
    """What decontamination removed from the pretraining data, from the run's config.json."""
    try:
        data = json.loads((Path(run_dir) / "config.json").read_text("utf-8")).get("data", {})
    except (OSError, ValueError):
        return "?"
    d = data.get("decontamination")
    if not d:
        return "none"
    docs = d.get("removed_documents", 0) + d.get("kept_documents", 0)
    return (f"{d.get('removed_documents', '?'):,} of {docs:,} documents, {d.get('removed_bytes', 0):,} bytes "
            f"({d.get('n', '?')}-grams vs {d.get('against', d.get('spec', '?'))})")


def pretraining_table(ctx) -> tuple[CellTable, list[str]]:
    """One row per pretraining run: final train loss (mean of the last logged steps), val loss, the gap."""
    from ablate.study.pretrain import pretrain_config

    from ablate.study.stages import pretrain_points, pretrain_trials

    spec = ctx.spec
    pre = pretrain_config(spec.config, spec.pretrain)
    trials = pretrain_trials(ctx)
    table = CellTable(f"stage 1: pretraining on {pre.data} ({pre.budget}, lr {pre.lr:g})",
                      ["variant", "seed", "steps", "train loss", "val loss", "val − train", "decontamination removed"],
                      right=(1, 2, 3, 4, 5))
    gaps = []
    for point in pretrain_points(spec):
        t = trials.get((point["variant"], point["seed"]))
        if t is None:
            table.add(point["variant"], point["seed"], "—", "—", "—", "—", "not finished")
            continue
        final = t.user_attrs.get("ablate.final", {})
        train, val = final.get("train_loss", math.nan), final.get("val_loss", math.nan)
        gap = val - train
        gaps.append(f"{point['variant']} seed {point['seed']}: val − train = {gap:+.4f} nats/token "
                    f"({100 * gap / train:+.1f}% of the train loss)" if train == train and train else "")
        table.add(point["variant"], point["seed"], t.user_attrs.get("ablate.steps", "?"), num(train), num(val),
                  num(gap, sign=True), _decontamination(t.user_attrs.get("ablate.run_dir", "")))
    return table, [g for g in gaps if g]


def _comparisons(ctx, trials, records_by_id, variant: str):
    """(scratch vs pretrained at equal finetune budget, scratch-total vs pretrained at equal total tokens)."""
    from ablate.study.keys import K_RUN
    from ablate.study.pretrain import total_budget

    spec = ctx.spec
    arms = {arm: [records_by_id[t.user_attrs[K_RUN]] for (v, _, a), t in trials.items() if v == variant and a == arm]
            for arm in ("scratch", "pretrained", "scratch-total")}
    total = total_budget(spec.config, spec.pretrain)
    same_total = f"{total} in all (pretraining + finetune)"
    relabel = f"{variant} (scratch, {total})"
    total_records = [dataclasses.replace(r, variant=relabel, fairness={**r.fairness, "budget": same_total})
                     for r in arms["scratch-total"]]
    total_records += [dataclasses.replace(r, fairness={**r.fairness, "budget": same_total}) for r in arms["pretrained"]]
    return ((EQUAL_FINETUNE, f"pretrained vs scratch at equal finetune budget ({spec.config.budget})",
             arms["scratch"] + arms["pretrained"], variant),
            (EQUAL_TOTAL, f"pretrained vs scratch at equal total compute ({total}: the scratch runs also get "
                          "the pretraining tokens)", total_records, relabel))


def pretrain_report(ctx, out: Path, console: Console, wide: bool = False) -> list[Path]:
    from ablate.compare import compare, load_records
    from ablate.study.keys import K_RUN
    from ablate.study.stages import finetune_trials

    spec = ctx.spec
    table, gaps = pretraining_table(ctx)
    console.print(table.to_rich())
    for line in gaps:
        console.print(f"pretraining gap: {line}", highlight=False, markup=False)
    trials, missing = finetune_trials(ctx)
    if not trials:
        raise AblateError(f"study {spec.name!r} has no finished finetune trials yet; run "
                          f"`{ctx.run_command()}` first")
    records = load_records(tracking_uri=ctx.tracking_uri, experiment=ctx.experiment,
                           run_ids=[t.user_attrs[K_RUN] for t in trials.values()], metric=spec.metric)
    by_id = {r.run_id: r for r in records}
    md = [f"# Pretrain, then finetune: {spec.name}\n", f"`{spec.path.name}`; {spec.description}\n",
          "## Stage 1: pretraining\n",
          "Train loss is the mean training loss of the last logged steps, val loss the held-out loss of the "
          "pretraining corpus at the end; a gap near zero is the exercise's \"no visible gap\" condition "
          "(the model has not begun to memorise its corpus).\n", table.to_markdown(), ""]
    md += [f"- {g}" for g in gaps] + [""]
    paths: list[Path] = []
    for variant in spec.variants:
        for folder, title, recs, baseline in _comparisons(ctx, trials, by_id, variant):
            if not recs:
                continue
            sub = out / (folder if len(spec.variants) == 1 else f"{folder}-{variant}")
            comparison = compare(recs, baseline=baseline, metric=spec.metric, alpha=spec.alpha)
            console.print(f"{variant}: {title}: {comparison_header(comparison, recs)}", highlight=False, markup=False)
            print_comparison(comparison, console, wide=wide)
            written = write_report(comparison, recs, sub)
            paths += written[1:]
            body = render_markdown(comparison, [f"{sub.name}/{p.name}" for p in written[1:]],
                                   comparison_header(comparison, recs))
            md += [f"## {variant}: {title}\n", body.split("\n", 1)[1].replace("\n## ", "\n### "), ""]
    if missing:
        warning = (f"{len(missing)} (variant, seed, arm) not finished yet: {', '.join(missing[:10])}"
                   f"{' …' if len(missing) > 10 else ''}; re-run `ablate study run` to finish them")
        console.print(f"warning: {warning}", highlight=False, markup=False, style="yellow")
        md.append(f"Warning: {warning}.\n")
    pretrain_note = ("one pretraining run per variant and seed" if spec.pretrain["per_seed"] else
                     f"one pretraining run per variant (seed {spec.pretrain['seed']}) shared by every seed: the "
                     "intervals cover finetune seeds (data order; the scratch arms' initialisation too), not "
                     "pretraining seeds")
    md.append(f"Pairing: by seed; {pretrain_note}.\n")
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    report.write_text("\n".join(md), encoding="utf-8")
    return [report, *paths]
