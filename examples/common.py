"""Shared data plumbing for the fine-tuning examples: arguments, datasets, metrics files.

The default data is the bundled parallel UDHR (`mmbert.data.corpus`), so every example runs offline:
an article in one language is a query, the same article in another language its positive, and a
different article in the positive's language a negative (same language and style, other content, so
the model must match meaning rather than script). Training uses the training articles; the
held-out articles (`HELDOUT_ARTICLES`, never seen in pre-training either) are the dev set.

`--dataset` replaces that with a local `.jsonl`/`.json`/`.csv` file, a dataset directory, or (for
users with network access) a Hugging Face dataset name; it must have the columns the recipe names.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmbert.data.corpus import HELDOUT_ARTICLES, Declaration, load_udhr
from mmbert.io import atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_LANGS = "eng_Latn,fra_Latn,deu_Latn,spa_Latn,rus_Cyrl,cmn_Hans,arb_Arab,hin_Deva"


def base_parser(description: str, lr: float, max_steps: int = 200) -> argparse.ArgumentParser:
    """The arguments every example takes; a script adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--model",
        required=True,
        help="an HF-format mmBERT: a local export (`mmbert train`, `mmbert demo`) or a hub name "
        "such as jhu-clsp/mmBERT-small",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="a local .jsonl/.json/.csv file, a dataset directory or an HF dataset name "
        "(default: pairs from the bundled UDHR)",
    )
    p.add_argument(
        "--langs", default=DEFAULT_LANGS, help="comma-separated UDHR languages for the default data"
    )
    p.add_argument("--out", required=True, help="output directory (the trained model and metrics.json)")
    p.add_argument("--max-steps", type=int, default=max_steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    p.add_argument("--max-seq-length", type=int, default=128, help="tokens per text (longer is truncated)")
    p.add_argument("--seed", type=int, default=0)
    return p


def udhr_declarations(
    langs: Sequence[str], declarations: Sequence[Declaration] | None = None
) -> list[Declaration]:
    """One declaration per language: the one whose key is the language itself, else the first."""
    declarations = load_udhr() if declarations is None else declarations
    by_lang: dict[str, list[Declaration]] = {}
    for d in declarations:
        by_lang.setdefault(d.lang, []).append(d)
    chosen = []
    for lang in langs:
        if lang not in by_lang:
            raise SystemExit(f"--langs: no bundled UDHR declaration for {lang!r} (use lang_Script keys)")
        chosen.append(next((d for d in by_lang[lang] if d.key == lang), by_lang[lang][0]))
    if len(chosen) < 2:
        raise SystemExit("--langs: parallel pairs need at least two languages")
    return chosen


def _articles(d: Declaration, split: str) -> dict[int, str]:
    heldout = split == "heldout"
    return {
        a.number: a.text for a in d.articles if (a.number in HELDOUT_ARTICLES) == heldout and a.text.strip()
    }


def udhr_pairs(
    declarations: Sequence[Declaration], split: str, seed: int = 0, pivot_only: bool = False
) -> list[dict[str, Any]]:
    """(anchor, positive, negative) rows: every article of `split` for every ordered language pair.

    The negative is another article of the same split in the positive's language. `pivot_only` keeps
    the anchors in the first language only, which retrieval evaluation needs: with every language
    as a query, each query's own text would sit unjudged in the corpus.
    """
    rng = random.Random(seed)
    texts = [_articles(d, split) for d in declarations]
    common = sorted(set.intersection(*(set(t) for t in texts)))
    if len(common) < 2:
        raise SystemExit(f"the chosen languages share fewer than two {split} articles")
    rows = []
    for n in common:
        for i, a in enumerate(texts[:1] if pivot_only else texts):
            for j, b in enumerate(texts):
                if i == j:
                    continue
                other = rng.choice([m for m in common if m != n])
                rows.append(
                    {
                        "anchor": a[n],
                        "positive": b[n],
                        "negative": b[other],
                        "article": n,
                        "anchor_lang": declarations[i].lang,
                        "positive_lang": declarations[j].lang,
                    }
                )
    rng.shuffle(rows)
    return rows


def udhr_language_id(declarations: Sequence[Declaration], split: str) -> list[dict[str, Any]]:
    """(text, label) rows for language identification: one row per paragraph, label = language key."""
    rows = []
    for d in declarations:
        for text in _articles(d, split).values():
            rows += [{"text": p.strip(), "label": d.lang} for p in text.split("\n") if p.strip()]
    return rows


def load_split_rows(dataset: str, columns: Sequence[str], seed: int = 0, dev_fraction: float = 0.1):
    """Train and dev `datasets.Dataset`s from a local file or an HF dataset, checked for `columns`.

    A local file or an HF dataset with only a train split is split `dev_fraction` for dev.
    """
    import datasets

    path = Path(dataset)
    if path.is_file():
        builder = {".jsonl": "json", ".json": "json", ".csv": "csv"}.get(path.suffix.lower())
        if builder is None:
            raise SystemExit(f"--dataset {path}: expected a .jsonl, .json or .csv file")
        splits = {"train": datasets.load_dataset(builder, data_files=str(path), split="train")}
    else:  # a dataset directory (train.jsonl, validation.jsonl, ...) or a Hub name
        splits = dict(datasets.load_dataset(dataset))
    name = dataset
    train = splits.get("train")
    if train is None:
        raise SystemExit(f"--dataset {name}: no 'train' split (splits: {sorted(splits)})")
    dev = next((splits[s] for s in ("validation", "dev", "test") if s in splits), None)
    for split_name, ds in (("train", train), ("dev", dev)):
        if ds is None:
            continue
        missing = [c for c in columns if c not in ds.column_names]
        if missing:
            raise SystemExit(
                f"--dataset {name} ({split_name}): missing column(s) {missing}; it has {ds.column_names}"
            )
        if len(ds) == 0:
            raise SystemExit(f"--dataset {name}: the {split_name} split is empty")
    if dev is None:
        if len(train) < 4:
            raise SystemExit(f"--dataset {name}: need at least four rows to hold out a dev split")
        # At least two dev rows: retrieval and reranking evaluation need more than one document.
        parts = train.train_test_split(test_size=max(2, int(len(train) * dev_fraction)), seed=seed)
        train, dev = parts["train"], parts["test"]
    keep = list(columns)
    return train.select_columns(keep), dev.select_columns(keep)


def split_datasets(
    args: argparse.Namespace,
    columns: Sequence[str],
    udhr_rows: Callable[[Sequence[Declaration], str], list[dict[str, Any]]],
):
    """Train/dev datasets: `columns` of `--dataset`, else `udhr_rows(declarations, split)` of the bundled
    UDHR in `--langs` (the training articles, then the held-out ones)."""
    import datasets

    if args.dataset:
        return load_split_rows(args.dataset, columns, seed=args.seed)
    decls = udhr_declarations(args.langs.split(","))
    return tuple(datasets.Dataset.from_list(udhr_rows(decls, split)) for split in ("train", "heldout"))


def udhr_pair_rows(args: argparse.Namespace, columns: Sequence[str] | None = None):
    """`udhr_pairs` as `split_datasets` takes them: every held-out query an English pivot; `columns` only."""

    def rows(decls: Sequence[Declaration], split: str) -> list[dict[str, Any]]:
        pairs = udhr_pairs(decls, split, seed=args.seed, pivot_only=split == "heldout")
        return pairs if columns is None else [{c: r[c] for c in columns} for r in pairs]

    return rows


def pair_datasets(args: argparse.Namespace, columns: Sequence[str] = ("anchor", "positive", "negative")):
    """Train/dev datasets of `columns` from `--dataset` or the bundled UDHR pairs."""
    return split_datasets(args, columns, udhr_pair_rows(args, columns))


def retrieval_data(
    dev, anchor: str = "anchor", positive: str = "positive", negative: str | None = "negative"
):
    """queries, corpus and relevance judgements (the InformationRetrievalEvaluator inputs) from dev pairs.

    Texts are deduplicated, so one query may have several relevant documents (its article in every
    other language), and negatives join the corpus as distractors.
    """
    doc_ids: dict[str, str] = {}
    query_ids: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}

    def doc(text: str) -> str:
        return doc_ids.setdefault(text, f"d{len(doc_ids)}")

    for row in dev:
        q = query_ids.setdefault(row[anchor], f"q{len(query_ids)}")
        relevant.setdefault(q, set()).add(doc(row[positive]))
        if negative and row.get(negative):
            doc(row[negative])
    queries = {q: text for text, q in query_ids.items()}
    corpus = {d: text for text, d in doc_ids.items()}
    return queries, corpus, relevant


