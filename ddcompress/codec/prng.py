"""Platform-stable pseudo-randomness for unmasking orders.

The order must be reproduced bit for bit by any decoder, on any platform and library version, so it is
defined here (SplitMix64 over uint64 arithmetic) rather than taken from torch or numpy's generators,
whose streams may change between releases. Documented in docs/FORMAT.md.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finalizer applied elementwise to (x + golden); uint64 in, uint64 out."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def stream_key(seed: int, chunk_index: int) -> np.uint64:
    """A 64-bit key for chunk `chunk_index` of a file coded with `seed`."""
    s = splitmix64(np.array([seed & _MASK64], dtype=np.uint64))
    return splitmix64(s ^ np.array([chunk_index & _MASK64], dtype=np.uint64))[0]


def permutation(seed: int, chunk_index: int, n: int) -> np.ndarray:
    """Uniformly random permutation of range(n): positions sorted by their hashed keys."""
    key = stream_key(seed, chunk_index)
    with np.errstate(over="ignore"):
        keys = splitmix64(key + np.arange(n, dtype=np.uint64) * _GOLDEN)
    return np.argsort(keys, kind="stable").astype(np.int64)


def uniforms(seed: int, stream: int, n: int) -> np.ndarray:
    """n uniform floats in [0, 1) (53-bit), reproducible across platforms."""
    key = stream_key(seed, stream)
    with np.errstate(over="ignore"):
        bits = splitmix64(key + np.arange(n, dtype=np.uint64) * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def spread(perm: np.ndarray, counts: np.ndarray, gap: int) -> np.ndarray:
    """The reveal order `perm` rearranged so that the positions of one step are more than `gap` apart
    where possible: step by step, the remaining positions in `perm`'s order are taken when no position
    already taken in this step lies within `gap`; if a step is still short, the first remaining
    positions in that order fill it. Neighbours then come from earlier steps, where the denoiser and
    the count models see them, instead of being revealed blind together."""
    rest = [int(p) for p in perm]
    out: list[int] = []
    for k in counts.tolist():
        taken: set[int] = set()
        picked: list[int] = []
        left: list[int] = []
        for p in rest:
            if len(picked) < k and all(p + d not in taken for d in range(-gap, gap + 1)):
                picked.append(p)
                taken.add(p)
            else:
                left.append(p)
        if len(picked) < k:
            need = k - len(picked)
            picked += left[:need]
            left = left[need:]
        out += picked
        rest = left
    return np.array(out, dtype=np.int64)
