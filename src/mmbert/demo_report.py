"""The demo's plots and `report.md`: training curves, sampling distributions, evaluation, decay experiment.

Everything here reads what the other steps wrote (`metrics.jsonl` of each run, the evaluation results,
the prepared data's token counts) and draws PNGs with matplotlib's Agg backend, so a report can be
rebuilt from a finished (or half-finished) demo directory without training anything.

- `loss.png`: the MLM loss over tokens, the shared phases then each decay variant, phase boundaries
  marked (the loss jumps where the mask rate drops: fewer, easier masked tokens);
- `schedule.png`: learning rate, mask rate and tau over tokens;
- `sampling.png`: each phase's (and decay variant's) language sampling distribution, `p ∝ n ** tau`;
- `accuracy_by_language.png`: per-language MLM accuracy and retrieval of the final model, grouped by
  the phase that introduced the language;
- `models_by_group.png`: every evaluated model's group means;
- `decay_experiment.png`: the languages seen only in the all-language decay, per model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbert.data.mixture import phase_mixture
from mmbert.data.sampler import store_counts
from mmbert.data.shards import TokenStore
from mmbert.demo_layout import FILL_MASK_ARTICLE, QUICK_SCALE, Layout
from mmbert.evaluate import recipe_groups, variant_languages
from mmbert.experiment import HIGHLIGHT, phase_summary
from mmbert.io import atomic_write_text
from mmbert.metrics import read_metrics
from mmbert.plots import pyplot, save_figure
from mmbert.recipe import Recipe
from mmbert.run_layout import RunLayout
from mmbert.stats import with_interval

# One color per run / model, stable across plots.
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _smooth(values: Sequence[float], phases: Sequence[str], alpha: float = 0.2) -> np.ndarray:
    """Exponential moving average, restarted at each phase change (the loss level jumps there)."""
    out, acc = [], None
    for i, v in enumerate(values):
        acc = v if acc is None or (i and phases[i] != phases[i - 1]) else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return np.array(out)


def _boundaries(ax: Any, bounds: Sequence[tuple[str, int]], top: bool = True) -> None:
    for name, start in bounds:
        if start > 0:
            ax.axvline(start, color="0.5", ls="--", lw=0.8)
        if top:
            ax.annotate(
                name,
                (start, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=8,
                color="0.3",
            )


# ---------------------------------------------------------------------------------------------- training
def plot_loss(runs: Mapping[str, list[dict]], bounds: Sequence[tuple[str, int]], path: Path) -> Path:
    """Loss over tokens: raw (faint) and smoothed, one color per run (shared phases, then each variant)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (name, records) in enumerate(runs.items()):
        recs = [r for r in records if r.get("loss") is not None and math.isfinite(r["loss"])]
        if not recs:
            continue
        x = np.array([r["tokens"] for r in recs]) / 1e3
        y = np.array([r["loss"] for r in recs])
        color = PALETTE[i % len(PALETTE)]
        ax.plot(x, y, color=color, alpha=0.25, lw=0.8)
        marker = "o" if len(recs) < 30 else None  # a short run (a decay variant) stays visible
        ax.plot(
            x, _smooth(y, [r["phase"] for r in recs]), color=color, lw=1.8, marker=marker, ms=3, label=name
        )
    _boundaries(ax, [(n, s / 1e3) for n, s in bounds])
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("MLM loss (masked tokens)")
    ax.set_title("MLM loss over tokens (raw faint, smoothed bold); dashed: phase boundaries")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_schedule(runs: Mapping[str, list[dict]], bounds: Sequence[tuple[str, int]], path: Path) -> Path:
    """Learning rate, mask rate and tau over tokens, stacked."""
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(9, 6.5), sharex=True)
    keys = (("lr", "learning rate"), ("mask_rate", "mask rate"), ("tau", "tau (sampling exponent)"))
    for ax, (key, label) in zip(axes, keys, strict=True):
        for i, (name, records) in enumerate(runs.items()):
            recs = [r for r in records if r.get(key) is not None]
            if not recs:
                continue
            color = PALETTE[i % len(PALETTE)]
            if key == "lr":  # the LR of a step is taken at its last token
                ax.plot(
                    [r["tokens"] / 1e3 for r in recs], [r[key] for r in recs], color=color, lw=1.6, label=name
                )
            else:  # mask rate and tau hold over the step: from its first token to its last
                x = [(r["tokens"] - r.get("batch_tokens", 0)) / 1e3 for r in recs] + [
                    recs[-1]["tokens"] / 1e3
                ]
                ax.step(
                    x, [r[key] for r in recs] + [recs[-1][key]], where="post", color=color, lw=1.6, label=name
                )
        _boundaries(ax, [(n, s / 1e3) for n, s in bounds], top=ax is axes[0])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("training tokens (thousands)")
    fig.suptitle("Schedules over tokens")
    return save_figure(fig, path)


