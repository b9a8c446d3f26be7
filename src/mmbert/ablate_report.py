"""`ablations.md` and the plots of `mmbert ablate`, drawn from its analysis (`results.json`) alone.

`mmbert.ablate.analyze` computes every number; this module only words and draws them, so a report can
be rebuilt from `results.json` without training or evaluating anything:

- `claims.png`: each claim's difference, turned so that right is the first model better, with its t
  interval across seeds (thick) and its bootstrap interval over documents (thin);
- `arms_by_group.png`, `decay_models_by_group.png`: the arms' models, and the paper arm's decay
  variants and merges, per language group (by phase of introduction, and by thirds of training text),
  mean over seeds with the t interval, one dot per seed;
- `decay_experiment.png`: the decay-only languages (the paper's Figure 2 in miniature): each model's
  MLM loss and accuracy against decay-cont's (paired), on the group and on the paper's two examples;
- `training_loss.png`: the training loss of each arm over tokens, mean over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbert.io import atomic_write_text
from mmbert.plots import pyplot, save_figure
from mmbert.stats import interval_text

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974"]
# The models of the arms' comparisons (the rest are the paper arm's decay variants and merges).
ARM_MODELS = ("paper/decay-all", "paper/decay-cont", "mask-15", "tau-0.7", "tau-0.3", "langs-all")
METRIC_NAMES = {"mlm_loss": "MLM loss", "mlm_accuracy": "MLM accuracy", "retrieval": "retrieval"}
# The paper's Figure 2 (F1, mmBERT-base): decay-cont (110 languages), decay-all (1833), the TIES merge.
PAPER_FIGURE_2 = {
    "tir_Ethi": ("Tigrinya (TiQuAD)", 17.8, 29.9, 26.8),
    "fao_Latn": ("Faroese (FoQA)", 60.4, 76.0, 73.5),
}


# ---------------------------------------------------------------------------------------------- numbers
def fmt(metric: str, x: float | None, diff: bool = False) -> str:
    """A metric value: loss to 3 decimals, accuracies in % (differences in percentage points); a
    difference too small for that shows its first significant digits."""
    if x is None or not math.isfinite(x):
        return "-"
    scale, unit, places = (
        (1, "", 3) if metric == "mlm_loss" else (100, " pp" if diff else "%", 1 if not diff else 2)
    )
    value = scale * x
    if diff and value != 0 and abs(value) < 0.5 * 10**-places:
        return f"{value:+.1e}{unit}"
    return f"{value:+.{places}f}{unit}" if diff else f"{value:.{places}f}{unit}"


def fmt_ci(metric: str, ci: Sequence[float | None] | None, diff: bool = False) -> str:
    return interval_text(ci, lambda x: fmt(metric, x, diff).replace(" pp", "").replace("%", "")) or "[-]"


def _value_cell(metric: str, v: Mapping[str, Any]) -> str:
    return f"{fmt(metric, v['mean'])} {fmt_ci(metric, v['ci'])}"


VERDICTS = {
    "paper's direction": "outside both intervals, in the paper's direction",
    "against the paper": "outside both intervals, **against** the paper's direction",
    "a better": "outside both intervals: the first is better",
    "b better": "outside both intervals: the second is better",
    "not resolved": "within the interval: no difference resolved",
}


def _needs(m: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    parts = []
    if m.get("seeds_needed"):
        parts.append(f"{m['seeds_needed']} seeds at this scale")
    if m.get("scale_needed"):
        parts.append(f"`--scale {m['scale_needed']:.2g}` with {settings['seeds']} seeds if the effect holds")
    return ("; would separate with " + " or ".join(parts)) if parts else ""


def claim_sentence(claim: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """One paragraph per claim: what the paper says, then each metric's difference and verdict."""
    head = f"**{claim['id']}.** {claim['statement']} (`{claim['a']}` vs `{claim['b']}`, {claim['group']} languages)."
    if "missing" in claim:
        return [head + f" Not measured: {', '.join(claim['missing'])} not run.", ""]
    lines = [head, ""]
    for metric, m in claim["metrics"].items():
        d = m["difference"]
        lines.append(
            f"- {METRIC_NAMES[metric]}: {fmt(metric, m['a']['mean'])} vs {fmt(metric, m['b']['mean'])}; "
            f"difference {fmt(metric, d['mean'], True)}, 95% interval across seeds "
            f"{fmt_ci(metric, d['ci'], True)}, bootstrap over documents {fmt_ci(metric, d['bootstrap_ci'], True)}: "
            f"{VERDICTS[m['verdict']]}{_needs(m, settings)}."
        )
    return [*lines, ""]


