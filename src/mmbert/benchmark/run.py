"""`mmbert benchmark TASK`: fine-tune and score a model under a written-down protocol.

One run = the task's settings (`settings.py`) + its data (`data.py`) + for each learning rate of the
sweep and each seed: a fresh model from `--model` with the kind's head (`kinds.py`), trained by
`mmbert.finetune.fit`, scored on every evaluation config. The task score of a run is the mean over
languages (configs, or TyDiQA's languages) of the settings' metric; across seeds it is a mean with a 95%
t interval (`mmbert.stats.seed_interval`). With a sweep, the learning rate with the best mean is
reported, and every run is kept in the result. `OUT/result.json` (atomic) records the settings, the
model (path + sha256 of its weights and config), the data read (files + sha256, or dataset, config,
split, revision and fingerprint) and every seed's scores; `OUT/report.md` puts the score beside the
paper's figures (`paper.py`) and lists where this run's protocol differs from the paper's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mmbert import __version__
from mmbert.benchmark.data import DataSource, Row, load_split
from mmbert.benchmark.kinds import KINDS, Encoded
from mmbert.benchmark.paper import paper_figures
from mmbert.benchmark.report import PAPER_MODELS, write_family_report, write_report
from mmbert.benchmark.settings import FAMILIES, LOWER_IS_BETTER, Settings, SettingsError, load_settings
from mmbert.config import read_hf_config
from mmbert.finetune import FitSettings, fit, resolve_model
from mmbert.hf import check_loaded_tokenizer
from mmbert.inference import resolve_device
from mmbert.io import atomic_write_text, check_output
from mmbert.stats import seed_interval
from mmbert.tokenizer import load_tokenizer
from mmbert.weights import find_weights

logger = logging.getLogger(__name__)

RESULT = "result.json"
REPORT = "report.md"
SUMMARY = "summary.json"  # a family run's (glue, xtreme): every task's score and the average


@dataclass
class BenchmarkOptions:
    """What `mmbert benchmark` runs (one field per command-line option)."""

    # Each field's comment is also its option's help (`mmbert benchmark --help`).
    task: str  # the task (e.g. cola, xnli, tydiqa, wikiann, mteb) or a family (glue, xtreme)
    model: str  # an HF-format model directory or a Hub name
    data: str | None = None  # a folder (CONFIG/SPLIT.jsonl|...), a file or hf:NAME (default: the settings')
    out: str | None = None  # directory for result.json and report.md (default: benchmarks/TASK)
    settings: str | None = None  # a settings file (default: the built-in one that defines TASK)
    overrides: tuple[str, ...] = ()  # key=value changes to the task's resolved settings
    device: str | None = None
    progress: bool = True
    overwrite: bool = False


@dataclass
class BenchmarkResult:
    out: Path
    task: str
    metric: str
    score: dict[str, Any]  # mean, sd, ci, values (x 100)
    lr: float | None
    paper: dict[str, float | None]
    settings: Settings
    runs: list[dict[str, Any]] = field(default_factory=list)


def model_fingerprint(directory: str | Path) -> dict[str, Any]:
    """The model as read: its directory and the sha256 of its config and weight files."""
    directory = Path(directory)
    h = hashlib.sha256()
    files = [directory / "config.json", *find_weights(directory).files]
    for path in files:
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return {"path": str(directory), "sha256": h.hexdigest(), "files": [p.name for p in files]}


def run_benchmark(options: BenchmarkOptions) -> BenchmarkResult:
    """One task under its settings (module docstring); writes OUT/result.json and OUT/report.md."""
    settings = load_settings(options.task, options.settings, tuple(options.overrides))
    out = Path(options.out or Path("benchmarks") / options.task)
    inputs = tuple(
        x for x in (options.model, options.data, options.settings) if x and not x.startswith("hf:")
    )
    check_output(out, inputs, is_own=lambda d: (d / RESULT).is_file(), overwrite=options.overwrite)
    device = resolve_device(options.device)
    model_dir = resolve_model(options.model)
    source = DataSource(options.data)
    t0 = time.perf_counter()
    if settings.kind == "mteb":
        from mmbert.benchmark.mteb_tasks import run_mteb  # imports mteb (optional, seconds)

        runs, data_record, metric = run_mteb(model_dir, settings, source, device)
    else:
        runs, data_record, metric = _finetune_runs(model_dir, settings, source, device, options.progress)
    chosen_lr, chosen = _choose(runs, metric)
    stats = seed_interval([r["score"] for r in chosen])
    score = {"mean": 100 * stats.mean, "sd": None if stats.sd is None else 100 * stats.sd,
             "ci": [None if x is None else 100 * x for x in (stats.interval.low, stats.interval.high)],
             "values": [100 * r["score"] for r in chosen], "seeds": [r["seed"] for r in chosen],
             "groups": _group_means(chosen, metric)}  # fmt: skip
    paper = paper_figures(settings.get("paper"))
    result = {
        "mmbert_version": __version__,
        "task": settings.task,
        "kind": settings.kind,
        "protocol": settings.get("protocol"),
        "metric": metric,
        "score": score,
        "lr": chosen_lr,
        "paper": paper,
        "settings": settings.to_dict(),
        "model": model_fingerprint(model_dir),
        "data": {"source": options.data or "hf (the settings' dataset names)", "splits": data_record},
        "device": str(device),
        "seconds": round(time.perf_counter() - t0, 2),
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RESULT, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_report(out / REPORT, result)
    return BenchmarkResult(out, settings.task, metric, score, chosen_lr, paper, settings, runs)


@dataclass
class FamilyResult:
    out: Path
    family: str
    tasks: list[BenchmarkResult]
    average: float  # mean of the tasks' mean scores (x 100)
    paper_average: dict[str, float | None]  # the paper's figures averaged over the same tasks


def run_family(options: BenchmarkOptions) -> FamilyResult:
    """Every task of a family (`FAMILIES`) with the same model, data root and overrides, then the average.

    `--data DIR` gives each task `DIR/TASK` when that folder exists, else `DIR` itself (GLUE's configs
    are its task names, so one folder of config folders serves all eight).
    """
    family = options.task
    out = Path(options.out or Path("benchmarks") / family)
    inputs = tuple(
        x for x in (options.model, options.data, options.settings) if x and not x.startswith("hf:")
    )
    check_output(out, inputs, is_own=lambda d: (d / SUMMARY).is_file(), overwrite=options.overwrite)
    results = []
    for task in FAMILIES[family]:
        data = options.data
        if data and not data.startswith("hf:") and (Path(data) / task).is_dir():
            data = str(Path(data) / task)
        logger.info("%s: %s", family, task)
        results.append(
            run_benchmark(replace(options, task=task, data=data, out=str(out / task), overwrite=True))
        )
    average = sum(r.score["mean"] for r in results) / len(results)
    paper_average = {}
    for model in PAPER_MODELS:
        figures = [r.paper.get(model) for r in results]
        paper_average[model] = None if None in figures else sum(figures) / len(figures)
    summary = {
        "family": family,
        "average": average,
        "paper_average_same_tasks": paper_average,
        "paper_average_published": paper_figures(f"{family}.average"),
        "tasks": {r.task: {"metric": r.metric, **r.score, "lr": r.lr, "paper": r.paper} for r in results},
    }
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_family_report(out / REPORT, summary)
    return FamilyResult(out, family, results, average, paper_average)


def _choose(runs: list[dict[str, Any]], metric: str) -> tuple[float | None, list[dict[str, Any]]]:
    """The runs of the learning rate with the best mean dev score (the only one without a sweep).

    Dev, not the reported split: XTREME's protocol picks on English dev, never on the target languages'
    test sets. Where dev is the reported split (GLUE's dev sets), the two are the same numbers.
    """
    by_lr: dict[Any, list[dict[str, Any]]] = {}
    for r in runs:
        by_lr.setdefault(r.get("lr"), []).append(r)
    sign = -1 if metric in LOWER_IS_BETTER else 1

    def dev_mean(lr: Any) -> float:
        return sum(r.get("dev_score", r["score"]) for r in by_lr[lr]) / len(by_lr[lr])

    lr = max(by_lr, key=lambda k: sign * dev_mean(k))
    return lr, by_lr[lr]


def _group_means(runs: list[dict[str, Any]], metric: str) -> dict[str, float]:
    groups = runs[0]["eval"]["groups"]
    return {g: 100 * sum(r["eval"]["groups"][g][metric] for r in runs) / len(runs) for g in groups}


def _read_part(
    source: DataSource, settings: Settings, role: str, record: dict
) -> list[tuple[str, list[Row]]]:
    """The rows of each config of a part, after the settings' `languages` filter (if any).

    The filter applies to what is scored (eval), and to training and dev data only where they span
    several languages (translate-train-all; TyDiQA's in-language training on its own data): a
    single-config part, or one from a dataset of its own, is the protocol's source language (English
    MNLI, COPA, SQuAD), which zero-shot transfer trains on whatever languages are scored.
    """
    part = settings.part(role)
    keep = settings.get("languages")
    if settings.get("language_from") == "id":  # one config, the language in each row's id
        filter_configs = False
        filter_rows = keep is not None and (role == "eval" or part.dataset == settings.get("dataset"))
    else:
        filter_configs = keep is not None and (role == "eval" or len(part.configs) > 1)
        filter_rows = False
    out = []
    for config in part.configs:
        if filter_configs and config not in keep:
            continue  # a language config outside the filter: not read at all
        rows, rec = load_split(source, part, config, settings.get("dataset"), settings.get("revision"))
        if filter_rows:
            rows = [r for r in rows if str(r[1].get(settings["columns"]["id"], "")).split("-", 1)[0] in keep]
            rec = {**rec, "rows_kept": len(rows)}
        record.setdefault(role, {})[config] = rec
        if rows:
            out.append((config, rows))
    if not out:
        raise SettingsError(f"task {settings.task}: no {role} data left after `languages={keep}`")
    return out


def _encode(kind, parts: list[tuple[str, list[Row]]], tokenizer) -> Encoded:
    """Every config of a part as one encoded split, each example grouped under its config."""
    encoded = [kind.encode(rows, tokenizer, config) for config, rows in parts]
    first = encoded[0]
    for e in encoded[1:]:
        n_examples = len(first.extra.get("contexts", ()))  # QA: features point at examples, renumber them
        first.ids += e.ids
        first.targets += e.targets
        first.groups += e.groups
        for key, value in e.extra.items():
            if isinstance(value, list):
                if key == "feature_example":
                    value = [v + n_examples for v in value]
                first.extra[key] += value
    return first


def _finetune_runs(
    model_dir: str, settings: Settings, source: DataSource, device: torch.device, progress: bool
):
    kind = KINDS[settings.kind](settings)
    record: dict[str, Any] = {}
    tokenizer = load_tokenizer(model_dir, adapt=True)
    check_loaded_tokenizer(read_hf_config(model_dir), tokenizer, model_dir, model_dir)
    train = _encode(kind, _read_part(source, settings, "train", record), tokenizer)
    dev = _encode(kind, _read_part(source, settings, "dev", record), tokenizer)
    evals = _encode(kind, _read_part(source, settings, "eval", record), tokenizer)
    metric = settings["metric"]
    lrs = settings["lr"] if isinstance(settings["lr"], list) else [settings["lr"]]
    overrides = {
        **kind.config(),
        "classifier_pooling": settings["classifier_pooling"],
        # The model fine-tunes as transformers reads the same directory (the paper's HF scripts): an
        # export of a run under the released recipes carries the pre-training-only dropout after Wo
        # (`attention_output_dropout: 0.1`), a key transformers ignores.
        "attention_output_dropout": None,
    }
    runs = []
    for lr in lrs:
        for seed in settings["seeds"]:
            random.seed(seed)
            torch.manual_seed(seed)
            model = kind.model_class.from_pretrained(model_dir, device=device, **overrides)
            fit_settings = FitSettings(
                batch_size=settings["batch_size"], lr=float(lr), weight_decay=settings["weight_decay"],
                warmup_ratio=settings["warmup_ratio"], epochs=settings["epochs"], max_steps=settings["max_steps"],
                eval_every=settings["eval_every"], patience=settings["patience"], seed=seed, progress=progress,
                keep_best=settings["select"] == "best",
            )  # fmt: skip
            fitted = fit(
                model,
                len(train),
                lambda idx: kind.batch(train, idx, device),
                lambda m: _headline(kind.evaluate(m, dev, device), metric),
                metric,
                metric not in LOWER_IS_BETTER,
                fit_settings,
                device,
            )
            scores = kind.evaluate(model, evals, device)
            task_score = sum(g[metric] for g in scores["groups"].values()) / len(scores["groups"])
            logger.info("%s lr %g seed %d: %s %.4f", settings.task, lr, seed, metric, task_score)
            kept = next(h for h in fitted.history if h["step"] == fitted.best_step)  # the model scored
            runs.append({"lr": float(lr), "seed": seed, "score": task_score, "dev_score": kept[metric],
                         "eval": scores, "steps": fitted.steps, "best_step": fitted.best_step,
                         "seconds": fitted.seconds, "dev_history": fitted.history})  # fmt: skip
            del model
    return runs, record, metric


def _headline(scores: dict[str, Any], metric: str) -> dict[str, float]:
    """Dev scores for `fit`: the mean over groups of each metric (what the task score averages)."""
    groups = scores["groups"].values()
    keys = next(iter(groups)).keys()
    return {k: sum(g[k] for g in groups) / len(groups) for k in keys}
