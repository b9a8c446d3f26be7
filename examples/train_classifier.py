"""Sequence classification (language identification) from an mmBERT export.

    python examples/train_classifier.py --model jhu-clsp/mmBERT-small --out runs/langid
    python examples/train_classifier.py --model jhu-clsp/mmBERT-small --out runs/langid --backend mmbert

The default task identifies the language of a UDHR paragraph among `--langs` (training articles
for training, held-out articles for evaluation); `--dataset` takes any `text`/`label` file or HF
dataset instead. Two backends with the same data:
- `transformers` (default): `AutoModelForSequenceClassification` on the export (mean pooling, as
  mmBERT's config says) trained by transformers' `Trainer`;
- `mmbert`: this project's fine-tuning (`mmbert.finetune.finetune`, what `mmbert finetune` runs:
  unpadded model, early stopping on dev), fed the same rows as JSON Lines files written under OUT/data.
Either way OUT/final loads with `AutoModelForSequenceClassification`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common import (
    base_parser,
    logged_losses,
    setup,
    split_datasets,
    trainer_arguments,
    udhr_language_id,
    write_metrics,
)

from mmbert.finetune import FinetuneOptions, finetune
from mmbert.io import atomic_write_text


def train_with_trainer(args, train, dev, labels: list[str]) -> dict:
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    label2id = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=args.max_seq_length)
        enc["labels"] = [label2id[str(x)] for x in batch["label"]]
        return enc

    train = train.map(encode, batched=True, remove_columns=train.column_names)
    dev = dev.map(encode, batched=True, remove_columns=dev.column_names)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )

    def compute_metrics(pred):
        logits, gold = pred
        guess = np.argmax(logits, axis=-1)
        f1 = []
        for c in range(len(labels)):
            tp = int(((guess == c) & (gold == c)).sum())
            wrong = int(((guess == c) != (gold == c)).sum())
            if tp + wrong:
                f1.append(2 * tp / (2 * tp + wrong))
        return {"accuracy": float((guess == gold).mean()), "f1_macro": float(np.mean(f1))}

    trainer = Trainer(
        model=model,
        args=TrainingArguments(**trainer_arguments(args)),
        train_dataset=train,
        eval_dataset=dev,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    final = Path(args.out) / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    return {
        "losses": logged_losses(trainer),
        "eval_before": {"accuracy": before["eval_accuracy"], "f1_macro": before["eval_f1_macro"]},
        "eval_after": {"accuracy": after["eval_accuracy"], "f1_macro": after["eval_f1_macro"]},
    }


def train_with_mmbert(args, train, dev) -> dict:
    data = Path(args.out) / "data"
    for name, rows in (("train", train), ("dev", dev)):
        text = "".join(
            json.dumps({"text": r["text"], "label": str(r["label"])}, ensure_ascii=False) + "\n" for r in rows
        )
        atomic_write_text(data / f"{name}.jsonl", text)
    result = finetune(
        FinetuneOptions(
            model=args.model,
            train=str(data / "train.jsonl"),
            dev=str(data / "dev.jsonl"),
            out=str(Path(args.out) / "final"),
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            lr=args.lr,
            max_length=args.max_seq_length,
            seed=args.seed,
            eval_every=max(1, args.max_steps // 2),
        )
    )
    pick = ("accuracy", "f1_macro")
    return {
        "losses": result.train_losses,
        "eval_before": {k: result.before[k] for k in pick},
        "eval_after": {k: result.best[k] for k in pick},
    }


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0], lr=5e-5)
    p.add_argument("--backend", choices=["transformers", "mmbert"], default="transformers")
    args = p.parse_args(argv)
    setup(args)
    from transformers import AutoModelForSequenceClassification

    train, dev = split_datasets(args, ("text", "label"), udhr_language_id)
    labels = sorted({str(x) for x in train["label"]})
    unseen = sorted({str(x) for x in dev["label"]} - set(labels))
    if unseen:
        raise SystemExit(f"dev labels {unseen} never occur in the training data")

    if args.backend == "mmbert":
        metrics = train_with_mmbert(args, train, dev)
    else:
        metrics = train_with_trainer(args, train, dev, labels)
    final = Path(args.out) / "final"
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(final))  # loads with transformers
    assert sorted(reloaded.config.id2label.values()) == labels
    write_metrics(args.out, {"backend": args.backend, **metrics})
    before, after = metrics["eval_before"]["accuracy"], metrics["eval_after"]["accuracy"]
    print(
        f"classifier ({args.backend}): accuracy {before:.3f} -> {after:.3f} ({len(labels)} labels); saved {final}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
