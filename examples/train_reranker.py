"""A reranker (cross-encoder) from an mmBERT export with Sentence Transformers' CrossEncoder.

    python examples/train_reranker.py --model jhu-clsp/mmBERT-small --out runs/reranker \
        --miner runs/dense/final

The query and a candidate are read together (`<bos> query <eos> candidate <eos>`) and one logit
scores the pair. Training pairs are labelled: every (query, positive) is 1, and `--num-negatives`
hard negatives per query, mined with an embedding model (`--miner`, e.g. the output of
train_dense.py; default: the base model mean-pooled), are 0; the loss is binary cross-entropy with
`pos_weight` = the number of negatives so both classes weigh the same. On the bundled UDHR,
negatives are mined among the articles in the positive's language only: the query's article in a
third language is a translation, not a negative. Evaluation: reranking MRR@10 and NDCG@10 of the
held-out articles, before and after training.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import (
    base_parser,
    setup,
    split_datasets,
    summary,
    train_and_save,
    trainer_arguments,
    udhr_pair_rows,
)


def mining_model(name: str, max_seq_length: int):
    from sentence_transformers import SentenceTransformer, models

    if (Path(name) / "modules.json").exists():  # already a Sentence Transformers model
        return SentenceTransformer(name)
    encoder = models.Transformer(name, max_seq_length=max_seq_length)
    return SentenceTransformer(modules=[encoder, models.Pooling(encoder.get_embedding_dimension(), "mean")])


def mine(pairs, miner, num_negatives: int, batch_size: int):
    """(anchor, positive, label) rows: each pair as 1 and its mined hard negatives as 0.

    Rows are mined per `positive_lang` group when the column exists (the bundled parallel data),
    so the candidates are one language's articles and a translation is never taken for a negative.
    """
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    groups = (
        [
            pairs.filter(lambda r, lang=lang: r["positive_lang"] == lang)
            for lang in sorted(set(pairs["positive_lang"]))
        ]
        if "positive_lang" in pairs.column_names
        else [pairs]
    )
    mined = [
        mine_hard_negatives(
            g.select_columns(["anchor", "positive"]),
            miner,
            num_negatives=num_negatives,
            output_format="labeled-pair",
            batch_size=batch_size,
            verbose=False,
        )
        for g in groups
    ]
    return datasets.concatenate_datasets(mined).shuffle(seed=0)


def reranking_samples(dev) -> list[dict]:
    """One sample per dev query: its positives, and every other dev document (other queries'
    positives, the `negative` column where there is one) as its negatives."""
    positives: dict[str, list[str]] = {}
    docs: set[str] = set()
    for row in dev:
        positives.setdefault(row["anchor"], []).append(row["positive"])
        docs.add(row["positive"])
        if row.get("negative"):
            docs.add(row["negative"])
    samples = [
        {"query": q, "positive": ps, "negative": sorted(docs - set(ps))} for q, ps in positives.items()
    ]
    samples = [s for s in samples if s["negative"]]
    if not samples:
        raise SystemExit("the dev split has a single document: reranking needs at least two")
    return samples


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0], lr=2e-5)
    p.add_argument(
        "--miner", default=None, help="embedding model for hard-negative mining (default: --model)"
    )
    p.add_argument("--num-negatives", type=int, default=3, help="mined negatives per query")
    args = p.parse_args(argv)
    setup(args)
    import torch
    from sentence_transformers import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    train, dev = split_datasets(args, ("anchor", "positive"), udhr_pair_rows(args))
    miner = mining_model(args.miner or args.model, args.max_seq_length)
    train = mine(train, miner, args.num_negatives, args.batch_size)
    del miner

    model = CrossEncoder(args.model, num_labels=1, max_length=args.max_seq_length)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(args.num_negatives)))
    evaluator = CrossEncoderRerankingEvaluator(reranking_samples(dev), name="dev", batch_size=args.batch_size)
    trainer = CrossEncoderTrainer(
        model=model,
        args=CrossEncoderTrainingArguments(**trainer_arguments(args)),
        train_dataset=train,
        loss=loss,
        evaluator=evaluator,
    )
    print(
        summary(
            "reranker",
            evaluator.primary_metric,
            *train_and_save(trainer, model, evaluator, args.out, CrossEncoder),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