def claims_table(claims: Sequence[Mapping[str, Any]]) -> list[str]:
    marks = {
        "paper's direction": "✓ paper",
        "against the paper": "✗ against",
        "a better": "first better",
        "b better": "second better",
        "not resolved": "–",
    }
    lines = [
        "| claim | comparison | group | MLM loss Δ | MLM accuracy Δ | retrieval Δ |",
        "|---|---|---|---:|---:|---:|",
    ]
    for c in claims:
        if "missing" in c:
            lines.append(
                f"| {c['id']} | `{c['a']}` − `{c['b']}` | {c['group']} | not run | not run | not run |"
            )
            continue
        cells = []
        for metric, m in c["metrics"].items():
            d = m["difference"]
            cells.append(
                f"{fmt(metric, d['mean'], True)} {fmt_ci(metric, d['ci'], True)} {marks[m['verdict']]}"
            )
        lines.append(f"| {c['id']} | `{c['a']}` − `{c['b']}` | {c['group']} | " + " | ".join(cells) + " |")
    return lines


def models_table(models: Mapping[str, Any], grouping: str, metric: str) -> list[str]:
    groups = list(dict.fromkeys(g for m in models.values() for g in m[grouping]))
    lines = ["| model | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    for name, m in models.items():
        cells = [_value_cell(metric, m[grouping][g][metric]) if g in m[grouping] else "-" for g in groups]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def decay_tables(exp: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """The decay-only group: each model's loss and accuracy, decay-all's gain, each merge's retention;
    then the paper's example languages, and a summary over every decay-only language."""
    if not exp.get("group"):
        return ["Not measured: the paper arm's decay-cont and decay-all models are needed.", ""]
    lines = [
        f"{len(exp['languages'])} languages are first seen in the decay, by decay-all only. Mean over seeds, "
        "95% t interval (bootstrap interval over documents in the JSON):",
        "",
        "| model | MLM loss | MLM accuracy |",
        "|---|---:|---:|",
    ]
    g = exp["group"]
    for m in exp["models"]:
        lines.append(
            f"| {m} | {_value_cell('mlm_loss', g['mlm_loss']['values'][m])} "
            f"| {_value_cell('mlm_accuracy', g['mlm_accuracy']['values'][m])} |"
        )
    lines.append("")
    for metric in ("mlm_loss", "mlm_accuracy"):
        block = g[metric]
        gain = block["gain"]
        resolved = "resolved (both intervals exclude 0)" if block["gain_resolved"] else "not resolved"
        if block["gain_resolved"]:
            ret = "Retention (merge − cont) / (all − cont), bootstrap interval: " + "; ".join(
                f"{m} keeps {_pct(r['mean'])} {_pct_ci(r['bootstrap_ci'])}"
                for m, r in block["retention"].items()
            )
        else:
            ret = "No retention is stated: a share of an unresolved gain means nothing"
        lines.append(
            f"- {METRIC_NAMES[metric]}: decay-all's gain over decay-cont {fmt(metric, gain['mean'], True)} "
            f"{fmt_ci(metric, gain['ci'], True)} across seeds, {fmt_ci(metric, gain['bootstrap_ci'], True)} "
            f"over documents: {resolved}. {ret}."
        )
    lines += ["", "The paper's examples (its Figure 2: F1 of mmBERT-base on QA):", ""]
    lines += [
        "| language | paper: decay-cont → decay-all, merge (retention) | here: MLM loss cont → all | "
        "TIES | retention | MLM acc cont → all | TIES |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for lang, (name, cont, all_, merged) in PAPER_FIGURE_2.items():
        entry = exp["per_language"].get(lang)
        paper = f"{cont} → {all_}, {merged} ({(merged - cont) / (all_ - cont):.0%})"
        if entry is None:
            lines.append(f"| {name} | {paper} | not evaluated | | | | |")
            continue
        lo, ac = entry["mlm_loss"], entry["mlm_accuracy"]
        v, a = lo["values"], ac["values"]
        ties = lo["retention"].get("ties", {})
        kept = (
            f"{_pct(ties.get('mean'))} {_pct_ci(ties.get('bootstrap_ci'))}"
            if lo["gain_resolved"]
            else "– (gain not resolved)"
        )
        lines.append(
            f"| {name} | {paper} | {_value_cell('mlm_loss', v['decay-cont'])} → {_value_cell('mlm_loss', v['decay-all'])} "
            f"| {_value_cell('mlm_loss', v['ties']) if 'ties' in v else '-'} | {kept} "
            f"| {fmt('mlm_accuracy', a['decay-cont']['mean'])} → {fmt('mlm_accuracy', a['decay-all']['mean'])} "
            f"| {fmt('mlm_accuracy', a['ties']['mean']) if 'ties' in a else '-'} |"
        )
    per = exp["per_language"]
    resolved = [lang for lang, e in per.items() if e["mlm_loss"]["gain_resolved"]]
    kept = [per[lang]["mlm_loss"]["retention"].get("ties", {}).get("mean") for lang in resolved]
    kept = [k for k in kept if k is not None]
    lines += [
        "",
        f"Per language (all {len(per)} in `results.json`): decay-all's MLM-loss gain over decay-cont is resolved "
        f"(both intervals exclude 0, in the gain's direction) for {len(resolved)} of {len(per)} languages"
        + (
            f"; among them the TIES merge keeps a median {_pct(float(np.median(kept)))} of it "
            f"(quartiles {_pct(float(np.percentile(kept, 25)))}-{_pct(float(np.percentile(kept, 75)))})."
            if kept
            else "."
        ),
        "",
    ]
    return lines


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def _pct_ci(ci: Sequence[float | None] | None) -> str:
    interval = interval_text(ci, lambda x: f"{100 * x:.0f}")
    return "[-]" if interval is None else f"{interval}%"


# ---------------------------------------------------------------------------------------------- plots
def plot_claims(claims: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Per metric, each claim's improvement of the first model over the second (right = first better)."""
    plt = pyplot()
    measured = [c for c in claims if "metrics" in c]
    metrics = list(METRIC_NAMES)
    fig, axes = plt.subplots(1, len(metrics), figsize=(14, 0.5 * len(measured) + 1.8), sharey=True)
    for ax, metric in zip(axes, metrics, strict=True):
        sign = -1 if metric == "mlm_loss" else 1
        scale = 1 if metric == "mlm_loss" else 100
        for y, c in enumerate(measured):
            d = c["metrics"][metric]["difference"]
            mean = sign * scale * d["mean"]
            color = PALETTE[2] if c["metrics"][metric]["verdict"] != "not resolved" else "0.4"
            for ci, lw in ((d["bootstrap_ci"], 1.0), (d["ci"], 4.0)):
                if ci[0] is not None:
                    lo, hi = sorted((sign * scale * ci[0], sign * scale * ci[1]))
                    ax.hlines(y, lo, hi, color=color, lw=lw, alpha=0.8)
            ax.plot(mean, y, "o", color=color, ms=5)
            for v in d["values"]:
                ax.plot(sign * scale * v, y, "|", color="k", ms=8, alpha=0.5)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{METRIC_NAMES[metric]}: {'−Δ (loss)' if sign < 0 else 'Δ, pp'}", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(
        range(len(measured)),
        [f"{c['id']}: {c['a']} vs {c['b']} ({c['group']})" for c in measured],
        fontsize=8,
    )
    axes[0].invert_yaxis()
    fig.suptitle(
        "Claims: right of 0 = the first model better. Thick: 95% t interval over seeds; thin: "
        "bootstrap over documents; ticks: seeds. Green: both exclude 0",
        fontsize=9,
    )
    return save_figure(fig, path)


def plot_groups(models: Mapping[str, Any], path: Path, title: str) -> Path:
    """Each model's mean per group (rows: by phase, by thirds of training text; columns: metrics)."""
    plt = pyplot()
    metrics = list(METRIC_NAMES)
    fig, axes = plt.subplots(2, len(metrics), figsize=(15, 8))
    names = list(models)
    for row, grouping in enumerate(("phase", "resource")):
        groups = list(dict.fromkeys(g for m in models.values() for g in m[grouping]))
        width = 0.8 / max(len(names), 1)
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            scale = 1 if metric == "mlm_loss" else 100
            for i, name in enumerate(names):
                xs, ys, lo, hi = [], [], [], []
                for j, g in enumerate(groups):
                    v = models[name][grouping].get(g, {}).get(metric)
                    if v is None:
                        continue
                    x = j + (i - (len(names) - 1) / 2) * width
                    xs.append(x)
                    ys.append(scale * v["mean"])
                    ci = v["ci"]
                    lo.append(scale * (v["mean"] - ci[0]) if ci[0] is not None else 0)
                    hi.append(scale * (ci[1] - v["mean"]) if ci[1] is not None else 0)
                    ax.plot(
                        [x] * len(v["values"]),
                        [scale * s for s in v["values"]],
                        ".",
                        color="k",
                        ms=2,
                        alpha=0.5,
                    )
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[lo, hi],
                    fmt="o",
                    ms=4,
                    capsize=2,
                    color=PALETTE[i % len(PALETTE)],
                    label=name if row == 0 and col == 0 else None,
                )
            ax.set_xticks(range(len(groups)), groups, fontsize=8)
            ax.set_ylabel(f"{METRIC_NAMES[metric]}{'' if metric == 'mlm_loss' else ', %'}")
            ax.grid(alpha=0.3, axis="y")
    fig.legend(loc="upper center", ncol=min(len(names), 6), fontsize=8)
    fig.suptitle(
        f"{title} per language group (top: phase that introduced the language; bottom: thirds by "
        "training text). Mean over seeds, 95% t interval, dots = seeds",
        fontsize=9,
        y=0.93,
    )
    return save_figure(fig, path)


def plot_decay(exp: Mapping[str, Any], path: Path) -> Path:
    """The decay-only languages: each model's paired difference from decay-cont (MLM loss, accuracy), on
    the group and on the paper's two examples."""
    plt = pyplot()
    panels = [(f"decay-only group ({len(exp['languages'])} languages)", exp["group"])]
    panels += [
        (PAPER_FIGURE_2[k][0], exp["per_language"][k]) for k in PAPER_FIGURE_2 if k in exp["per_language"]
    ]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 7), squeeze=False)
    models = [m for m in exp["models"] if m != "decay-cont"]
    for col, (title, block) in enumerate(panels):
        for row, metric in enumerate(("mlm_loss", "mlm_accuracy")):
            ax = axes[row][col]
            scale = 1 if metric == "mlm_loss" else 100
            diffs = [block[metric]["vs_cont"][m] for m in models]
            means = [scale * d["mean"] for d in diffs]
            err = [
                [scale * (d["mean"] - d["ci"][0]) if d["ci"][0] is not None else 0 for d in diffs],
                [scale * (d["ci"][1] - d["mean"]) if d["ci"][1] is not None else 0 for d in diffs],
            ]
            ax.bar(
                range(len(models)),
                means,
                yerr=err,
                capsize=3,
                color=[PALETTE[i % len(PALETTE)] for i in range(len(models))],
            )
            for i, d in enumerate(diffs):
                ax.plot([i] * len(d["values"]), [scale * v for v in d["values"]], ".", color="k", ms=4)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xticks(range(len(models)), models, rotation=30, fontsize=8)
            unit = "" if metric == "mlm_loss" else " (pp)"
            ax.set_ylabel(f"Δ {METRIC_NAMES[metric]} vs decay-cont{unit}")
            ax.grid(alpha=0.3, axis="y")
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(
        "Languages first seen in the decay (the paper's Figure 2 in miniature): each model against "
        "decay-cont, which never saw them. Mean over seeds, 95% t interval, dots = seeds",
        fontsize=9,
    )
    return save_figure(fig, path)


