"""Seeds derived from the run's seed: stable across processes, machines and Python versions.

Python's `hash()` of a string is salted per process, so every derived seed hashes with CRC-32 instead:
the same run seed, purpose and index give the same generator on every rank and after every resume.
"""

from __future__ import annotations

import zlib


def stable_hash(text: str) -> int:
    """A 32-bit hash of `text` that is the same in every process (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(text.encode("utf-8"))


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A seed for one use (`purpose`, e.g. "mask") of one instance (`index`, e.g. the rank)."""
    return (seed * 1_000_003 + stable_hash(purpose) * 7919 + index) % (2**63)
