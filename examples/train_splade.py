"""Learned sparse retrieval (SPLADE) from an mmBERT export with Sentence Transformers' SparseEncoder.

    python examples/train_splade.py --model jhu-clsp/mmBERT-small --out runs/splade

The masked-LM head is the sparse encoder: a text's vector is, for every vocabulary entry, the max
over its tokens of log(1 + relu(logit)), so the exported `decoder` weights are used, not dropped.
SpladeLoss wraps SparseMultipleNegativesRankingLoss (in-batch negatives plus the `negative` column)
and adds FLOPS regularizers that push query and document vectors towards sparsity. Evaluation:
sparse triplet accuracy and cross-lingual retrieval on the held-out UDHR articles, before and after.
"""

from __future__ import annotations

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


def build_model(model_name: str, max_seq_length: int):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    mlm = Transformer(model_name, transformer_task="fill-mask", max_seq_length=max_seq_length)
    return SparseEncoder(modules=[mlm, SpladePooling(pooling_strategy="max")])


def build_evaluator(dev, batch_size: int):
    from sentence_transformers.base.evaluation.sequential import SequentialEvaluator
    from sentence_transformers.sparse_encoder.evaluation import (
        SparseInformationRetrievalEvaluator,
        SparseTripletEvaluator,
    )

    queries, corpus, relevant = retrieval_data(dev)
    return SequentialEvaluator(
        [
            SparseTripletEvaluator(
                list(dev["anchor"]),
                list(dev["positive"]),
                list(dev["negative"]),
                name="dev",
                batch_size=batch_size,
            ),
            SparseInformationRetrievalEvaluator(
                queries, corpus, relevant, name="dev", batch_size=batch_size, write_csv=False
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0], lr=5e-5)
    p.add_argument("--query-reg", type=float, default=5e-5, help="FLOPS regularizer weight for queries")
    p.add_argument("--doc-reg", type=float, default=3e-5, help="FLOPS regularizer weight for documents")
    args = p.parse_args(argv)
    setup(args)
    from sentence_transformers import SparseEncoder, SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss

    train, dev = pair_datasets(args)
    model = build_model(args.model, args.max_seq_length)
    loss = SpladeLoss(
        model,
        loss=SparseMultipleNegativesRankingLoss(model),
        query_regularizer_weight=args.query_reg,
        document_regularizer_weight=args.doc_reg,
    )
    evaluator = build_evaluator(dev, args.batch_size)
    training_args = SparseEncoderTrainingArguments(
        **trainer_arguments(args, batch_sampler=BatchSamplers.NO_DUPLICATES)
    )
    trainer = SparseEncoderTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=dev, loss=loss, evaluator=evaluator
    )
    print(
        summary(
            "splade",
            evaluator.primary_metric,
            *train_and_save(trainer, model, evaluator, args.out, SparseEncoder),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
