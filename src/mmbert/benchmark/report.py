"""`OUT/report.md`: a benchmark's score beside the paper's, and how this run's protocol differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmbert.io import atomic_write_text

PAPER_MODELS = ("mmBERT-small", "mmBERT-base", "XLM-R base")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def score_text(score: dict[str, Any]) -> str:
    """`84.1 [82.0, 86.2] (3 seeds)`, or `84.1 (1 seed)`."""
    low, high = score["ci"]
    n = len(score["values"])
    ci = f" [{low:.1f}, {high:.1f}]" if low is not None else ""
    return f"{score['mean']:.1f}{ci} ({n} seed{'s' if n != 1 else ''})"


def differences(result: dict[str, Any]) -> list[str]:
    """Where this run's protocol is not the paper's (or is not known to be)."""
    s = result["settings"]
    v = s["values"]
    out = []
    if result["kind"] == "mteb":
        out.append(
            "The paper's MTEB figures are for models fine-tuned on MS MARCO with Sentence Transformers before "
            "MTEB; this run embeds with the given model as it is (mean pooling)."
        )
        if result["data"]["source"] != "hf (the settings' dataset names)":
            out.append("A local STS task from --data, not an MTEB task: no paper figure applies.")
        return out
    out.append(
        "mmBERT's fine-tuning settings are unpublished (a fork of izhx/nlu-evals); these are the settings "
        f"file's: lr {v['lr']}, {v['epochs']} epochs, batch {v['batch_size']}, max length {v['max_length']}, "
        f"seeds {v['seeds']}, checkpoint `{v['select']}`."
    )
    if v["select"] == "best" and v["dev"] == v["eval"]:
        out.append(
            "The checkpoint is picked on the reported split (`select: best` with dev = eval): optimistic."
        )
    if v.get("protocol"):
        out.append(
            f"Protocol `{v['protocol']}` (the paper's XTREME figures follow zero-shot transfer from English)."
        )
    if result["paper"]:
        out.append(f"The paper's table does not name its metric; this run reports `{result['metric']}`.")
    if v.get("max_steps"):
        out.append(f"`max_steps={v['max_steps']}` cuts training short: not the protocol, a smoke run.")
    if s["overrides"]:
        out.append(f"Overrides of the versioned settings: {', '.join(f'`{o}`' for o in s['overrides'])}.")
    if not result["data"]["source"].startswith("hf"):
        out.append(f"Data from local files ({result['data']['source']}; sha256 per file in result.json).")
    if result["kind"] == "qa":
        if v.get("answer_normalization", "squad") == "mlqa":
            out.append(
                "EM/F1 use MLQA's script's normalization per context language (as XTREME scores MLQA)."
            )
        else:
            out.append(
                "EM/F1 use SQuAD v1.1's English normalization for every language (as XTREME scores "
                "XQuAD and TyDiQA-GoldP)."
            )
    if result["kind"] == "token":
        out.append(
            f"Words tokenized one by one, prefix space {'on' if v.get('prefix_space', True) else 'off'}."
        )
    return out


def write_report(path: Path, result: dict[str, Any]) -> None:
    s = result["settings"]
    metric, score, paper = result["metric"], result["score"], result["paper"]
    lines = [
        f"# `mmbert benchmark {result['task']}`",
        "",
        f"Model: `{result['model']['path']}` (sha256 {result['model']['sha256'][:16]}...). "
        f"Settings: `{Path(s['file']).name}` version {s['version']}"
        + (f", protocol `{result['protocol']}`" if result.get("protocol") else "")
        + (
            f", learning rate {result['lr']:g} (the sweep's best mean dev score"
            + ("; dev is the reported split" if s["values"]["dev"] == s["values"]["eval"] else "")
            + ")"
            if isinstance(s["values"].get("lr"), list)
            else ""
        )
        + f". Device {result['device']}, {result['seconds']:.0f} s.",
        "",
        f"| task | metric | this run | {' | '.join(PAPER_MODELS)} |",
        "|---|---|---|" + "---|" * len(PAPER_MODELS),
        f"| {result['task']} | {metric} | {score_text(score)} | "
        + " | ".join(_num(paper.get(m)) for m in PAPER_MODELS)
        + " |",
    ]
    if paper:
        lines += ["", f"Paper's figures: {paper['table']} (arXiv 2509.06888)."]
    if len(score["groups"]) > 1:
        lines += ["", f"Per language ({metric}, mean over seeds):", "", "| " + " | ".join(score["groups"]) + " |",
                  "|" + "---|" * len(score["groups"]),
                  "| " + " | ".join(f"{x:.1f}" for x in score["groups"].values()) + " |"]  # fmt: skip
    lines += ["", "## Where this protocol differs from the paper's", ""]
    lines += [f"- {d}" for d in differences(result)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_family_report(path: Path, summary: dict[str, Any]) -> None:
    """A family's table: each task beside the paper's figures, and the averages."""
    lines = [
        f"# `mmbert benchmark {summary['family']}`",
        "",
        f"| task | metric | this run | {' | '.join(PAPER_MODELS)} |",
        "|---|---|---|" + "---|" * len(PAPER_MODELS),
    ]
    for task, t in summary["tasks"].items():
        paper = t["paper"]
        lines.append(
            f"| {task} | {t['metric']} | {score_text(t)} | "
            + " | ".join(_num(paper.get(m)) for m in PAPER_MODELS)
            + " |"
        )
    same = summary["paper_average_same_tasks"]
    lines.append(
        f"| average | | {summary['average']:.1f} | "
        + " | ".join(_num(same.get(m)) for m in PAPER_MODELS)
        + " |"
    )
    published = summary["paper_average_published"]
    mismatch = [
        m
        for m in PAPER_MODELS
        if None not in (same.get(m), published.get(m)) and abs(same[m] - published[m]) > 0.1
    ]
    lines += [
        "",
        "The paper's averages in the last row are over the same tasks, from its per-task figures; its published "
        "averages are "
        + ", ".join(f"{m} {_num(published.get(m))}" for m in PAPER_MODELS)
        + "."
        + (" They include UDPOS, which this command does not run." if summary["family"] == "xtreme" else "")
        + (
            f" For {', '.join(mismatch)} the published average is not the mean of its per-task figures "
            "(the paper does not say how it averaged)."
            if mismatch and summary["family"] != "xtreme"
            else ""
        ),
        "",
        "Each task's folder has its result.json and a report.md that says where its protocol differs from the paper's.",
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
