"""ColBERT (multi-vector, late interaction) from an mmBERT export, with PyLate or Sentence Transformers.

    python examples/train_colbert.py --model jhu-clsp/mmBERT-small --out runs/colbert

Every token keeps its own vector (the encoder's hidden state projected to `--dim` and
L2-normalised); a query scores a document by MaxSim: for each query token its best document token,
summed. Training is contrastive (in-batch negatives plus the `negative` column).

Two backends with the same recipe:
- `pylate`: PyLate's `models.ColBERT` + `losses.Contrastive`, the announcement's recipe. PyLate
  1.6 pins sentence-transformers 5.3 / transformers <= 5.3, so it runs in its own environment
  (README: "ColBERT with PyLate").
- `st`: Sentence Transformers 6's `MultiVectorEncoder` (ColBERT natively, and it loads PyLate
  checkpoints), which installs beside this project's pins.
`--backend auto` (the default) takes PyLate when it is importable. Evaluation: triplet accuracy on
the held-out UDHR articles, before and after training.
"""

from __future__ import annotations

import importlib.util
import sys

from common import base_parser, pair_datasets, setup, summary, train_and_save, trainer_arguments


def train_pylate(args, train, dev):
    from pylate import evaluation, losses, models, utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    model = models.ColBERT(
        model_name_or_path=args.model,
        embedding_size=args.dim,
        query_length=args.query_length,
        document_length=args.max_seq_length,
    )
    evaluator = evaluation.ColBERTTripletEvaluator(
        anchors=list(dev["anchor"]),
        positives=list(dev["positive"]),
        negatives=list(dev["negative"]),
        name="dev",
        batch_size=args.batch_size,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=SentenceTransformerTrainingArguments(**trainer_arguments(args)),
        train_dataset=train,
        loss=losses.Contrastive(model=model),
        evaluator=evaluator,
        data_collator=utils.ColBERTCollator(model.tokenize),
    )

    def reload(path: str):
        return models.ColBERT(model_name_or_path=path)

    return evaluator, *train_and_save(trainer, model, evaluator, args.out, reload, backend="pylate")


def train_st(args, train, dev):
    from sentence_transformers import (
        MultiVectorEncoder,
        MultiVectorEncoderTrainer,
        MultiVectorEncoderTrainingArguments,
    )
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorTripletEvaluator
    from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    encoder = Transformer(args.model, max_seq_length=args.max_seq_length, query_length=args.query_length)
    model = MultiVectorEncoder(
        modules=[
            encoder,
            # The ColBERT projection: per token, no bias, no activation.
            Dense(
                encoder.get_embedding_dimension(),
                args.dim,
                bias=False,
                activation_function=None,
                module_input_name="token_embeddings",
            ),
            MultiVectorMask(),
            Normalize(module_input_name="token_embeddings"),
        ]
    )
    evaluator = MultiVectorTripletEvaluator(
        list(dev["anchor"]),
        list(dev["positive"]),
        list(dev["negative"]),
        name="dev",
        batch_size=args.batch_size,
    )
    trainer = MultiVectorEncoderTrainer(
        model=model,
        args=MultiVectorEncoderTrainingArguments(
            **trainer_arguments(args, batch_sampler=BatchSamplers.NO_DUPLICATES)
        ),
        train_dataset=train,
        loss=MultiVectorMultipleNegativesRankingLoss(model),
        evaluator=evaluator,
    )
    return evaluator, *train_and_save(trainer, model, evaluator, args.out, MultiVectorEncoder, backend="st")


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0], lr=3e-5)
    p.add_argument("--backend", choices=["auto", "pylate", "st"], default="auto")
    p.add_argument("--dim", type=int, default=128, help="per-token vector size")
    p.add_argument("--query-length", type=int, default=32, help="query tokens (padded with <mask> expansion)")
    args = p.parse_args(argv)
    setup(args)
    backend = args.backend
    if backend == "auto":
        backend = "pylate" if importlib.util.find_spec("pylate") else "st"
    train, dev = pair_datasets(args)
    run = train_pylate if backend == "pylate" else train_st
    evaluator, before, after, final = run(args, train, dev)
    print(summary(f"colbert ({backend})", evaluator.primary_metric, before, after, final))
    return 0


if __name__ == "__main__":
    sys.exit(main())
