"""Dense embeddings (a bi-encoder) from an mmBERT export with Sentence Transformers.

    python examples/train_dense.py --model jhu-clsp/mmBERT-small --out runs/dense

The encoder is mean-pooled (mmBERT's `classifier_pooling` is mean too) and trained with
MultipleNegativesRankingLoss: each (query, positive) pair sees the other positives in the batch,
and the mined `negative` column, as negatives. `--cached` switches to the cached (GradCache)
variant, whose memory does not grow with the batch size. Evaluation: triplet accuracy and
cross-lingual retrieval (queries in one language, documents in the others) on the held-out UDHR
articles, before and after training, written to OUT/metrics.json.
"""

from __future__ import annotations

import logging
import sys

from common import (
    base_parser,
    pair_datasets,
    retrieval_data,
    setup,
    summary,
    train_and_save,
    trainer_arguments,
)

log = logging.getLogger("train_dense")


def build_model(model_name: str, max_seq_length: int):
    from sentence_transformers import SentenceTransformer, models

    encoder = models.Transformer(model_name, max_seq_length=max_seq_length)
    pooling = models.Pooling(encoder.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[encoder, pooling])


def build_evaluator(dev, batch_size: int):
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
        SequentialEvaluator,
        TripletEvaluator,
    )

    queries, corpus, relevant = retrieval_data(dev)
    return SequentialEvaluator(
        [
            TripletEvaluator(
                dev["anchor"], dev["positive"], dev["negative"], name="dev", batch_size=batch_size
            ),
            InformationRetrievalEvaluator(
                queries, corpus, relevant, name="dev", batch_size=batch_size, write_csv=False
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0], lr=8e-5)
    p.add_argument("--cached", action="store_true", help="CachedMultipleNegativesRankingLoss (GradCache)")
    p.add_argument("--mini-batch-size", type=int, default=8, help="chunk size of the cached loss")
    args = p.parse_args(argv)
    setup(args)
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    train, dev = pair_datasets(args)
    model = build_model(args.model, args.max_seq_length)
    if args.cached:
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=args.mini_batch_size)
    else:
        loss = losses.MultipleNegativesRankingLoss(model)
    evaluator = build_evaluator(dev, args.batch_size)
    training_args = SentenceTransformerTrainingArguments(
        # Duplicate texts in one batch would be false negatives for the in-batch loss.
        **trainer_arguments(args, batch_sampler=BatchSamplers.NO_DUPLICATES),
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=dev, loss=loss, evaluator=evaluator
    )
    trained = train_and_save(trainer, model, evaluator, args.out, SentenceTransformer)
    print(summary("dense", evaluator.primary_metric or "dev_cosine_accuracy", *trained))
    return 0


if __name__ == "__main__":
    sys.exit(main())
