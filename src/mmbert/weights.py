"""The weight files of a Hugging Face model directory: where they are, safetensors and .bin, read and written.

A model directory holds `config.json` (read by `mmbert.config.read_hf_config`) and its weights in one
of four layouts, looked for in this order: `model.safetensors`; `model.safetensors.index.json`, whose `weight_map` names the shard that
holds each tensor; `pytorch_model.bin`; `pytorch_model.bin.index.json`. A `.bin` file is read with
`torch.load(weights_only=True)`: tensors and plain containers only, never pickled code. A training
checkpoint (Composer `.pt`, `mmbert.composer`) also holds NumPy RNG states and objects of its own
classes, which `weights_only` refuses outright: `load_pickled` rebuilds what it knows (tensors,
containers, NumPy arrays) and stands a `SkippedObject` in for anything else, whose class is never
imported and whose construction never runs. `mmbert.hf` loads whole state dicts through this module;
`mmbert.merge` streams tensors out of the same files with positioned reads (from the offsets in
`read_safetensors_header`) and writes its output with `SafetensorsWriter`, as `mmbert.hf` writes its
exports.

The safetensors format: an 8-byte little-endian header length n, a JSON header of n bytes
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, offsets
relative to the end of the header), then the tensors' bytes, little-endian, row-major.
"""

from __future__ import annotations

import codecs
import collections
import json
import math
import pickle
import struct
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors.torch import load_file

from mmbert.errors import MmbertError

# Files of an HF model directory that are the model (config, weights in any layout), not the tokenizer.
MODEL_FILES = ("config.json", "generation_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".index.json")
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, BIN, BIN_INDEX)  # in the order they are looked for

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_SAFETENSORS_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


class WeightsError(MmbertError, ValueError):
    """A model directory's file that cannot be read as what its name says; the message names the file."""


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class WeightFiles:
    """Where a directory's weights are: their format, their files and, when sharded, each tensor's file."""

    format: str  # "safetensors" or "bin"
    files: list[Path]
    key_to_file: dict[str, Path] | None = None


def is_model_file(name: str) -> bool:
    """Whether a file of a model directory belongs to the model (config, weights), not the tokenizer."""
    return name in MODEL_FILES or name.endswith(WEIGHT_SUFFIXES)


