"""`mmbert merge`: TIES, linear and EMA merging of HF-format checkpoints, streamed tensor by tensor.

mmBERT-base's released model is a TIES merge of its three decay variants; mmBERT-small's is an
exponentially weighted average of checkpoints along one decay run. This module does both, plus a
plain weighted average, on Hugging Face `ModernBertForMaskedLM` directories (ours, or written by
transformers, including the released mmBERT).

Methods (x_i: the models' tensors, b: the base's, w_i >= 0: the weights):

- `ties` (Yadav et al. 2023, with mergekit's semantics): task vectors d_i = x_i - b. *Trim*: per
  tensor, keep the k = floor(density * numel) entries of d_i with the largest magnitude, zero the
  rest (entries tied at the k-th magnitude are kept in row-major order, so the result is
  deterministic; k = 0 trims the whole tensor). *Elect*: the sign of each entry is the sign of
  sum_i w_i * trim(d_i), with 0 counting as +. *Merge*: the mean of the w_i * trim(d_i) whose sign
  equals the elected one, divided by the sum of the weights of those that agree (mergekit's
  `normalize`); an entry where no vector agrees (all trimmed) stays at the base. Result: b + merge.
- `linear`: sum_i w_i x_i / sum_i w_i.
- `ema`: checkpoints c_1..c_n of one run, oldest first, averaged with weights that decay
  exponentially with age: w_t = beta^(n-t) / sum_s beta^(n-s), beta = 0.5^(1 / half_life) (half-life
  in checkpoints) or given as `--decay`. This is the bias-corrected EMA of the recursion
  e_t = beta e_{t-1} + (1 - beta) c_t from e_0 = 0, i.e. e_n / (1 - beta^n); beta = 0 is the newest
  checkpoint alone.

Why streaming: a base-size model is 1.2 GB in fp32 and larger encoders are worse, so each output
tensor is produced in flat chunks of `chunk_elements` from every input and written to the output file
as it comes; nothing ever holds a whole model. The safetensors files are read with plain positioned
reads rather than memory maps: a mapped file's touched pages count in the process's resident memory
until it is unmapped, which for four inputs would be four models. TIES finds each task vector's
magnitude threshold with two streamed histogram passes instead of a sort, so it too needs only a few
chunks per input. `bench/merge_memory.py` measures the peak.

Tied weights: with `tie_word_embeddings` (ModernBERT's default) `decoder.weight` is the embedding
matrix; transformers leaves it out of the file. It is read from whichever of the two names an input
has, merged once, and written as `model.embeddings.tok_embeddings.weight` only, as transformers does.

Config and tokenizer come from the reference input: the base for TIES, the first model for linear,
the newest checkpoint for EMA (its tokenizer files, or if it has none the first input's that has).
Every input that has a tokenizer must have the same one (`tokenizer.json` by
`mmbert.tokenizer.fingerprint_sha256`, else the sentencepiece/vocab files). An input without tokenizer files is
accepted with a warning, because training exports are often written without one; the
embedding-shape check still guarantees the vocabulary size, not the vocabulary.

Inputs: `model.safetensors`, sharded `model.safetensors.index.json`, or `pytorch_model.bin` (sharded
too; read with `torch.load(weights_only=True)`, memory-mapped where possible but not streamed). The
files are found and parsed by `mmbert.weights`; the positioned reads are here. An input may also be a
training checkpoint file (Composer `.pt`, such as mmBERT's released raw checkpoints), read by
`mmbert.composer` (memory-mapped, never running pickled code) with its config inferred; it has no
tokenizer, so the output takes one from a directory input.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

from mmbert import __version__
from mmbert.composer import infer_config, is_checkpoint_file, read_composer_checkpoint
from mmbert.config import MmBertConfig, read_hf_config
from mmbert.errors import MmbertError
from mmbert.hf import check_finite, check_tokenizer_fits
from mmbert.io import atomic_dir, check_output
from mmbert.tokenizer import (
    TOKENIZER_FILE,
    TOKENIZER_FILES,
    TOKENIZER_IDENTITY_FILES,
    fingerprint_sha256,
    read_tokenizer_files,
)
from mmbert.weights import (
    SAFETENSORS,
    SAFETENSORS_DTYPES,
    SafetensorsWriter,
    TensorInfo,
    find_weights,
    load_bin,
    read_safetensors_header,
)

logger = logging.getLogger(__name__)

METHODS = ("ties", "linear", "ema")
# 4M elements: 16 MB per fp32 temporary, so the ~10 temporaries of a TIES chunk stay small next to
# a model, while each torch op still runs long enough to amortize Python's per-op overhead.
CHUNK_ELEMENTS = 1 << 22
EMBEDDING_KEY = "model.embeddings.tok_embeddings.weight"
DECODER_KEY = "decoder.weight"


class MergeError(MmbertError, ValueError):
    """Inputs that cannot be merged; the message names the file, key or argument."""


# ----------------------------------------------------------------------------------------------
# Tensor readers: one interface over in-memory dicts, safetensors files and pytorch_model.bin.


class TensorReader:
    """Read access to one checkpoint's tensors as flat element ranges (row-major order)."""

    name: str

    def infos(self) -> dict[str, TensorInfo]:
        raise NotImplementedError

    def read(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Elements [start, stop) of the flattened tensor `key`, as a 1-D tensor in its stored dtype."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files."""


class DictReader(TensorReader):
    def __init__(self, tensors: Mapping[str, torch.Tensor], name: str = "<tensors>") -> None:
        self.name = name
        self._tensors = dict(tensors)

    def infos(self) -> dict[str, TensorInfo]:
        return {k: TensorInfo(tuple(t.shape), t.dtype) for k, t in self._tensors.items()}

    def read(self, key: str, start: int, stop: int) -> torch.Tensor:
        return self._tensors[key].reshape(-1)[start:stop]


@dataclass
class _StEntry:
    path: Path
    info: TensorInfo
    offset: int  # absolute byte offset of the tensor's data in the file


class SafetensorsReader(TensorReader):
    """One or several (sharded) safetensors files, read with positioned reads (no memory map)."""

    def __init__(
        self, files: Sequence[Path], name: str, key_to_file: Mapping[str, Path] | None = None
    ) -> None:
        self.name = name
        self._entries: dict[str, _StEntry] = {}
        self._handles: dict[Path, BinaryIO] = {}
        for path in files:
            header, data_start = read_safetensors_header(path)
            for key, meta in header.items():
                if key == "__metadata__":
                    continue
                if key_to_file is not None and key_to_file.get(key) != path:
                    continue
                if meta["dtype"] not in SAFETENSORS_DTYPES:
                    raise MergeError(f"{path}: tensor {key!r} has unsupported dtype {meta['dtype']}")
                info = TensorInfo(tuple(meta["shape"]), SAFETENSORS_DTYPES[meta["dtype"]])
                self._entries[key] = _StEntry(path, info, data_start + meta["data_offsets"][0])
        if key_to_file is not None:
            missing = sorted(set(key_to_file) - set(self._entries))
            if missing:
                raise MergeError(f"{name}: index lists tensors absent from their shard, e.g. {missing[:3]}")

    def infos(self) -> dict[str, TensorInfo]:
        return {k: e.info for k, e in self._entries.items()}

    def read(self, key: str, start: int, stop: int) -> torch.Tensor:
        e = self._entries[key]
        itemsize = e.info.dtype.itemsize
        n = stop - start
        if n <= 0:
            return torch.empty(0, dtype=e.info.dtype)
        f = self._handles.get(e.path)
        if f is None:
            f = self._handles[e.path] = open(e.path, "rb")  # noqa: SIM115 (closed in close())
        # Read raw bytes into an uninitialized tensor, then reinterpret (bf16 has no numpy dtype).
        buf = torch.empty(n * itemsize, dtype=torch.uint8)
        f.seek(e.offset + start * itemsize)
        if f.readinto(buf.numpy()) != n * itemsize:
            raise MergeError(f"{e.path}: truncated data for tensor {key!r}")
        return buf.view(e.info.dtype)

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()


class AliasReader(TensorReader):
    """A reader whose keys are renamed (`decoder.weight` -> embedding) and/or dropped."""

    def __init__(self, inner: TensorReader, rename: Mapping[str, str], drop: set[str]) -> None:
        self.name = inner.name
        self._inner = inner
        self._to_inner = {rename.get(k, k): k for k in inner.infos() if k not in drop}

    def infos(self) -> dict[str, TensorInfo]:
        inner = self._inner.infos()
        return {k: inner[ik] for k, ik in self._to_inner.items()}

    def read(self, key: str, start: int, stop: int) -> torch.Tensor:
        return self._inner.read(self._to_inner[key], start, stop)

    def close(self) -> None:
        self._inner.close()


def _raw_reader(directory: Path) -> TensorReader:
    weights = find_weights(directory)
    if weights.format == "safetensors":
        return SafetensorsReader(weights.files, str(directory), weights.key_to_file)
    tensors: dict[str, torch.Tensor] = {}
    for path in weights.files:
        # .bin files cannot be read by range: load them whole (memory-mapped where the zip
        # format allows it, so untouched tensors stay on disk).
        tensors.update(load_bin(path, mmap=True))
    return DictReader(tensors, name=str(directory))


def open_checkpoint(directory: str | Path) -> tuple[TensorReader, MmBertConfig | None]:
    """An HF model directory, or a training checkpoint file, as a TensorReader with the tied decoder
    folded into the embedding key; for a checkpoint file, also its config (`mmbert.composer`: shapes
    from the tensors, the rest from the preset whose shapes match)."""
    directory = Path(directory)
    inferred = None
    try:
        if is_checkpoint_file(directory):
            composer = read_composer_checkpoint(directory)
            inferred = infer_config(composer)
            config = inferred.to_hf_dict()
            raw: TensorReader = DictReader(composer.tensors, name=str(directory))
        else:
            config = read_hf_config(directory)
            raw = _raw_reader(directory)
    except (OSError, ValueError) as e:  # a missing or unreadable file (`WeightsError` is a ValueError)
        raise MergeError(str(e)) from e
    return _fold_tied_decoder(raw, config), inferred


def _fold_tied_decoder(raw: TensorReader, config: dict) -> TensorReader:
    keys = set(raw.infos())
    tied = config.get("tie_word_embeddings", True)
    if tied and DECODER_KEY in keys:
        # transformers writes only the embedding; an input that wrote both (or only the decoder)
        # holds one matrix under two names: keep one, named as transformers names it.
        if EMBEDDING_KEY in keys:
            return AliasReader(raw, rename={}, drop={DECODER_KEY})
        return AliasReader(raw, rename={DECODER_KEY: EMBEDDING_KEY}, drop=set())
    return raw


# ----------------------------------------------------------------------------------------------
# Merge arithmetic. Every method works on flat chunks so that in-memory and streamed merges share
# one code path: the dict-level API below wraps its tensors in DictReaders and runs the same code.


@dataclass
class _Trim:
    """Which entries of one task vector survive TIES trimming: |d| > threshold, plus the first `quota`
    entries (in row-major order) with |d| == threshold. Consumed chunk by chunk: `quota` counts down."""

    threshold: float
    quota: int

    @classmethod
    def keep_all(cls) -> _Trim:
        return cls(threshold=-1.0, quota=0)  # every magnitude is > -1

    @classmethod
    def keep_none(cls) -> _Trim:
        return cls(threshold=math.inf, quota=0)  # nothing is > inf, and no tied entry is kept

    @classmethod
    def find(cls, magnitude_chunks: Callable[[], Iterator[torch.Tensor]], numel: int, k: int) -> _Trim:
        """The trim that keeps the k largest of `numel` magnitudes (fp32, >= 0), given a function
        that streams them chunk by chunk in row-major order (called twice).

        Non-negative floats order like their bit patterns read as integers, so the k-th largest
        value is found digit by digit: a histogram of the high 16 bits picks the bucket that holds
        it, a histogram of the low 16 bits within that bucket gives its exact value. Memory stays at
        two small histograms however large the tensor (a sort or topk of the 256k x 768 embedding
        would take gigabytes), at the price of reading the task vector twice.
        """
        if k >= numel:
            return cls.keep_all()
        if k <= 0:
            return cls.keep_none()
        high = torch.zeros(1 << 15, dtype=torch.int64)  # sign bit is 0: high half is < 2^15
        for m in magnitude_chunks():
            high += torch.bincount(m.view(torch.int32) >> 16, minlength=1 << 15)
        hi, above = _bucket_of_kth_largest(high, k)
        low = torch.zeros(1 << 16, dtype=torch.int64)
        for m in magnitude_chunks():
            bits = m.view(torch.int32)
            low += torch.bincount(bits[(bits >> 16) == hi] & 0xFFFF, minlength=1 << 16)
        lo, above_in_bucket = _bucket_of_kth_largest(low, k - above)
        threshold = torch.tensor([(hi << 16) | lo], dtype=torch.int32).view(torch.float32).item()
        return cls(threshold=threshold, quota=k - above - above_in_bucket)

    def mask(self, magnitudes: torch.Tensor) -> torch.Tensor:
        keep = magnitudes > self.threshold
        if self.quota > 0:
            tied = torch.nonzero(magnitudes == self.threshold).flatten()[: self.quota]
            keep[tied] = True
            self.quota -= tied.numel()
        return keep


def _bucket_of_kth_largest(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """(bucket holding the k-th largest item, number of items in higher buckets) from a histogram."""
    from_top = counts.flip(0).cumsum(0)  # from_top[j]: items in the j+1 highest buckets
    j = int(torch.searchsorted(from_top, k))  # first j with from_top[j] >= k
    bucket = counts.numel() - 1 - j
    return bucket, int(from_top[j]) - int(counts[bucket])


def _ties_chunk(base: torch.Tensor, deltas: list[torch.Tensor], weights: Sequence[float], trims: list[_Trim]):
    """One chunk of a TIES merge: fp32 base chunk + fp32 task-vector chunks (consumed) -> merged chunk."""
    # Trim and weight in place: deltas[i] becomes w_i * trim(d_i). Everything is elementwise.
    for d, w, t in zip(deltas, weights, trims, strict=True):
        d.masked_fill_(~t.mask(d.abs()), 0.0).mul_(w)
    elected = deltas[0].clone()
    for d in deltas[1:]:
        elected += d
    # The elected sign as +-1 (a sum of 0 counts as +).
    elected = torch.where(elected >= 0, 1.0, -1.0)
    total = torch.zeros_like(base)
    weight_sum = torch.zeros_like(base)
    for d, w in zip(deltas, weights, strict=True):
        # Agreeing entries have d * elected > 0; trimmed (zero) entries never agree.
        agree = torch.mul(d, elected) > 0
        total.addcmul_(d, agree)
        weight_sum.add_(agree, alpha=w)
    # No agreeing vector: the total is 0, and dividing by 1 leaves the entry at the base.
    weight_sum.masked_fill_(weight_sum == 0, 1.0)
    return total.div_(weight_sum).add_(base)


def _chunks(numel: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, numel, chunk):
        yield start, min(start + chunk, numel)


@dataclass
class MergePlan:
    """What to compute: method, one weight per model (normalized for linear/EMA), TIES density."""

    method: str
    weights: list[float]
    density: float = 1.0
    chunk_elements: int = CHUNK_ELEMENTS
    extra: dict = field(default_factory=dict)


def _read(reader: TensorReader, key: str, start: int, stop: int) -> torch.Tensor:
    """A float32 chunk of an input's tensor, checked finite (`mmbert.hf.check_finite`): a broken input
    would make a broken merge without a word."""
    values = reader.read(key, start, stop).float()
    check_finite({key: values}, reader.name)
    return values


def _merge_tensor(
    key: str, info: TensorInfo, base: TensorReader | None, models: Sequence[TensorReader], plan: MergePlan
) -> Iterator[torch.Tensor]:
    """Yield the merged tensor `key` as consecutive flat chunks in dtype `info.dtype`."""
    numel, chunk = info.numel, plan.chunk_elements
    if not (info.dtype.is_floating_point):
        # Integer/bool buffers are not averaged: they must agree, and are copied.
        ref = base if base is not None else models[0]
        for start, stop in _chunks(numel, chunk):
            value = ref.read(key, start, stop)
            for m in models:
                if not torch.equal(m.read(key, start, stop), value):
                    raise MergeError(f"non-float tensor {key!r} differs between {ref.name} and {m.name}")
            yield value.clone()
        return
    if plan.method == "ties":
        assert base is not None
        k = int(plan.density * numel)
        trims = []
        for m in models:
            if k >= numel or k <= 0:
                # Keep everything / nothing: no threshold to find, so skip the first pass.
                trims.append(_Trim.keep_all() if k > 0 else _Trim.keep_none())
                continue

            def magnitudes(m: TensorReader = m) -> Iterator[torch.Tensor]:
                for start, stop in _chunks(numel, chunk):
                    yield (_read(m, key, start, stop) - _read(base, key, start, stop)).abs_()

            # One task vector at a time: its magnitude threshold, from two streamed passes.
            trims.append(_Trim.find(magnitudes, numel, k))
        for start, stop in _chunks(numel, chunk):
            b = _read(base, key, start, stop)
            deltas = [_read(m, key, start, stop) - b for m in models]
            yield _ties_chunk(b, deltas, plan.weights, trims).to(info.dtype)
        return
    # linear and EMA: a weighted average with weights that already sum to 1.
    for start, stop in _chunks(numel, chunk):
        acc = torch.zeros(stop - start, dtype=torch.float32)
        for m, w in zip(models, plan.weights, strict=True):
            acc += _read(m, key, start, stop) * w
        yield acc.to(info.dtype)


def _check_compatible(reference: TensorReader, others: Sequence[TensorReader]) -> dict[str, TensorInfo]:
    """Same key set and shapes everywhere; returns the reference's infos (output dtypes)."""
    ref = reference.infos()
    for other in others:
        infos = other.infos()
        missing, extra = sorted(set(ref) - set(infos)), sorted(set(infos) - set(ref))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing from {other.name}: {', '.join(missing[:5])}")
            if extra:
                parts.append(f"present in {other.name} but not in {reference.name}: {', '.join(extra[:5])}")
            raise MergeError("tensor names differ: " + "; ".join(parts))
        for key, info in ref.items():
            if infos[key].shape != info.shape:
                raise MergeError(
                    f"shape mismatch for {key!r}: {list(info.shape)} in {reference.name} vs "
                    f"{list(infos[key].shape)} in {other.name}"
                )
            if info.dtype.is_floating_point != infos[key].dtype.is_floating_point:
                raise MergeError(
                    f"dtype mismatch for {key!r}: {info.dtype} in {reference.name} vs {infos[key].dtype} in {other.name}"
                )
    return ref


def _merge_readers(
    reference: TensorReader, base: TensorReader | None, models: Sequence[TensorReader], plan: MergePlan
) -> Iterator[tuple[str, TensorInfo, Iterator[torch.Tensor]]]:
    others = [s for s in ([base] if base is not None else []) + list(models) if s is not reference]
    infos = _check_compatible(reference, others)
    for key in sorted(infos):
        yield key, infos[key], _merge_tensor(key, infos[key], base, models, plan)


# ----------------------------------------------------------------------------------------------
# Argument checks shared by the Python API and the command line.


def _check_weights(weights: Sequence[float] | None, n_models: int) -> list[float]:
    if weights is None:
        return [1.0] * n_models
    weights = [float(w) for w in weights]
    if len(weights) != n_models:
        raise MergeError(f"got {len(weights)} weights for {n_models} models: give one weight per model")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise MergeError(f"weights must be finite and >= 0, got {weights}")
    if sum(weights) <= 0:
        raise MergeError(f"weights must not all be 0, got {weights}")
    return weights


def _check_density(density: float) -> float:
    if not (0.0 < density <= 1.0):
        raise MergeError(f"density must be in (0, 1], got {density}")
    return float(density)


def ema_weights(n: int, decay: float | None = None, half_life: float | None = None) -> list[float]:
    """Weights of n checkpoints (oldest first): w_t = beta^(n-t) / sum_s beta^(n-s).

    Give exactly one of `decay` (beta, in [0, 1)) or `half_life` (in checkpoints, > 0; beta =
    0.5 ** (1 / half_life)). beta = 0 puts all weight on the newest checkpoint.
    """
    if (decay is None) == (half_life is None):
        raise MergeError("ema needs exactly one of decay (--decay) or half_life (--half-life)")
    if n < 1:
        raise MergeError("ema needs at least one checkpoint")
    if half_life is not None:
        if not (half_life > 0 and math.isfinite(half_life)):
            raise MergeError(f"half_life must be > 0 (in checkpoints), got {half_life}")
        decay = 0.5 ** (1.0 / half_life)
    assert decay is not None
    if not (0.0 <= decay < 1.0):
        raise MergeError(f"decay must be in [0, 1), got {decay}")
    raw = [decay ** (n - 1 - i) for i in range(n)]
    total = sum(raw)
    return [r / total for r in raw]


def _plan(
    method: str,
    n_models: int,
    has_base: bool,
    weights: Sequence[float] | None,
    density: float | None,
    decay: float | None,
    half_life: float | None,
    chunk_elements: int,
) -> MergePlan:
    if method not in METHODS:
        raise MergeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if n_models < 1:
        raise MergeError(f"{method} needs at least one model")
    if method == "ties":
        if not has_base:
            raise MergeError("ties needs a base model (--base): task vectors are taken against it")
        if decay is not None or half_life is not None:
            raise MergeError("decay/half_life only apply to --method ema")
        return MergePlan(
            "ties",
            _check_weights(weights, n_models),
            _check_density(1.0 if density is None else density),
            chunk_elements,
        )
    if has_base:
        raise MergeError(f"{method} does not use a base model; list every model to average in --models")
    if density is not None:
        raise MergeError("density only applies to --method ties")
    if method == "linear":
        if decay is not None or half_life is not None:
            raise MergeError("decay/half_life only apply to --method ema")
        w = _check_weights(weights, n_models)
        total = sum(w)
        return MergePlan("linear", [x / total for x in w], chunk_elements=chunk_elements)
    if weights is not None:
        raise MergeError("ema computes its weights from decay/half_life; do not pass weights")
    w = ema_weights(n_models, decay=decay, half_life=half_life)
    extra = {"decay": decay, "half_life": half_life}
    return MergePlan("ema", w, chunk_elements=chunk_elements, extra=extra)


# ----------------------------------------------------------------------------------------------
# Python API on in-memory state dicts.


def _merge_dicts(
    base: Mapping[str, torch.Tensor] | None, models: Sequence[Mapping[str, torch.Tensor]], plan: MergePlan
):
    model_readers = [DictReader(m, name=f"models[{i}]") for i, m in enumerate(models)]
    base_reader = DictReader(base, name="base") if base is not None else None
    reference = base_reader if base_reader is not None else model_readers[0]
    return {
        key: torch.cat(list(chunks)).reshape(info.shape)
        if info.numel
        else torch.empty(info.shape, dtype=info.dtype)
        for key, info, chunks in _merge_readers(reference, base_reader, model_readers, plan)
    }


def merge_ties(
    base: Mapping[str, torch.Tensor],
    models: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    density: float = 1.0,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict[str, torch.Tensor]:
    """TIES-merge state dicts against `base` (see the module docstring); outputs have base's dtypes.

    `chunk_elements` only bounds the temporaries; the result does not depend on it."""
    return _merge_dicts(
        base, models, _plan("ties", len(models), True, weights, density, None, None, chunk_elements)
    )


def merge_linear(
    models: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """Weighted average sum_i w_i x_i / sum_i w_i (equal weights by default); dtypes of models[0]."""
    return _merge_dicts(
        None, models, _plan("linear", len(models), False, weights, None, None, None, CHUNK_ELEMENTS)
    )


def merge_ema(
    checkpoints: Sequence[Mapping[str, torch.Tensor]],
    decay: float | None = None,
    half_life: float | None = None,
) -> dict[str, torch.Tensor]:
    """Exponentially weighted average of checkpoints (oldest first), weights from `ema_weights`."""
    return _merge_dicts(
        None, checkpoints, _plan("ema", len(checkpoints), False, None, None, decay, half_life, CHUNK_ELEMENTS)
    )


# ----------------------------------------------------------------------------------------------
# Directories: tokenizer check, streamed safetensors writing, atomic output.


def tokenizer_identity(directory: str | Path) -> tuple[str, str] | None:
    """(file, digest) identifying a directory's tokenizer, or None when it has no tokenizer files.

    `tokenizer.json` is identified by `mmbert.tokenizer.fingerprint_sha256` (what decides the token
    ids, not padding, truncation or post-processing); a sentencepiece model by its bytes.
    """
    directory = Path(directory)
    for name in TOKENIZER_IDENTITY_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if name != "tokenizer.json":
            return name, hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            return name, fingerprint_sha256(path.read_text(encoding="utf-8"))
        except Exception as e:  # tokenizers raises a plain Exception for a bad file
            raise MergeError(f"{path}: not a tokenizer ({e})") from e
    if (directory / "vocab.txt").is_file() or (directory / "vocab.json").is_file():
        digest = hashlib.sha256()
        for name in ("vocab.txt", "vocab.json", "merges.txt"):
            if (directory / name).is_file():
                digest.update(name.encode() + b"\0" + (directory / name).read_bytes())
        return "vocab", digest.hexdigest()
    return None


def _check_tokenizers(directories: Sequence[Path]) -> Path | None:
    """All inputs that have a tokenizer share it; returns the first directory that has one."""
    first: tuple[Path, tuple[str, str]] | None = None
    for directory in directories:
        ident = tokenizer_identity(directory)
        if ident is None:
            logger.warning(
                "%s has no tokenizer files: assuming it uses the same tokenizer as the others", directory
            )
            continue
        if first is None:
            first = (directory, ident)
        elif ident != first[1]:
            raise MergeError(
                f"different tokenizers: {directory / ident[0]} does not match {first[0] / first[1][0]}; "
                "models with different vocabularies cannot be merged"
            )
    return first[0] if first is not None else None


def _check_tokenizer_fits(config: MmBertConfig, model_dir: Path, tokenizer_dir: Path) -> None:
    """The tokenizer the output gets fits the model it gets (`mmbert.hf.check_tokenizer_fits`)."""
    if not (tokenizer_dir / TOKENIZER_FILE).is_file():
        return  # a sentencepiece-only tokenizer: no ids to count without loading it
    files = read_tokenizer_files(tokenizer_dir)
    special = {role: id_ for role, id_ in files.special_ids().items() if role in ("pad", "mask")}
    check_tokenizer_fits(config, files.vocab_size, special, model_dir, tokenizer_dir)


def _is_merge_output(directory: Path) -> bool:
    return (directory / "merge_config.json").is_file()


def merge_dirs(
    method: str,
    base: str | Path | None,
    models: Sequence[str | Path],
    out: str | Path,
    *,
    weights: Sequence[float] | None = None,
    density: float | None = None,
    decay: float | None = None,
    half_life: float | None = None,
    overwrite: bool = False,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Path:
    """Merge HF model directories into `out` (written atomically) and return its path.

    `base` is required for ties and refused by linear/EMA (list every model to average in
    `models`; for EMA, in training order, oldest first). `density` defaults to 1.0 (mergekit's
    default: no trimming). The output holds `config.json` and tokenizer files copied from the
    reference (the base, else the first model, else for EMA the newest checkpoint), the merged
    `model.safetensors`, and `merge_config.json` + `README.md` describing the merge.
    """
    start_time = time.perf_counter()
    model_dirs = [Path(m) for m in models]
    base_dir = Path(base) if base is not None else None
    plan = _plan(
        method, len(model_dirs), base_dir is not None, weights, density, decay, half_life, chunk_elements
    )
    out = Path(out)
    check_output(out, [base_dir, *model_dirs], is_own=_is_merge_output, overwrite=overwrite, replaced=True)
    if out.exists() and not overwrite:
        raise MergeError(f"{out} already exists; pass --overwrite to replace it")
    if base_dir is not None:
        reference_dir = base_dir
    else:
        reference_dir = model_dirs[-1] if method == "ema" else model_dirs[0]
    all_dirs = ([base_dir] if base_dir is not None else []) + model_dirs
    for d in all_dirs:
        if not (d.is_dir() or is_checkpoint_file(d)):
            raise MergeError(f"{d}: not a model directory or a checkpoint file")
    tokenizer_dir = _check_tokenizers([reference_dir] + [d for d in all_dirs if d != reference_dir])

    with contextlib.ExitStack() as stack:
        opened: dict[Path, TensorReader] = {}
        inferred: dict[Path, MmBertConfig | None] = {}
        for d in all_dirs:
            if d not in opened:
                opened[d], inferred[d] = open_checkpoint(d)
                stack.callback(opened[d].close)
        reference_config = inferred[reference_dir]
        if tokenizer_dir is not None:
            _check_tokenizer_fits(
                reference_config or MmBertConfig.load(reference_dir), reference_dir, tokenizer_dir
            )
        base_reader = opened[base_dir] if base_dir is not None else None
        model_readers = [opened[d] for d in model_dirs]
        reference = opened[reference_dir]
        tensors = list(_merge_readers(reference, base_reader, model_readers, plan))
        total_params = sum(info.numel for _, info, _ in tensors)

        with atomic_dir(out) as tmp:
            if reference_config is not None:  # a checkpoint file: the config its tensors and preset give
                reference_config.save(tmp)
            else:
                shutil.copyfile(reference_dir / "config.json", tmp / "config.json")
            if tokenizer_dir is not None:
                for name in TOKENIZER_FILES:
                    if (tokenizer_dir / name).is_file():
                        shutil.copyfile(tokenizer_dir / name, tmp / name)
            record = _merge_record(plan, base_dir, model_dirs, reference_dir, tokenizer_dir, total_params)
            with open(tmp / SAFETENSORS, "wb") as f:
                writer = SafetensorsWriter(
                    f, [(k, i) for k, i, _ in tensors], {"format": "pt", "mmbert_merge": method}
                )
                done, next_report, t0 = 0, 0.1, time.perf_counter()
                for n, (key, info, chunks) in enumerate(tensors, 1):
                    for chunk in chunks:
                        writer.write(key, chunk)
                    done += info.numel
                    # One progress line per tenth of the parameters (tensor sizes vary 1000-fold).
                    if done >= next_report * total_params:
                        next_report = math.floor(done / total_params * 10) / 10 + 0.1
                        elapsed = time.perf_counter() - t0
                        eta = elapsed * (total_params - done) / max(done, 1)
                        logger.info(
                            "merged %d/%d tensors | %.1fM/%.1fM params | %.0fs elapsed, eta %.0fs",
                            n, len(tensors), done / 1e6, total_params / 1e6, elapsed, eta,
                        )  # fmt: skip
                writer.close()
            (tmp / "merge_config.json").write_text(json.dumps(record, indent=2) + "\n")
            (tmp / "README.md").write_text(_readme(record))
            if out.exists() and not overwrite:  # appeared while merging: leave it alone
                raise MergeError(f"{out} already exists; pass --overwrite to replace it")
    logger.info(
        "wrote %s (%s, %d tensors, %.1fM params) in %.1fs",
        out,
        method,
        len(tensors),
        total_params / 1e6,
        time.perf_counter() - start_time,
    )
    return out


def _merge_record(
    plan: MergePlan,
    base: Path | None,
    models: list[Path],
    reference: Path,
    tokenizer: Path | None,
    params: int,
) -> dict:
    record: dict = {
        "method": plan.method,
        "base": str(base.resolve()) if base is not None else None,
        "models": [str(m.resolve()) for m in models],
        # ties: raw weights (only their ratios matter); linear/EMA: normalized to sum to 1.
        "weights": plan.weights,
        "config_from": str(reference.resolve()),
        "tokenizer_from": str(tokenizer.resolve()) if tokenizer is not None else None,
        "parameters": params,
        "mmbert_version": __version__,
    }
    if plan.method == "ties":
        record["density"] = plan.density
    if plan.method == "ema":
        record.update({k: v for k, v in plan.extra.items() if v is not None})
        record["formula"] = "w_t = beta^(n-t) / sum_s beta^(n-s), oldest checkpoint first"
    return record


def _readme(record: dict) -> str:
    lines = [
        "# Merged model",
        "",
        f"Made by `mmbert merge --method {record['method']}` (mmbert {record['mmbert_version']}).",
        "",
    ]
    if record["base"]:
        lines.append(f"- base: `{record['base']}`")
    for path, w in zip(record["models"], record["weights"], strict=True):
        lines.append(f"- `{path}` weight {w:.6g}")
    for key in ("density", "decay", "half_life", "formula"):
        if key in record:
            lines.append(f"- {key}: {record[key]}")
    lines += ["", "Full record: `merge_config.json`.", ""]
    return "\n".join(lines)