def plot_training(curves: Mapping[str, Sequence[Sequence[Sequence[float]]]], path: Path) -> Path:
    """Training loss over tokens per arm (the paper arm through decay-all), mean over seeds, smoothed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (arm, runs) in enumerate(curves.items()):
        n = min(len(r) for r in runs)
        x = np.array([p[0] for p in runs[0][:n]]) / 1e3
        y = np.mean([[p[1] for p in r[:n]] for r in runs], axis=0)
        k = max(1, n // 40)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(
            x[k - 1 :], smooth, color=PALETTE[i % len(PALETTE)], lw=1.6, label=f"{arm} ({len(runs)} seeds)"
        )
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("training MLM loss (its own mask rate)")
    ax.set_title("Training loss per arm, mean over seeds (a mask rate change moves the level)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- report
def write_report(analysis: Mapping[str, Any], report: Path, plots_dir: Path) -> Path:
    """Draw the plots into `plots_dir` and write `report` (Markdown)."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    models = analysis["models"]
    arms = {m: v for m, v in models.items() if m in ARM_MODELS}
    paper = {m: v for m, v in models.items() if m.startswith("paper/") and m != "paper/best-single"}
    plots = {
        "claims": plot_claims(analysis["claims"], plots_dir / "claims.png"),
        "arms_by_group": plot_groups(arms, plots_dir / "arms_by_group.png", "The arms"),
        "decay_models_by_group": plot_groups(
            paper, plots_dir / "decay_models_by_group.png", "The paper arm's models"
        ),
    }
    if analysis["decay_experiment"].get("group"):
        plots["decay_experiment"] = plot_decay(
            analysis["decay_experiment"], plots_dir / "decay_experiment.png"
        )
    if analysis["training"]:
        plots["training_loss"] = plot_training(analysis["training"], plots_dir / "training_loss.png")
    rel = {k: Path(v).relative_to(report.parent) for k, v in plots.items()}
    atomic_write_text(report, render(analysis, rel))
    return report


