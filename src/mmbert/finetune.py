"""`mmbert finetune`: sequence classification or regression on an HF-format mmBERT.

    mmbert finetune --model runs/demo/export --train train.csv --dev dev.csv --out runs/clf

Data is a CSV, JSON Lines or JSON file (or a Hugging Face dataset name, for users with network
access) with a `text` column, a `label` column and optionally a `text_pair` column (names can be
changed). Classification labels are strings or integers; regression labels are numbers. `--task
auto` picks regression when a label is a non-integer number. Mistakes are reported with the file,
line and column: a missing column, an empty text, a label of the wrong type, an empty split, a dev
label never seen in training.

Training runs on our unpadded model: a batch is the concatenation of its sequences with
`cu_seqlens`, so no compute is spent on padding. The dev split is evaluated every `--eval-every`
steps (default once per epoch) with accuracy and macro-F1 (classification) or MSE and Pearson
(regression); the best checkpoint by `--metric` is kept and training stops after `--patience`
evaluations without improvement. The output directory is an HF model that
`transformers.AutoModelForSequenceClassification` loads, with `id2label`/`label2id`, the tokenizer
and `finetune.json` (arguments, evaluation history, best and test metrics).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from tqdm.auto import tqdm

from mmbert.data.packing import PackedBatch
from mmbert.data.records import BadInputError, iter_csv, iter_jsonl, read_json
from mmbert.errors import MmbertError
from mmbert.hf import check_loaded_tokenizer
from mmbert.inference import resolve_device
from mmbert.io import atomic_dir, check_output, not_found
from mmbert.model import MmBertForSequenceClassification
from mmbert.optim import parameter_groups
from mmbert.tokenizer import load_tokenizer, write_tokenizer_files

logger = logging.getLogger(__name__)

TASKS = ("auto", "classification", "regression")
SUMMARY = "finetune.json"  # in the output directory: what makes it finetune's own
METRICS = {
    # name: (task, higher is better)
    "accuracy": ("classification", True),
    "f1_macro": ("classification", True),
    "mse": ("regression", False),
    "pearson": ("regression", True),
}


class DataError(MmbertError, ValueError):
    """Bad input data; the message names the file, line and column."""


@dataclass
class Example:
    text: str
    text_pair: str | None
    label: Any
    where: str  # "file:line" for error messages


# ---------------------------------------------------------------------------------------------- data
def _read_file(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs from a CSV / TSV / JSONL / JSON file; `where` is `path:line`."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            rows = iter_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
            return [(f"{path}:{line}", row) for line, row in rows]
        if suffix in (".jsonl", ".ndjson"):
            out = []
            for line, obj in iter_jsonl(path, unique_keys=True):
                if not isinstance(obj, dict):
                    raise DataError(
                        f"{path}:{line}: expected a JSON object per line, got {type(obj).__name__}"
                    )
                out.append((f"{path}:{line}", obj))
            return out
        if suffix == ".json":
            data = read_json(path, unique_keys=True)
            if isinstance(data, dict) and "data" in data:
                data = data["data"]
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DataError(f"{path}: expected a list of objects (or {{'data': [...]}})")
            return [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    except BadInputError as e:
        raise DataError(str(e)) from None
    raise DataError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv, .jsonl or .json)")


def _read_hf(name: str, split: str) -> list[tuple[str, dict]]:
    try:
        import datasets  # optional (the `hf` extra): only HF dataset names need it
    except ImportError as e:  # pragma: no cover - datasets is in the hf/dev extras
        raise DataError(f"{name}: not a file, and loading HF datasets needs `pip install datasets`") from e
    try:
        ds = datasets.load_dataset(name, split=split)
    except ValueError as e:  # an unknown split
        raise DataError(f"{name}: cannot load split {split!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds (offline, missing, bad files)
        raise DataError(f"{name}: not a file, and not a dataset `datasets` can load: {e}") from e
    return [(f"{name}[{split}][{i}]", row) for i, row in enumerate(ds)]


def hf_splits(name: str) -> list[str]:
    """The split names of an HF dataset (for picking a dev split)."""
    import datasets  # optional (the `hf` extra): only HF dataset names need it

    return list(datasets.get_dataset_split_names(name))


FILE_TYPES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")


def read_records(spec: str, split: str = "train") -> tuple[str, list[tuple[str, dict]]]:
    """Records of one split from a file, a local dataset directory or an HF dataset name.

    `spec` is a .csv/.tsv/.jsonl/.json file; or a directory or Hub name that `datasets.load_dataset`
    reads (e.g. a folder with train.jsonl and validation.jsonl), optionally as `name:split`.
    """
    path = Path(spec)
    if path.is_file():
        return str(path), _read_file(path)
    if path.suffix.lower() in FILE_TYPES and not path.exists():
        raise DataError(f"{path}: no such file")
    name, _, explicit = spec.rpartition(":") if ":" in spec and not path.exists() else (spec, "", "")
    split = explicit or split
    return f"{name}[{split}]", _read_hf(name, split)


def to_examples(
    name: str,
    records: list[tuple[str, dict]],
    text_column: str,
    label_column: str,
    pair_column: str | None,
) -> list[Example]:
    """Check the columns and texts of one split and turn its records into examples."""
    if not records:
        raise DataError(f"{name}: the split is empty (no rows)")
    columns = set(records[0][1])
    for col in (text_column, label_column, pair_column):
        if col is not None and col not in columns:
            raise DataError(f"{name}: missing column {col!r}; the columns are {sorted(columns)}")
    out = []
    for where, r in records:
        for col in (text_column, label_column, pair_column):
            if col is not None and col not in r:
                raise DataError(f"{where}: missing column {col!r}")
        text = r[text_column]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: column {text_column!r} must be a non-empty string, got {text!r}")
        pair = None
        if pair_column is not None:
            pair = r[pair_column]
            if not isinstance(pair, str) or not pair.strip():
                raise DataError(f"{where}: column {pair_column!r} must be a non-empty string, got {pair!r}")
        label = r[label_column]
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError(f"{where}: column {label_column!r} is empty")
        out.append(Example(text, pair, label, where))
    return out


def _as_number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    return None


def infer_task(examples: list[Example]) -> str:
    """Regression when every label is a number and one is not an integer; classification otherwise."""
    numbers = [_as_number(e.label) for e in examples]
    if all(n is not None for n in numbers) and any(not float(n).is_integer() for n in numbers):
        return "regression"
    return "classification"


def label_space(examples: list[Example], name: str, label_column: str) -> dict[int, str]:
    """id2label for classification.

    Integer labels (JSON integers, integral floats, or digit strings from CSV) that are exactly
    0..K-1 keep their value as the class id; other integers are numbered in sorted order; string
    labels are numbered in sorted order.
    """
    for e in examples:
        if isinstance(e.label, bool) or not isinstance(e.label, str | int | float):
            raise DataError(
                f"{e.where}: column {label_column!r}: a classification label must be a string or an integer, "
                f"got {e.label!r} ({type(e.label).__name__})"
            )
        if isinstance(e.label, float) and not e.label.is_integer():
            raise DataError(
                f"{e.where}: column {label_column!r}: {e.label!r} is not a class label; "
                "for numeric targets use --task regression"
            )
    typed = {"str" if isinstance(e.label, str) else "number" for e in examples}
    if len(typed) > 1:
        first_num = next(e for e in examples if not isinstance(e.label, str))
        first_str = next(e for e in examples if isinstance(e.label, str))
        raise DataError(
            f"{name}: column {label_column!r} mixes numeric labels ({first_num.where}: {first_num.label!r}) "
            f"and string labels ({first_str.where}: {first_str.label!r})"
        )
    values = sorted({label_key(e.label) for e in examples})
    if len(values) < 2:
        raise DataError(f"{name}: column {label_column!r} has a single label {values}; need at least two")
    if all(_is_int(v) for v in values):
        ints = sorted(int(v) for v in values)
        values = [str(v) for v in ints]
    return dict(enumerate(values))


def label_counts(examples: list[Example], id2label: dict[int, str]) -> dict[str, int]:
    """How many examples each class has, in class-id order."""
    counts = dict.fromkeys(id2label.values(), 0)
    for e in examples:
        counts[label_key(e.label)] += 1
    return counts


def log_label_counts(examples: list[Example], id2label: dict[int, str], name: str) -> dict[str, int]:
    """Say which classes training will learn, with counts, before it starts: a label set that is not
    the one meant (a text's comma read as a label) shows here; a class seen once is warned about."""
    counts = label_counts(examples, id2label)
    logger.info("%d labels in %s: %s", len(counts), name, ", ".join(f"{k!r} {n}" for k, n in counts.items()))
    rare = [k for k, n in counts.items() if n == 1]
    if rare:
        logger.warning(
            "%s: labels seen once: %s; is the label column right?", name, ", ".join(map(repr, rare))
        )
    return counts


def _is_int(v: str) -> bool:
    return v.lstrip("-").isdigit()


def label_key(label: Any) -> str:
    """The string a label is known by in id2label (1, 1.0 and "1" are the same class)."""
    if isinstance(label, float):
        return str(int(label))
    return str(label).strip()


def encode_labels(
    examples: list[Example], task: str, label2id: dict[str, int] | None, label_column: str
) -> list:
    out = []
    for e in examples:
        if task == "regression":
            value = _as_number(e.label)
            if value is None or not math.isfinite(value):
                raise DataError(
                    f"{e.where}: column {label_column!r}: a regression label must be a number, got {e.label!r}"
                )
            out.append(value)
        else:
            assert label2id is not None
            key = label_key(e.label)
            if key not in label2id:
                raise DataError(
                    f"{e.where}: column {label_column!r}: label {e.label!r} does not occur in the training "
                    f"split (labels: {sorted(label2id)})"
                )
            out.append(label2id[key])
    return out


# ---------------------------------------------------------------------------------------------- batches
@dataclass
class Encoded:
    ids: list[list[int]]
    labels: list


def tokenize(tokenizer, examples: list[Example], max_length: int) -> list[list[int]]:
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, add_special_tokens=True)
    return enc["input_ids"]


