"""MTEB tasks through the `mteb` package (the `mteb` extra), the model as a Sentence Transformers model.

The model directory is wrapped as Sentence Transformers does for any transformers encoder: the
encoder (`models.Transformer`) + mean pooling, mmBERT's pooling; a directory that is already a
Sentence Transformers model (it has `modules.json`, e.g. after examples/train_dense.py) is loaded as it
is. Tasks come by name from `mteb.get_tasks` (their data downloads through `datasets`), or, with
`--data PATH`, a local STS task built here from a JSON Lines file of `sentence1`, `sentence2`, `score`
(the columns of MTEB's STS tasks), so that the whole path runs offline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mmbert.benchmark.data import BenchmarkDataError, DataSource, Part, load_split
from mmbert.benchmark.settings import Settings, SettingsError
from mmbert.config import MmBertConfig

logger = logging.getLogger(__name__)

LOCAL_TASK = "LocalSTS"


def _require_mteb():
    try:
        import mteb  # optional: pip install mmbert[mteb]
    except ImportError as e:
        raise SettingsError("MTEB tasks need the `mteb` package: pip install 'mmbert[mteb]'") from e
    return mteb


def sentence_transformer(model_dir: str | Path, max_length: int, device: torch.device):
    """Our export as a Sentence Transformers model: the encoder + mean pooling (or the directory's own
    modules when it is a Sentence Transformers model already)."""
    from sentence_transformers import SentenceTransformer, models  # optional (the `st` extra), seconds

    model_dir = Path(model_dir)
    if (model_dir / "modules.json").is_file():
        return SentenceTransformer(str(model_dir), device=str(device))
    hidden = MmBertConfig.load(model_dir).hidden_size
    modules = [
        models.Transformer(str(model_dir), max_seq_length=max_length),
        models.Pooling(hidden, pooling_mode="mean"),
    ]
    return SentenceTransformer(modules=modules, device=str(device))


def local_sts_task(rows: list[tuple[str, dict]], score_range: list[float]):
    """An MTEB STS task over local rows (sentence1, sentence2, score), scored as MTEB scores STS."""
    mteb = _require_mteb()
    from datasets import Dataset, DatasetDict  # a dependency of mteb
    from mteb.abstasks.sts import AbsTaskSTS

    columns: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
    for where, r in rows:
        for c in columns:
            if c not in r:
                raise BenchmarkDataError(
                    f"{where}: missing column {c!r} (an STS row has sentence1, sentence2, score)"
                )
        columns["sentence1"].append(str(r["sentence1"]))
        columns["sentence2"].append(str(r["sentence2"]))
        columns["score"].append(float(r["score"]))

    class LocalSTS(AbsTaskSTS):
        metadata = mteb.TaskMetadata(
            name=LOCAL_TASK,
            description="A local STS task given to `mmbert benchmark mteb --data`.",
            reference=None,
            dataset={"path": "local", "revision": "local"},
            type="STS",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="cosine_spearman",
            date=None,
            domains=None,
            task_subtypes=None,
            license=None,
            annotations_creators=None,
            dialect=None,
            sample_creation=None,
            bibtex_citation="",
        )
        min_score, max_score = score_range

        def load_data(self, **kwargs: Any) -> None:
            self.dataset = DatasetDict({"test": Dataset.from_dict(columns)})
            self.data_loaded = True

    return LocalSTS()


def run_mteb(model_dir: str, settings: Settings, source: DataSource, device: torch.device):
    """(runs, data record, metric) as the fine-tuning benchmarks return them: one run, each task a group."""
    mteb = _require_mteb()
    record: dict[str, Any] = {}
    if source.local is not None:
        part = Part(None, ("default",), "test")
        rows, rec = load_split(source, part, "default", None, None)
        record["eval"] = {LOCAL_TASK: rec}
        tasks = [local_sts_task(rows, list(settings["local_score_range"]))]
    else:
        names = settings["tasks"]
        if not names:
            raise SettingsError(
                "mteb: name the tasks, e.g. `tasks=[STS22,SprintDuplicateQuestions]`, or give --data"
            )
        tasks = list(mteb.get_tasks(tasks=list(names), languages=settings.get("languages")))
        record["eval"] = {t.metadata.name: {"dataset": t.metadata.dataset} for t in tasks}
    model = sentence_transformer(model_dir, settings["max_length"], device)
    results = mteb.evaluate(
        model,
        tasks,
        cache=None,
        show_progress_bar=False,
        encode_kwargs={"batch_size": settings["batch_size"]},
    )
    groups = {}
    for task_result in results.task_results:
        groups[task_result.task_name] = {"main_score": float(task_result.get_score())}
        logger.info(
            "mteb %s: main score %.4f", task_result.task_name, groups[task_result.task_name]["main_score"]
        )
    score = sum(g["main_score"] for g in groups.values()) / len(groups)
    run = {"lr": None, "seed": settings["seeds"][0], "score": score, "eval": {"all": {}, "groups": groups}}
    return [run], record, "main_score"