def _model(spec: Mapping[str, Any]) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "preset")
    return f"`{spec.get('preset')}`" + (f" ({rest})" if rest else "")


def render(a: Mapping[str, Any], plots: Mapping[str, Path]) -> str:
    s, ev, recipe = a["settings"], a["evaluation"], a["recipe"]
    seconds = sum(a.get("seconds", {}).values())
    run_tokens = sum(p["tokens"] for p in recipe["phases"])
    L = [
        "# The mmBERT recipe, ablated in miniature",
        "",
        f"Reproduce: `{a['command']}` (resumable: rerun the same command). Training and evaluation took "
        f"{seconds / 60:.1f} min in all. Every number below comes from `results.json` beside this file.",
        "",
        "## Set-up",
        "",
        f"- Model: preset {_model(recipe['model'])}, {run_tokens:,} training tokens per run, {s['seeds']} seeds "
        f"(seed k sets the initialization and the data order of every arm: comparisons are paired).",
        "- Phases of the recipe (the `paper` arm):",
        "",
        "| phase | tokens | languages | tau | mask rate | seq len |",
        "|---|---:|---|---:|---:|---:|",
        *(
            f"| {p['name']} | {p['tokens']:,} | {p['languages']} | {p['tau']} | {p['mask_rate']} | {p['seq_len']} |"
            for p in recipe["phases"]
        ),
        "",
        "- Arms: "
        + "; ".join(f"`{k}`: {v}" for k, v in recipe["arms"].items())
        + ". The paper arm's models: "
        "`pre-decay` (end of the phase before the decay), `decay-eng` / `decay-cont` / `decay-all` (its decay "
        "variants), `ties` (TIES merge of the three against pre-decay, density 0.5), `linear` (their mean), `ema` "
        "(an exponential average of decay-all's checkpoints, half-life one checkpoint), `best-single` (per seed, the "
        "variant with the lowest held-out MLM loss: chosen on the held-out set, an optimistic pick)"
        + (f"; best single variant per seed: {a['best_single']}." if a.get("best_single") else "."),
        f"- Evaluation: the held-out UDHR articles (never trained on) of {ev['languages']} languages, "
        f"{ev['documents']:,} documents (one article of one declaration). Groups by the phase that introduced "
        f"the language: {ev['phase_groups']}; by thirds of training tokens: {ev['resource_groups']}. Group "
        "scores are means over languages.",
        f"- Statistics: a claim compares model a with model b by the paired difference a − b, mean over seeds with "
        f"its 95% t interval ({s['seeds'] - 1} degrees of freedom), and a 95% paired bootstrap interval over the "
        f"documents ({ev['bootstrap_resamples']} resamples within each language, the same for every model). A "
        "difference is *resolved* when both intervals exclude zero. Where it is not, the seeds (at this scale) or "
        "the `--scale` (with these seeds) that would make the seed interval exclude zero are given, assuming the "
        "measured effect holds and, for the scale, that the seed-to-seed error falls as 1/sqrt(tokens): an "
        "estimate, not a measurement.",
        "",
        "## Claims",
        "",
        "Δ = first − second, mean over seeds [95% t interval]; MLM loss: lower is better; ✓: resolved in the paper's "
        "direction, ✗: resolved against it, –: not resolved.",
        "",
        *claims_table(a["claims"]),
        "",
    ]
    if "claims" in plots:
        L += [f"![claims]({plots['claims'].as_posix()})", ""]
    section = None
    for c in a["claims"]:
        if c["section"] != section:
            section = c["section"]
            L += [f"### {section}", ""]
        L += claim_sentence(c, s)
    L += ["## The decay experiment", ""]
    L += decay_tables(a["decay_experiment"], s)
    if "decay_experiment" in plots:
        L += [f"![decay experiment]({plots['decay_experiment'].as_posix()})", ""]
    L += [
        "## Every model by language group",
        "",
        "Mean over seeds [95% t interval across seeds]; the bootstrap intervals are in `results.json`.",
        "",
    ]
    for grouping, title in (
        ("phase", "by the phase that introduced the language"),
        ("resource", "by thirds of training text"),
    ):
        for metric in METRIC_NAMES:
            L += [
                f"**{METRIC_NAMES[metric]}, {title}**",
                "",
                *models_table(a["models"], grouping, metric),
                "",
            ]
    for key in ("arms_by_group", "decay_models_by_group"):
        if key in plots:
            L += [f"![{key.replace('_', ' ')}]({plots[key].as_posix()})", ""]
    if "training_loss" in plots:
        L += [f"![training loss]({plots['training_loss'].as_posix()})", ""]
    return "\n".join(L)