def batches(n: int, batch_size: int, rng: random.Random | None):
    order = list(range(n))
    if rng is not None:
        rng.shuffle(order)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


# ---------------------------------------------------------------------------------------------- metrics
def classification_metrics(pred: list[int], gold: list[int], num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 (over the classes that occur in gold or pred)."""
    n = len(gold)
    acc = sum(p == g for p, g in zip(pred, gold, strict=True)) / n
    f1s = []
    for c in range(num_labels):
        tp = sum(p == c and g == c for p, g in zip(pred, gold, strict=True))
        fp = sum(p == c and g != c for p, g in zip(pred, gold, strict=True))
        fn = sum(p != c and g == c for p, g in zip(pred, gold, strict=True))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": acc, "f1_macro": sum(f1s) / len(f1s)}


def regression_metrics(pred: list[float], gold: list[float]) -> dict[str, float]:
    p = torch.tensor(pred, dtype=torch.float64)
    g = torch.tensor(gold, dtype=torch.float64)
    mse = float(((p - g) ** 2).mean())
    pc, gc = p - p.mean(), g - g.mean()
    denom = float(pc.norm() * gc.norm())
    pearson = float((pc * gc).sum()) / denom if denom > 0 else 0.0
    return {"mse": mse, "pearson": pearson}


@torch.no_grad()
def evaluate(model, data: Encoded, task: str, batch_size: int, device: torch.device) -> dict[str, float]:
    """Loss and task metrics of `model` on an encoded split."""
    was_training = model.training
    model.eval()
    preds: list = []
    loss_sum = 0.0
    for idx in batches(len(data.ids), batch_size, None):
        labels = torch.tensor([data.labels[i] for i in idx], device=device)
        out = model(
            **PackedBatch.from_sequences([data.ids[i] for i in idx]).model_inputs(device), labels=labels
        )
        loss_sum += float(out.loss) * len(idx)
        logits = out.logits.float()
        preds += logits[:, 0].tolist() if task == "regression" else logits.argmax(-1).tolist()
    model.train(was_training)
    metrics = (
        regression_metrics(preds, data.labels)
        if task == "regression"
        else classification_metrics(preds, data.labels, model.config.num_labels)
    )
    return {"loss": loss_sum / len(data.ids), **metrics}


# ---------------------------------------------------------------------------------------------- training
def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # No weight decay on norms and biases: pre-training's rule (`mmbert.optim.parameter_groups`).
    decay, no_decay = parameter_groups(model)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def resolve_model(name: str) -> str:
    """A local model directory as is; a Hub name (e.g. jhu-clsp/mmBERT-small) downloaded or from the cache."""
    if Path(name).is_dir():
        return name
    if Path(name).is_absolute() or name.startswith(".") or Path(name).exists():
        raise DataError(f"--model {not_found(name, 'model directory')}")
    try:
        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated repo, ...
        raise DataError(f"--model {name}: not a directory, and not downloadable from the Hub: {e}") from e


@dataclass
class FitSettings:
    """How `fit` trains: the optimizer, schedule, evaluation and stopping settings."""

    batch_size: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs
    eval_every: int | None = None  # steps; default once per epoch
    patience: int = 3  # evaluations without improvement before stopping
    seed: int = 0
    progress: bool = True
    keep_best: bool = True  # end with the best dev checkpoint (else the last step's weights)

    @classmethod
    def of(cls, options: Any) -> FitSettings:
        """The fields of this class that `options` has (FinetuneOptions: all but keep_best)."""
        return cls(
            **{name: getattr(options, name) for name in cls.__dataclass_fields__ if hasattr(options, name)}
        )


@dataclass
class Fitted:
    """What `fit` did: the dev history (step 0 = before training), the best step, the training losses."""

    history: list[dict[str, Any]]
    best_step: int
    losses: list[float]
    steps: int
    seconds: float


def fit(
    model: torch.nn.Module,
    n_train: int,
    train_batch: Callable[[list[int]], dict[str, Any]],
    evaluate_dev: Callable[[torch.nn.Module], dict[str, float]],
    metric: str,
    higher_better: bool,
    settings: FitSettings,
    device: torch.device,
) -> Fitted:
    """The one fine-tuning loop, for every head: `model(**train_batch(indices)).loss` is minimized.

    AdamW with linear warmup and decay; the dev split (`evaluate_dev`, which returns `metric`) is evaluated
    before training, every `eval_every` steps and at the end; training stops after `patience`
    evaluations without improvement. The best weights by `metric` are loaded back into `model`
    (`keep_best`), or the last step's are kept, when dev only watches and must not pick.
    """
    steps_per_epoch = math.ceil(n_train / settings.batch_size)
    total = settings.max_steps or max(1, math.ceil(settings.epochs * steps_per_epoch))
    eval_every = settings.eval_every or steps_per_epoch
    warmup = int(settings.warmup_ratio * total)
    opt = _optimizer(model, settings.lr, settings.weight_decay)
    rng = random.Random(settings.seed)
    model.train()

    history: list[dict[str, Any]] = []
    before = evaluate_dev(model)
    history.append({"step": 0, **before})
    keep = settings.keep_best
    best_value, best_step, best_state = before[metric], 0, copy.deepcopy(model.state_dict()) if keep else None
    bad_evals, step, losses = 0, 0, []
    bar = tqdm(total=total, desc="finetune", unit="step", disable=not settings.progress)
    t0 = time.perf_counter()
    stop = False
    while not stop:
        for idx in batches(n_train, settings.batch_size, rng):
            for g in opt.param_groups:
                g["lr"] = settings.lr * _lr_factor(step, warmup, total)
            batch = train_batch(idx)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if step % eval_every == 0 or step == total:
                m = evaluate_dev(model)
                recent = losses[-eval_every:]
                history.append({"step": step, "train_loss": sum(recent) / len(recent), **m})
                improved = m[metric] > best_value if higher_better else m[metric] < best_value
                logger.info(
                    "step %d | train loss %.4f |%s dev %s %.4f%s",
                    step,
                    history[-1]["train_loss"],
                    f" dev loss {m['loss']:.4f} |" if "loss" in m else "",
                    metric,
                    m[metric],
                    " (best)" if improved and keep else "",
                )
                if improved:
                    best_value, best_step, bad_evals = m[metric], step, 0
                    best_state = copy.deepcopy(model.state_dict()) if keep else None
                else:
                    bad_evals += 1
                    if bad_evals >= settings.patience:
                        logger.info("early stop: no dev %s improvement in %d evaluations", metric, bad_evals)
                        stop = True
            if stop or step >= total:
                stop = True
                break
    bar.close()
    if keep:
        model.load_state_dict(best_state)
    model.eval()
    return Fitted(history, best_step if keep else step, losses, step, round(time.perf_counter() - t0, 2))


@dataclass
class FinetuneOptions:
    """What `finetune` trains on and how (the `mmbert finetune` options, one field each)."""

    # Each field's comment is also its option's help (`mmbert finetune --help`).
    model: str  # HF-format mmBERT: a directory (an export) or a Hub name (jhu-clsp/mmBERT-small)
    train: str  # training data: .csv/.tsv/.jsonl/.json, a dataset directory or HF name (NAME[:SPLIT])
    out: str  # output directory (HF model + tokenizer + finetune.json)
    tokenizer: str | None = None  # tokenizer directory (default: the model's)
    dev: str | None = None  # dev data as train (default: its validation/dev/test split, else dev_fraction)
    test: str | None = None  # optional test data, evaluated with the best checkpoint
    text_column: str = "text"  # the column holding the text
    text_pair_column: str | None = None  # second text of a pair (e.g. text_pair)
    label_column: str = "label"  # the column holding the label
    task: str = "auto"  # one of TASKS: auto decides from the labels
    metric: str | None = None  # early-stopping metric (default: accuracy, or pearson for regression)
    epochs: float = 3.0  # passes over the training data
    max_steps: int | None = None  # stop after this many steps (overrides epochs)
    batch_size: int = 16  # examples per step
    lr: float = 5e-5  # peak learning rate
    weight_decay: float = 0.01  # AdamW weight decay (not on norms and biases)
    warmup_ratio: float = 0.1  # fraction of the steps warming the learning rate up
    max_length: int = 512  # tokens per example (longer is truncated)
    eval_every: int | None = None  # evaluate every N steps (default: each epoch)
    patience: int = 3  # stop after N evaluations without improvement
    dev_fraction: float = 0.1  # the part of train held out as dev when there is no dev split
    classifier_pooling: str | None = None  # mean or cls: overrides the model's classifier_pooling
    seed: int = 0  # seed of the head's initialization and the data order
    device: str | None = None  # default: cuda when available
    progress: bool = True
    overwrite: bool = False  # replace `out` even when it is an input or a directory finetune did not write

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(sorted(METRICS))}, got {self.metric!r}")
        if self.classifier_pooling not in (None, "mean", "cls"):
            raise ValueError(f"classifier_pooling must be mean or cls, got {self.classifier_pooling!r}")
        limits = {
            "epochs": (self.epochs > 0, "> 0"),
            "max_steps": (self.max_steps is None or self.max_steps >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "lr": (self.lr >= 0, ">= 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "warmup_ratio": (0 <= self.warmup_ratio < 1, "in [0, 1)"),
            "max_length": (self.max_length >= 2, ">= 2 (<bos> and <eos> take two)"),
            "eval_every": (self.eval_every is None or self.eval_every >= 1, ">= 1"),
            "patience": (self.patience >= 1, ">= 1"),
            "dev_fraction": (0 < self.dev_fraction < 1, "in (0, 1)"),
        }
        for name, (ok, rule) in limits.items():
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")


@dataclass
class FinetuneResult:
    """What `finetune` did; `out/finetune.json` holds the same and the options."""

    out: Path
    task: str
    metric: str
    labels: dict[int, str]
    steps: int
    seconds: float
    best_step: int
    history: list[dict[str, Any]]  # dev metrics per evaluation, step 0 = before training
    train_losses: list[float]
    test: dict[str, float] | None = None  # test metrics of the best checkpoint

    @property
    def before(self) -> dict[str, Any]:
        return self.history[0]

    @property
    def best(self) -> dict[str, Any]:
        return next(h for h in self.history if h["step"] == self.best_step)


def load_splits(options: FinetuneOptions) -> tuple[list[Example], list[Example], list[Example] | None, str]:
    """Train, dev and (optional) test examples, and a note on where dev came from."""
    cols = (options.text_column, options.label_column, options.text_pair_column)
    train_name, train_records = read_records(options.train, "train")
    train = to_examples(train_name, train_records, *cols)
    note = f"dev: {options.dev}"
    if options.dev is not None:
        dev_name, dev_records = read_records(options.dev, "validation")
        dev = to_examples(dev_name, dev_records, *cols)
    else:
        dev_split = None
        if not Path(options.train).is_file() and ":" not in options.train:
            dev_split = next(
                (s for s in ("validation", "dev", "test") if s in hf_splits(options.train)), None
            )
        if dev_split is not None:
            dev_name, dev_records = read_records(f"{options.train}:{dev_split}")
            dev = to_examples(dev_name, dev_records, *cols)
            note = f"dev: {dev_name}"
        else:
            if len(train) < 2:
                raise DataError(f"{train_name}: need at least two rows to hold out a dev split")
            rng = random.Random(options.seed)
            shuffled = train[:]
            rng.shuffle(shuffled)
            n_dev = max(1, int(len(train) * options.dev_fraction))
            dev, train = shuffled[:n_dev], shuffled[n_dev:]
            note = f"dev: {n_dev} rows held out of {train_name} (--dev-fraction {options.dev_fraction})"
    test = None
    if options.test is not None:
        test_name, test_records = read_records(options.test, "test")
        test = to_examples(test_name, test_records, *cols)
    return train, dev, test, note


def finetune(options: FinetuneOptions) -> FinetuneResult:
    """Fine-tune `options.model` on `options.train` (module docstring) and save the best checkpoint."""
    inputs = (options.model, options.tokenizer, options.train, options.dev, options.test)
    check_output(
        options.out,
        inputs,
        is_own=lambda d: (d / SUMMARY).is_file(),
        overwrite=options.overwrite,
        replaced=True,
    )
    random.seed(options.seed)
    torch.manual_seed(options.seed)
    device = resolve_device(options.device)

    train, dev, test, dev_note = load_splits(options)
    task = infer_task(train) if options.task == "auto" else options.task
    metric = options.metric or ("accuracy" if task == "classification" else "pearson")
    if METRICS[metric][0] != task:
        raise DataError(f"--metric {metric} is a {METRICS[metric][0]} metric, but the task is {task}")
    higher_better = METRICS[metric][1]

    overrides: dict[str, Any] = {}
    label2id = None
    if task == "classification":
        id2label = label_space(train, options.train, options.label_column)
        label2id = {v: k for k, v in id2label.items()}
        log_label_counts(train, id2label, options.train)
        overrides.update(id2label=id2label, problem_type="single_label_classification")
    else:
        overrides.update(num_labels=1, id2label={0: "score"}, problem_type="regression")
    if options.classifier_pooling:
        overrides["classifier_pooling"] = options.classifier_pooling
    splits = {"train": train, "dev": dev} | ({"test": test} if test is not None else {})
    labels = {k: encode_labels(v, task, label2id, options.label_column) for k, v in splits.items()}

    model_dir = resolve_model(options.model)
    tokenizer = load_tokenizer(options.tokenizer or model_dir, adapt=True)
    encoded = {k: Encoded(tokenize(tokenizer, v, options.max_length), labels[k]) for k, v in splits.items()}
    model = MmBertForSequenceClassification.from_pretrained(model_dir, device=device, **overrides)
    check_loaded_tokenizer(model.config, tokenizer, model_dir, options.tokenizer or model_dir)
    model.train()
    logger.info(
        "%s with %d labels: train %d, %s (%d); metric %s",
        task,
        model.config.num_labels,
        len(train),
        dev_note,
        len(dev),
        metric,
    )

    def train_batch(idx: list[int]) -> dict[str, Any]:
        batch = PackedBatch.from_sequences([encoded["train"].ids[i] for i in idx]).model_inputs(device)
        return {**batch, "labels": torch.tensor([encoded["train"].labels[i] for i in idx], device=device)}

    fitted = fit(
        model,
        len(train),
        train_batch,
        lambda m: evaluate(m, encoded["dev"], task, options.batch_size, device),
        metric,
        higher_better,
        FitSettings.of(options),
        device,
    )
    history, best_step, losses, step = fitted.history, fitted.best_step, fitted.losses, fitted.steps
    out = Path(options.out)
    summary: dict[str, Any] = {
        "task": task,
        "metric": metric,
        "labels": model.config.id2label,
        "steps": step,
        "seconds": fitted.seconds,
        "best_step": best_step,
        "best": next(h for h in history if h["step"] == best_step),
        "history": history,
        "train_losses": losses,
        "args": asdict(options),
    }
    if test is not None:
        summary["test"] = evaluate(model, encoded["test"], task, options.batch_size, device)
    with atomic_dir(out) as tmp:  # the whole output, or the old one if this is interrupted
        model.save_pretrained(tmp)
        write_tokenizer_files(tokenizer, tmp)
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return FinetuneResult(
        out=out,
        task=task,
        metric=metric,
        labels=model.config.id2label,
        steps=step,
        seconds=summary["seconds"],
        best_step=best_step,
        history=history,
        train_losses=losses,
        test=summary.get("test"),
    )