def find_weights(directory: str | Path) -> WeightFiles:
    """The weight files of a model directory, in the first layout of `WEIGHT_FILES` it has."""
    directory = Path(directory)
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        fmt = "safetensors" if name.startswith(SAFETENSORS) else "bin"
        if name.endswith(".index.json"):
            key_to_file = read_weight_map(path)
            return WeightFiles(fmt, sorted(set(key_to_file.values())), key_to_file)
        return WeightFiles(fmt, [path])
    raise FileNotFoundError(f"{directory}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def read_weight_map(index_path: Path) -> dict[str, Path]:
    """Tensor name -> shard file, from a sharded checkpoint's `*.index.json`."""
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise WeightsError(f"{index_path}: not a checkpoint index (need a 'weight_map'): {e}") from e
    shards = {k: index_path.parent / v for k, v in weight_map.items()}
    missing = sorted({path.name for path in shards.values() if not path.is_file()})
    if missing:  # said here, for every reader (merge streams shards and would fail on one mid-way)
        total = len(set(shards.values()))
        raise FileNotFoundError(
            f"{index_path} names {len(missing)} shard(s) of {total} that are missing: {', '.join(missing)}"
        )
    return shards


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the byte offset where its data starts."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise WeightsError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightsError(f"{path}: unreadable safetensors header ({e})") from e
    return header, 8 + n


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of one safetensors file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file is missing")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise WeightsError(f"{path}: cannot read safetensors file ({e})") from e


def load_bin(path: Path, mmap: bool = False) -> Any:
    """What a `.bin` / `.pt` file holds, by `torch.load(weights_only=True)` on the CPU.

    With `mmap` the file is memory-mapped where its (zip) format allows, so that tensors nobody reads
    stay on disk; a legacy (non-zip) file is read whole.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file is missing")
    try:
        if mmap:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # the legacy format cannot be memory-mapped
                pass
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file it cannot or will not unpickle
        raise WeightsError(f"{path}: cannot read with torch.load(weights_only=True) ({e})") from e


class SkippedObject:
    """Stands in for a pickled object of a class `load_pickled` does not rebuild.

    Whatever the pickle asks of it (construction, state, items) is accepted and dropped, so neither the
    original class nor any function the pickle names is imported or called. `qualname` names the class.
    """

    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> SkippedObject:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<skipped {self.qualname}>"


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes (latin-1 only: no other codec runs)."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"bytes pickled with codec {encoding!r}, not latin-1")
    return text.encode("latin1")


def _numpy_global(name: str) -> Any:
    core = getattr(np, "_core", None) or np.core  # NumPy 2 moved numpy.core to numpy._core
    return getattr(core.multiarray, name)


# What `load_pickled` rebuilds: containers, tensors (rebuilt from the archive's storages, as
# `weights_only` does), dtypes and sizes, bytes, and NumPy arrays and scalars (RNG states are arrays).
# Each of these only builds data; none calls back into something the file names.
_ALLOWED_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "collections.Counter": collections.Counter,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.bytearray": bytearray,
    "builtins.complex": complex,
    "_codecs.encode": _latin1_encode,
    "torch.Size": torch.Size,
    "torch.device": torch.device,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
    **{str(dtype): dtype for dtype in SAFETENSORS_DTYPES.values()},
    **{str(dtype): dtype for dtype in (torch.complex64, torch.complex128, torch.uint16, torch.uint32, torch.uint64)},
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    **{f"{module}.{name}": _numpy_global(name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name in ("_reconstruct", "scalar")},
}  # fmt: skip


def _restricted_pickle_module(skipped: list[str]) -> types.SimpleNamespace:
    """A pickle module for `torch.load` whose unpickler finds only `_ALLOWED_GLOBALS`; any other global
    becomes a `SkippedObject` subclass named after it, and its name is appended to `skipped`."""
    stand_ins: dict[str, type] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            # Protocol 2 (torch.save's default) names Python 2's module for the builtins.
            qualname = f"{'builtins' if module == '__builtin__' else module}.{name}"
            if qualname in _ALLOWED_GLOBALS:
                return _ALLOWED_GLOBALS[qualname]
            skipped.append(qualname)
            if qualname not in stand_ins:
                stand_ins[qualname] = type(name, (SkippedObject,), {"qualname": qualname})
            return stand_ins[qualname]

    def load(file: BinaryIO, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    return types.SimpleNamespace(__name__="mmbert_restricted_pickle", Unpickler=Unpickler, load=load)


def load_pickled(path: Path, mmap: bool = True) -> tuple[Any, list[str]]:
    """What a `.pt` file holds, rebuilt without running pickled code, and the classes it skipped.

    Tensors (memory-mapped with `mmap` where the zip format allows it: tensors nobody reads stay on
    disk), dicts, lists, tuples, numbers, strings, bytes and NumPy arrays come back as they were saved;
    an object of any other class is a `SkippedObject` (its class is named in the list returned, once per
    occurrence).
    """
    if path.is_dir():
        kind = "an HF model directory" if (path / "config.json").is_file() else "a directory"
        raise IsADirectoryError(
            f"{path} is {kind}, not a checkpoint file: convert reads a training checkpoint (.pt); "
            "a model directory is already in HF format"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file is missing")
    skipped: list[str] = []
    module = _restricted_pickle_module(skipped)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=module, mmap=mmap)
        except RuntimeError as e:
            if not mmap or "mmap" not in str(e):
                raise
            skipped.clear()  # the legacy (non-zip) format cannot be memory-mapped: read it whole
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
    except Exception as e:  # torch and pickle raise many kinds for a file they cannot read
        raise WeightsError(f"{path}: cannot read as a PyTorch checkpoint ({type(e).__name__}: {e})") from e
    return obj, skipped


class SafetensorsWriter:
    """Write a safetensors file whose tensors arrive as flat chunks, without holding them.

    The header (names, dtypes, shapes, offsets) is known before any data, so it is written first and
    each chunk is appended as it is produced. The JSON header is padded with spaces to 8 bytes.
    """

    def __init__(
        self, f: BinaryIO, entries: Sequence[tuple[str, TensorInfo]], metadata: Mapping[str, str]
    ) -> None:
        header: dict[str, object] = {"__metadata__": dict(metadata)}
        offset = 0
        self._expected: list[tuple[str, int]] = []
        for key, info in entries:
            if info.dtype not in _SAFETENSORS_NAMES:
                raise WeightsError(f"cannot write tensor {key!r} of dtype {info.dtype} to safetensors")
            nbytes = info.numel * info.dtype.itemsize
            header[key] = {
                "dtype": _SAFETENSORS_NAMES[info.dtype],
                "shape": list(info.shape),
                "data_offsets": [offset, offset + nbytes],
            }
            self._expected.append((key, nbytes))
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        self._f = f
        self._index = 0
        self._written = 0

    def write(self, key: str, chunk: torch.Tensor) -> None:
        expected_key, nbytes = self._expected[self._index]
        assert key == expected_key, (
            f"tensors must be written in header order: got {key}, expected {expected_key}"
        )
        # Reinterpret as bytes (bf16 has no numpy dtype); x86/ARM are little-endian like the format.
        data = chunk.contiguous().view(torch.uint8).numpy()
        self._f.write(data)
        self._written += data.nbytes
        if self._written == nbytes:
            self._index += 1
            self._written = 0

    def close(self) -> None:
        if self._index != len(self._expected):
            raise RuntimeError(f"safetensors writer closed after {self._index}/{len(self._expected)} tensors")


def write_safetensors(f: BinaryIO, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write CPU tensors to an open file in the safetensors format, one tensor at a time (no copy).

    Wider dtypes come first, as the safetensors library orders them, so every tensor's data is aligned.
    """
    keys = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    writer = SafetensorsWriter(
        f, [(k, TensorInfo(tuple(tensors[k].shape), tensors[k].dtype)) for k in keys], metadata
    )
    for key in keys:
        writer.write(key, tensors[key].reshape(-1))
    writer.close()