def plot_sampling(
    shares: Mapping[str, Mapping[str, float]], path: Path, highlight: Sequence[str] = ()
) -> Path:
    """Each phase's language distribution: shares by rank (log-log), and a few named languages' shares."""
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for i, (name, dist) in enumerate(shares.items()):
        values = sorted(dist.values(), reverse=True)
        eng = sum(v for k, v in dist.items() if k.startswith("eng"))
        ax.plot(
            np.arange(1, len(values) + 1),
            values,
            color=PALETTE[i % len(PALETTE)],
            lw=1.8,
            label=f"{name}: {len(values)} languages, English {eng:.0%}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("language rank")
    ax.set_ylabel("share of the phase's tokens")
    ax.set_title("Language sampling, p ∝ n^tau (flatter as tau drops)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    langs = [h for h in highlight if any(h in d for d in shares.values())]
    width = 0.8 / max(len(shares), 1)
    for i, (name, dist) in enumerate(shares.items()):
        bx.bar(
            np.arange(len(langs)) + i * width,
            [100 * dist.get(k, 0.0) for k in langs],
            width,
            color=PALETTE[i % len(PALETTE)],
            label=name,
        )
    bx.set_xticks(np.arange(len(langs)) + 0.4 - width / 2, langs, rotation=30, fontsize=8)
    bx.set_yscale("symlog", linthresh=0.1)
    bx.set_ylabel("share of tokens, % (symlog)")
    bx.set_title("Some languages' shares per phase")
    bx.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- evaluation
def _group_values(result: Mapping[str, Any], group: str, key: str) -> list[float]:
    return [s[key] for s in result["languages"].values() if s["group"] == group and s[key] is not None]


def plot_accuracy_by_language(
    result: Mapping[str, Any], groups: Sequence[str], title: str, path: Path
) -> Path:
    """One dot per language (MLM accuracy, retrieval), in columns by the phase that introduced it."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    rng = np.random.default_rng(0)
    groups = [g for g in groups if _group_values(result, g, "mlm_accuracy")]
    panels = (
        ("mlm_accuracy", "MLM accuracy (15% masking)"),
        ("retrieval_x2en", "retrieval acc@1, language → English"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, g in enumerate(groups):
            vals = 100 * np.array(_group_values(result, g, key))
            if not len(vals):
                continue
            ax.scatter(
                i + rng.uniform(-0.25, 0.25, len(vals)), vals, s=8, alpha=0.5, color=PALETTE[i % len(PALETTE)]
            )
            ax.hlines(vals.mean(), i - 0.35, i + 0.35, color="k", lw=2)
            ax.annotate(f"{vals.mean():.1f}", (i + 0.37, vals.mean()), fontsize=8, va="center")
        ax.set_xticks(
            range(len(groups)), [f"{g}\n({len(_group_values(result, g, key))})" for g in groups], fontsize=8
        )
        ax.set_ylabel(f"{label}, %")
        ax.grid(alpha=0.3, axis="y")
    axes[1].axhline(100 * _chance(result), color="0.5", ls=":", lw=1)
    axes[1].annotate("chance", (len(groups) - 0.5, 100 * _chance(result)), fontsize=8, color="0.4")
    fig.suptitle(f"{title}: per language, grouped by the phase that introduced it (black: group mean)")
    return save_figure(fig, path)


def _chance(result: Mapping[str, Any]) -> float:
    values = [g["retrieval_chance"] for g in result["groups"].values() if g.get("retrieval_chance")]
    return float(np.mean(values)) if values else 0.0


def plot_models_by_group(evals: Mapping[str, Mapping[str, Any]], groups: Sequence[str], path: Path) -> Path:
    """Group means of MLM accuracy and retrieval for every evaluated model."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(len(evals), 1)
    for ax, key, label in (
        (axes[0], "mlm_accuracy", "MLM accuracy, %"),
        (axes[1], "retrieval", "retrieval acc@1 (both directions), %"),
    ):
        for i, (name, result) in enumerate(evals.items()):
            vals = [result["groups"].get(g, {}).get(key) for g in groups]
            ax.bar(
                np.arange(len(groups)) + i * width,
                [100 * v if v is not None else 0 for v in vals],
                width,
                color=PALETTE[i % len(PALETTE)],
                label=name,
            )
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[1].axhline(100 * _chance(next(iter(evals.values()))), color="0.5", ls=":", lw=1)
    axes[0].legend(fontsize=8)
    fig.suptitle("Group means per model (groups: the phase that introduced the language)")
    return save_figure(fig, path)


def plot_decay_experiment(experiment: Mapping[str, Any], path: Path) -> Path:
    """The decay-only languages: MLM accuracy and retrieval per model; hatched = never saw them."""
    plt = pyplot()
    rows = experiment["models"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [r["model"] for r in rows]
    for ax, key, label in (
        (axes[0], "mlm_accuracy", "MLM accuracy, %"),
        (axes[1], "retrieval", "retrieval acc@1, %"),
    ):
        vals = [100 * r[key] if r[key] is not None else 0 for r in rows]
        bars = ax.bar(range(len(rows)), vals, color=[PALETTE[i % len(PALETTE)] for i in range(len(rows))])
        for bar, r, v in zip(bars, rows, vals, strict=True):
            if not r["saw_languages"]:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
            ax.annotate(
                f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8
            )
        ax.set_xticks(range(len(rows)), names, rotation=20, fontsize=8)
        ax.set_ylim(0, max(1.0, max(vals) * 1.15))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    if experiment.get("retrieval_chance"):
        axes[1].axhline(100 * experiment["retrieval_chance"], color="0.5", ls=":", lw=1)
    fig.suptitle(
        f"Decay-phase experiment: {experiment['languages']} languages held out of pre-/mid-training "
        "(hatched: the model never saw them)"
    )
    return save_figure(fig, path)


def decay_experiment(
    evals: Mapping[str, Mapping[str, Any]], group: str, saw: Mapping[str, bool]
) -> dict[str, Any]:
    """The decay-only group's scores for every model, and whether the model trained on those languages."""
    rows = []
    for name, result in evals.items():
        g = result["groups"].get(group)
        if g is None:
            continue
        rows.append(
            {
                "model": name,
                "saw_languages": bool(saw.get(name, False)),
                "mlm_accuracy": g["mlm_accuracy"],
                "mlm_loss": g["mlm_loss"],
                "retrieval_x2en": g["retrieval_x2en"],
                "retrieval_en2x": g["retrieval_en2x"],
                "retrieval": g["retrieval"],
                "ci": g.get("ci", {}),
            }
        )
    first = next(iter(evals.values()))["groups"].get(group, {})
    return {
        "group": group,
        "languages": first.get("languages", 0),
        "retrieval_chance": first.get("retrieval_chance"),
        "models": rows,
    }


# ---------------------------------------------------------------------------------------------- markdown
def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ci(stats: Mapping[str, Any], key: str, percent: bool = True) -> str:
    """`value [low, high]` from a group's summary (its 95% bootstrap interval, when it has one)."""
    value, ci = stats.get(key), (stats.get("ci") or {}).get(key)
    return with_interval(value, ci, pct if percent else (lambda x: f"{x:.3f}"))


def models_table(evals: Mapping[str, Mapping[str, Any]], groups: Sequence[str], key: str) -> str:
    """One row per model, one metric (`key`) per group with its 95% bootstrap interval."""
    lines = ["| model | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    for name, result in evals.items():
        cells = [
            _ci(result["groups"][g], key, key != "mlm_loss") if g in result["groups"] else "-" for g in groups
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def experiment_table(experiment: Mapping[str, Any]) -> str:
    lines = [
        "| model | trained on these languages | MLM acc % | MLM loss | retrieval % |",
        "|---|---|---:|---:|---:|",
    ]
    for r in experiment["models"]:
        lines.append(
            f"| {r['model']} | {'yes' if r['saw_languages'] else 'no'} | {_ci(r, 'mlm_accuracy')} "
            f"| {_ci(r, 'mlm_loss', False)} | {_ci(r, 'retrieval')} |"
        )
    return "\n".join(lines)


def per_language_lines(per_language: Mapping[str, Mapping[str, Mapping[str, float | None]]]) -> list[str]:
    """The paper's example languages, one row per model (empty when none is among the decay-only ones)."""
    if not per_language:
        return []
    lines = ["| language | model | MLM acc % | retrieval x→en % | en→x % |", "|---|---|---:|---:|---:|"]
    for lang, models in per_language.items():
        for name, v in models.items():
            lines.append(
                f"| {lang} | {name} | {pct(v['mlm_accuracy'])} | {pct(v['retrieval_x2en'])} | {pct(v['retrieval_en2x'])} |"
            )
    return ["Individually (a single declaration each: noisy):", "", *lines, ""]


# ---------------------------------------------------------------------------------------------- the demo
def _run_summary(records: list[dict]) -> dict[str, Any]:
    """Per phase of one run: steps, tokens at its end, mean loss of its last 5 steps, tokens per second."""
    out: dict[str, Any] = {}
    for r in records:
        p = out.setdefault(r["phase"], {"steps": 0, "losses": [], "tokens": 0, "seconds": 0.0})
        p["steps"] += 1
        p["end_tokens"] = r["tokens"]
        if r.get("loss") is not None and math.isfinite(r["loss"]):
            p["losses"].append(r["loss"])
        if r.get("step_s"):
            p["tokens"] += r.get("batch_tokens", 0)
            p["seconds"] += r["step_s"]
    for p in out.values():
        losses, tokens, seconds = p.pop("losses"), p.pop("tokens"), p.pop("seconds")
        p["final_loss"] = float(np.mean(losses[-5:])) if losses else None
        # total tokens over total step time (a mean of per-step rates overweights the fast steps)
        p["tokens_per_s"] = tokens / seconds if seconds else None
    return out


def sampling_shares(data_dir: Path, recipe: Recipe) -> dict[str, dict[str, float]]:
    """Target language shares of each phase before the decay and of each decay variant, from the data."""
    counts = store_counts(TokenStore(data_dir))
    out = {}
    for i, phase in enumerate(recipe.phases[:-1]):
        out[phase.name] = phase_mixture(phase, counts, i).language_shares()
    last = recipe.phases[-1]
    for v in recipe.variant_names():
        out[f"{last.name}-{v}"] = phase_mixture(
            last.with_variant(v), counts, len(recipe.phases) - 1
        ).language_shares()
    return out


def write_demo_report(layout: Layout, recipe: Recipe, state: Mapping[str, Any]) -> Path:
    """`metrics.json`, the plots and `report.md` of a demo directory, whose `state` (`demo_state.json`)
    holds the settings and the finished steps."""
    layout.plots.mkdir(parents=True, exist_ok=True)
    last = recipe.phases[-1]
    shared = " + ".join(p.name for p in recipe.phases[:-1]) + " (shared)"
    runs = {shared: read_metrics(RunLayout(layout.run).metrics)}
    for v in recipe.variant_names():
        runs[f"{last.name}-{v}"] = read_metrics(RunLayout(layout.run).variant(v).metrics)
    bounds = list(zip([p.name for p in recipe.phases], recipe.phase_starts(), strict=True))
    plots = {
        "loss": plot_loss(runs, bounds, layout.plots / "loss.png"),
        "schedule": plot_schedule(runs, bounds, layout.plots / "schedule.png"),
    }
    shares = sampling_shares(layout.data, recipe)
    plots["sampling"] = plot_sampling(shares, layout.plots / "sampling.png", HIGHLIGHT)

    evals = {}
    for name in layout.model_dirs(recipe):
        path = layout.eval_result(name)
        if path.exists():
            evals[name] = json.loads(path.read_text())
    final_name = list(evals)[-1]
    langs = sorted(evals[final_name]["languages"])
    _, order = recipe_groups(recipe, langs)
    order = [g for g in order if any(g in r["groups"] for r in evals.values())]
    plots["accuracy_by_language"] = plot_accuracy_by_language(
        evals[final_name], order, final_name, layout.plots / "accuracy_by_language.png"
    )
    plots["models_by_group"] = plot_models_by_group(evals, order, layout.plots / "models_by_group.png")

    decay_group = last.name
    decay_langs = {lang for lang, s in evals[final_name]["languages"].items() if s["group"] == decay_group}
    seen = variant_languages(recipe, langs)
    saw = {f"{last.name}-{v}": bool(decay_langs) and decay_langs <= seen[v] for v in recipe.variant_names()}
    saw["merge (TIES)"] = any(saw.values())
    experiment = decay_experiment(evals, decay_group, saw)
    experiment["variants_that_saw_them"] = [v for v in recipe.variant_names() if saw[f"{last.name}-{v}"]]
    # The paper's examples (Faroese, Tigrinya) first, then the rest alphabetically.
    experiment["examples"] = sorted(decay_langs, key=lambda k: (k not in HIGHLIGHT, k))[:12]
    experiment["per_language"] = {
        lang: {
            name: {k: r["languages"][lang][k] for k in ("mlm_accuracy", "retrieval_x2en", "retrieval_en2x")}
            for name, r in evals.items()
            if lang in r["languages"]
        }
        for lang in HIGHLIGHT
        if lang in decay_langs
    }
    if experiment["models"]:
        plots["decay_experiment"] = plot_decay_experiment(experiment, layout.plots / "decay_experiment.png")

    fill = json.loads(layout.fill_mask.read_text()) if layout.fill_mask.exists() else []
    merge_record = {}
    if (layout.merged / "merge_config.json").exists():
        merge_record = json.loads((layout.merged / "merge_config.json").read_text())
    metrics = {
        "settings": state["settings"],
        "step_seconds": {k: v["seconds"] for k, v in state["steps"].items()},
        "recipe": {
            "phases": [phase_summary(p) for p in recipe.phases],
            "variants": {v: recipe.phases[-1].with_variant(v).languages for v in recipe.variant_names()},
        },
        "training": {name: _run_summary(records) for name, records in runs.items()},
        "sampling": {
            name: {"languages": len(d), "top": dict(sorted(d.items(), key=lambda kv: -kv[1])[:10])}
            for name, d in shares.items()
        },
        "evaluation": {
            name: {"model": r["model"], "groups": r["groups"], "settings": r["settings"]}
            for name, r in evals.items()
        },
        "decay_experiment": experiment,
        "fill_mask": fill,
        "merge": {k: merge_record.get(k) for k in ("method", "density", "weights") if k in merge_record},
        "plots": {k: str(v.relative_to(layout.out)) for k, v in plots.items()},
    }
    atomic_write_text(layout.metrics, json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(layout.report, render_report(metrics, evals, order, layout, recipe, FILL_MASK_ARTICLE))
    return layout.report


def render_report(
    metrics: Mapping[str, Any],
    evals: Mapping[str, Any],
    order: Sequence[str],
    layout: Layout,
    recipe: Recipe,
    article: int,
) -> str:
    s = metrics["settings"]
    exp = metrics["decay_experiment"]
    es = next(iter(evals.values()))["settings"]
    default_scale = QUICK_SCALE if s.get("quick") else 1.0
    opts = (" --quick" if s.get("quick") else "") + (
        f" --scale {s['scale']:g}" if s["scale"] != default_scale else ""
    )
    command = f"mmbert demo --out {layout.out}{opts}"
    total = sum(metrics["step_seconds"].values())
    L = [
        "# mmbert demo report",
        "",
        f"Reproduce: `{command}` (rerunning continues where it stopped). Steps took {total / 60:.1f} min in all: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in metrics["step_seconds"].items())
        + ".",
        "",
        "## Recipe",
        "",
        "| phase | tokens | languages | tau | mask rate | seq len | RoPE theta |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for p in metrics["recipe"]["phases"]:
        L.append(
            f"| {p['name']} | {p['tokens']:,} | {p['languages']} | {p['tau']} | {p['mask_rate']} | "
            f"{p['seq_len']} | {p['rope_theta']:g} |"
        )
    L += [
        "",
        f"Decay variants (each from the end-of-{recipe.phases[-2].name} checkpoint): "
        + "; ".join(f"`{v}`: {langs}" for v, langs in metrics["recipe"]["variants"].items())
        + ".",
        "",
    ]
    L += ["## Training", "", "![loss](plots/loss.png)", "", "![schedules](plots/schedule.png)", ""]
    L += [
        "| run | phase | steps | tokens at end | loss (last 5 steps) | tokens/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for run, phases in metrics["training"].items():
        for ph, t in phases.items():
            loss = "-" if t["final_loss"] is None else f"{t['final_loss']:.3f}"
            rate = "-" if t["tokens_per_s"] is None else f"{t['tokens_per_s']:,.0f}"
            L.append(f"| {run} | {ph} | {t['steps']} | {t['end_tokens']:,} | {loss} | {rate} |")
    L += [
        "",
        "The loss is over the masked tokens only and the mask rate changes at each phase boundary "
        "(and the language mix with it), so losses of different phases are not directly comparable.",
        "",
    ]
    L += ["## Language sampling", "", "![sampling](plots/sampling.png)", ""]
    for name, d in metrics["sampling"].items():
        top = ", ".join(f"{k} {v:.1%}" for k, v in list(d["top"].items())[:5])
        L.append(f"- {name}: {d['languages']} languages; largest shares {top}")
    L += [
        "",
        "## Evaluation",
        "",
        f"Held-out UDHR articles {es['heldout_articles']} (never trained on) of {es['declarations']} declarations, "
        f"each text cut to {es['max_length']} tokens; languages grouped by the recipe phase that introduced them. "
        f"MLM accuracy at a fixed 15% masking (seed 0, {es['masked_tokens']:,} masked tokens); retrieval = "
        "accuracy@1 of aligned held-out paragraphs to and from English (mean of both directions). In brackets: "
        "the 95% interval of a bootstrap over the held-out documents (resampled within each language); one "
        "training seed, so the variation between training runs is not in it (`mmbert ablate` measures that).",
        "",
        "MLM accuracy, %:",
        "",
        models_table(evals, order, "mlm_accuracy"),
        "",
        "MLM loss:",
        "",
        models_table(evals, order, "mlm_loss"),
        "",
        "Retrieval accuracy@1, %:",
        "",
        models_table(evals, order, "retrieval"),
        "",
        "![models by group](plots/models_by_group.png)",
        "",
        "![accuracy by language](plots/accuracy_by_language.png)",
        "",
    ]
    chance = exp.get("retrieval_chance")
    L += [
        "## The decay-phase experiment",
        "",
        f"{exp['languages']} languages (e.g. {', '.join(exp['examples'][:8])}) are held out of "
        + " and ".join(p.name for p in recipe.phases[:-1])
        + f" and first seen in the decay phase, only by the variant(s) {', '.join(exp['variants_that_saw_them']) or 'none'}. "
        "mmBERT reports that such languages are learned fast in the short decay (Tigrinya, Faroese). "
        "Measured here, as it came out:",
        "",
        experiment_table(exp),
        "",
        *per_language_lines(exp.get("per_language", {})),
        f"Retrieval chance level: {pct(chance)}%. Reproduce: `{command}`, or for one model "
        f"`mmbert evaluate {layout.model} --recipe {layout.recipe}`.",
        "",
    ]
    if "decay_experiment" in metrics["plots"]:
        L += ["![decay experiment](plots/decay_experiment.png)", ""]
    if metrics["fill_mask"]:
        L += [
            "## Fill-mask with the final model",
            "",
            f"First sentence of held-out article {article}: one whole word masked, all of its tokens (of the "
            "words of 4+ letters, the one with the fewest tokens, then the longest); the top 5 fillings from a "
            "beam over its tokens, left to right, each with the product of its tokens' probabilities:",
            "",
            "| language | masked text | answer (tokens) | rank | top 5 |",
            "|---|---|---|---:|---|",
        ]
        for ex in metrics["fill_mask"]:
            preds = ", ".join(f"`{p['token']}` {p['score']:.2g}" for p in ex["predictions"])
            text = ex["text"].replace("|", "\\|")
            L.append(
                f"| {ex['lang']} | {text} | `{ex['answer']}` ({ex['tokens']}) | {ex['rank'] or '-'} | {preds} |"
            )
        L.append("")
    merge = metrics.get("merge") or {}
    L += [
        "## Files",
        "",
        f"- `{layout.model}`: the final model (TIES merge{', density ' + str(merge['density']) if merge.get('density') else ''}"
        " of the decay variants), HF format with its tokenizer",
        f"- `{layout.run}`: the training run (`metrics.jsonl`, checkpoints, per-phase exports; variants in `variants/`)",
        f"- `{layout.eval_dir}`: one JSON + Markdown evaluation per model; `metrics.json`: everything in this report",
        "",
    ]
    return "\n".join(L)
