"""MosaicML streaming (MDS) shards written from the format description."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zstandard

# An MDS writer written from the format description (mosaicml-streaming's MDSWriter, index version 2),
# to build fixtures. mosaicml-streaming does not install beside our torch; in a throwaway environment
# (streaming 0.13.0, a torchvision stand-in) its StreamingDataset read this writer's output back, and
# `MdsSource` read its MDSWriter's output (ndarray uint16/uint32/int64, fixed and dynamic dtype, raw and
# zstd, merged indexes): identical samples (`python scripts/crosscheck.py mds`, which records its result in
# scripts/results/crosscheck-mds.json).
_DTYPE_CODES = {
    "uint8": 8,
    "int8": 9,
    "uint16": 16,
    "int16": 17,
    "uint32": 32,
    "int32": 33,
    "uint64": 64,
    "int64": 65,
}


_SHAPE_CODES = {"uint8": 0, "uint16": 1, "uint32": 2, "uint64": 3}


FIXED_SIZES = {"int": 8}


def _encode_ndarray(encoding: str, arr: np.ndarray) -> bytes:
    parts = encoding.split(":")
    out = b""
    if len(parts) < 2:  # dynamic dtype
        out += bytes([_DTYPE_CODES[arr.dtype.name]])
    else:
        assert arr.dtype.name == parts[1]
    if len(parts) < 3:  # dynamic shape
        shape = np.array(arr.shape, np.int64)
        sdt = "uint8" if shape.max() < 256 else "uint16" if shape.max() < 65536 else "uint32"
        out += bytes([(arr.ndim << 2) | _SHAPE_CODES[sdt]]) + shape.astype(sdt).tobytes()
    return out + arr.tobytes()


def _encode_column(encoding: str, value) -> bytes:
    if encoding.startswith("ndarray"):
        return _encode_ndarray(encoding, value)
    if encoding == "str":
        return value.encode("utf-8")
    if encoding == "int":
        return np.int64(value).tobytes()
    if encoding == "json":
        return json.dumps(value).encode()
    raise ValueError(encoding)


def write_mds(
    out: Path,
    columns: dict[str, str],
    samples: list[dict],
    *,
    compression: str | None = None,
    samples_per_shard: int = 1000,
    basename_prefix: str = "",
) -> list[dict]:
    """Write samples as MDS shards under `out` (+ index.json); returns the index's shard entries."""
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(columns)
    encodings = [columns[n] for n in names]
    sizes = [FIXED_SIZES.get(e) for e in encodings]
    shards = []
    for k, start in enumerate(range(0, len(samples), samples_per_shard)):
        chunk = samples[start : start + samples_per_shard]
        config = {
            "column_encodings": encodings,
            "column_names": names,
            "column_sizes": sizes,
            "compression": compression,
            "format": "mds",
            "hashes": [],
            "size_limit": 1 << 26,
            "version": 2,
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        encoded = []
        for s in chunk:
            data = [_encode_column(e, s[n]) for n, e in zip(names, encodings, strict=True)]
            head = np.array(
                [len(d) for d, sz in zip(data, sizes, strict=True) if sz is None], np.uint32
            ).tobytes()
            encoded.append(head + b"".join(data))
        offsets = np.array([0] + [len(e) for e in encoded]).cumsum().astype(np.uint32)
        offsets += 4 + offsets.nbytes + len(config_bytes)
        raw = np.uint32(len(chunk)).tobytes() + offsets.tobytes() + config_bytes + b"".join(encoded)
        raw_name = f"{basename_prefix}shard.{k:05d}.mds"
        raw_info = {"basename": raw_name, "bytes": len(raw), "hashes": {}}
        zip_info = None
        if compression:
            zdata = zstandard.ZstdCompressor(level=3).compress(raw)
            zip_info = {"basename": raw_name + ".zstd", "bytes": len(zdata), "hashes": {}}
            (out / zip_info["basename"]).parent.mkdir(parents=True, exist_ok=True)
            (out / zip_info["basename"]).write_bytes(zdata)
        else:
            (out / raw_name).parent.mkdir(parents=True, exist_ok=True)
            (out / raw_name).write_bytes(raw)
        shards.append({**config, "samples": len(chunk), "raw_data": raw_info, "zip_data": zip_info})
    (out / "index.json").write_text(json.dumps({"shards": shards, "version": 2}, sort_keys=True))
    return shards