def logged_losses(trainer) -> list[float]:
    """Training losses the trainer logged (set `logging_steps` to see every step)."""
    return [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]


def write_metrics(out: str | Path, metrics: dict[str, Any]) -> Path:
    """`out/metrics.json`: the losses and the evaluation before and after training, for humans and tests."""
    path = Path(out) / "metrics.json"
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def train_and_save(
    trainer: Any, model: Any, evaluator: Any, out: str | Path, reload: Callable[[str], Any], **extra: Any
) -> tuple[dict[str, float], dict[str, float], Path]:
    """Score `model` with `evaluator`, train it with `trainer`, score it again, save it to OUT/final,
    load that back with its own library (`reload`), and write OUT/metrics.json (the logged losses,
    both scores and `extra`); returns the two scores and the saved directory."""
    before = evaluator(model)
    trainer.train()
    after = evaluator(model)
    final = Path(out) / "final"
    model.save(str(final))
    reload(str(final))  # the saved model reloads with its library
    write_metrics(
        out, {**extra, "losses": logged_losses(trainer), "eval_before": before, "eval_after": after}
    )
    return before, after, final


def summary(name: str, key: str, before: dict[str, float], after: dict[str, float], final: Path) -> str:
    """The example's last line: its dev metric `key` before and after training, and where it saved."""
    nan = float("nan")
    return f"{name}: {key} {before.get(key, nan):.3f} -> {after.get(key, nan):.3f}; saved {final}"


def setup(args: argparse.Namespace) -> None:
    """Logging, and every RNG seeded before any model is built (fresh heads start the same each run)."""
    from transformers import set_seed

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    set_seed(args.seed)


def trainer_arguments(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """Training-argument fields shared by the examples (CPU-friendly, no hub, no reporting)."""
    return dict(
        output_dir=str(Path(args.out) / "checkpoints"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=max(1, args.max_steps // 10),
        logging_steps=max(1, min(10, args.max_steps // 10)),
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **extra,
    )
