"""Sequence classification (language identification) from an mmBERT export with transformers' Trainer.

    python examples/train_classifier.py --model jhu-clsp/mmBERT-small --out runs/langid

The default task identifies the language of a UDHR paragraph among `--langs` (training articles
for training, held-out articles for evaluation). `--dataset` takes any `text`/`label` file or HF
dataset instead. The model is transformers' `AutoModelForSequenceClassification` on the export
(mean pooling, as mmBERT's config says); the output directory loads with the same class.
`mmbert finetune` does the same job on this project's unpadded model, with early stopping:

    mmbert finetune --model jhu-clsp/mmBERT-small --train train.csv --dev dev.csv --out runs/clf
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import (
    base_parser,
    load_split_rows,
    logged_losses,
    setup,
    trainer_arguments,
    udhr_declarations,
    udhr_language_id,
    write_metrics,
)


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0], lr=5e-5)
    args = p.parse_args(argv)
    setup(args)
    import datasets
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    if args.dataset:
        train, dev = load_split_rows(args.dataset, ("text", "label"), seed=args.seed)
    else:
        decls = udhr_declarations(args.langs.split(","))
        train = datasets.Dataset.from_list(udhr_language_id(decls, "train"))
        dev = datasets.Dataset.from_list(udhr_language_id(decls, "heldout"))
    labels = sorted({str(x) for x in train["label"]})
    label2id = {name: i for i, name in enumerate(labels)}
    unseen = sorted({str(x) for x in dev["label"]} - set(labels))
    if unseen:
        raise SystemExit(f"dev labels {unseen} never occur in the training data")

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
    AutoModelForSequenceClassification.from_pretrained(str(final))  # the saved model reloads
    write_metrics(args.out, {"losses": logged_losses(trainer), "eval_before": before, "eval_after": after})
    print(
        f"classifier: accuracy {before['eval_accuracy']:.3f} -> {after['eval_accuracy']:.3f} "
        f"({len(labels)} labels); saved {final}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
