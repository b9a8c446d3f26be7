"""A seeded permutation of [0, n) evaluated one index at a time, in O(1) memory whatever n is.

The sampler reads each (source, language) cell in epochs, each a fresh shuffle of the cell's documents.
Materializing that shuffle costs 8 bytes per document on every rank (8 GB for a cell of 10^9 documents,
rebuilt after every resume and at every epoch wrap); this computes its i-th element instead.

How: a balanced Feistel network on 2h-bit integers (4^h >= n, so the domain is under 4n) is a
bijection of [0, 4^h) whatever its round function; cycle-walking (apply it again while the result is
>= n) restricts it to a bijection of [0, n), with fewer than 4 applications on average. The round
function is splitmix64's finalizer of (the right half XOR a round key), the round keys derived from
the permutation's key. It is a shuffle for sampling, not a cipher: what matters is that it is a
bijection (so an epoch covers every document exactly once), that it depends only on (n, key) (so every
rank and every resume computes the same one, nothing is stored or rebuilt), and that it scrambles well.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment: spreads consecutive round numbers apart
ROUNDS = 4


def mix64(x: int) -> int:
    """splitmix64's finalizer: a bijection of 64-bit integers in which every input bit flips ~half the output."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_key(*parts: int) -> int:
    """One 64-bit key from several non-negative integers (seed, cell hashes, epoch), each part changing it."""
    key = 0
    for part in parts:
        if part < 0:
            raise ValueError(f"key parts are non-negative integers, not {part}")
        while True:  # a part wider than 64 bits counts in full
            key = mix64(key ^ (part & _MASK64) ^ _GOLDEN)
            part >>= 64
            if not part:
                break
    return key


class IndexPermutation:
    """`perm[i]` for i in [0, n): a bijection of [0, n) chosen by `key` (a 64-bit integer, `mix_key`)."""

    __slots__ = ("n", "_half", "_mask", "_keys")

    def __init__(self, n: int, key: int) -> None:
        if n < 1:
            raise ValueError(f"a permutation needs at least one element, not {n}")
        self.n = n
        self._half = max(1, ((n - 1).bit_length() + 1) // 2)  # 2 * half bits hold every index < n
        self._mask = (1 << self._half) - 1
        if not 0 <= key <= _MASK64:
            raise ValueError(f"a permutation key is a 64-bit integer, not {key}")
        self._keys = [mix64((key + (r + 1) * _GOLDEN) & _MASK64) for r in range(ROUNDS)]

    def _feistel(self, x: int) -> int:
        left, right = x >> self._half, x & self._mask
        for k in self._keys:
            left, right = right, left ^ (mix64(right ^ k) & self._mask)
        return (left << self._half) | right

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for a permutation of {self.n}")
        x = self._feistel(i)
        while x >= self.n:  # cycle-walking: i's cycle returns below n before it returns to i
            x = self._feistel(x)
        return x

    def __len__(self) -> int:
        return self.n
