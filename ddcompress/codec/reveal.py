"""The step grids and reveal counts of the coder: how many tokens each reverse step reveals (they decide
the bytes of a file; the masking schedules of training are in train/schedule.py).

The grid: t_i = i/T ("uniform") or t_i = sin(pi i / 2T) ("sine", the seed's grid: few tokens revealed
early, at t near 1, many late; named for its shape, it has nothing to do with the cosine masking
schedule alpha_t); with the linear schedule the masked fraction at t is t. The counts are computed
with integers only (no libm, no float rounding): every machine and every later numpy derives the same."""
from __future__ import annotations

import functools

import numpy as np

GRIDS = ("uniform", "sine")

FRAC = 128  # fraction bits of the fixed-point sine
# floor(pi * 2^128), pinned (pi = 3.14159265358979323846264338327950288419716939937510...)
PI_FIXED = 0x3243F6A8885A308D313198A2E03707344


def sine_fixed(i: int, steps: int) -> int:
    """sin(pi i / 2T) in fixed point with FRAC fraction bits, by integers only: x = floor(PI_FIXED i / 2T),
    then the Taylor series x - x^3/3! + x^5/5! - ..., each term the previous one times x^2 / ((2k)(2k+1)),
    truncated (floor of nonnegative values), until a term is 0. Within a few units of 2^-128 of the sine."""
    x = PI_FIXED * i // (2 * steps)
    x2 = x * x >> FRAC
    term, total, k = x, x, 1
    while term:
        term = term * x2 // ((2 * k) * (2 * k + 1)) >> FRAC
        total += -term if k % 2 else term
        k += 1
    return total


@functools.lru_cache(maxsize=64)
def sine_table(steps: int) -> tuple[int, ...]:
    """sine_fixed(i, steps) for i = 0..T: the sine grid in fixed point (one table per step count)."""
    return tuple(sine_fixed(i, steps) for i in range(steps + 1))


@functools.lru_cache(maxsize=4096)
def _masked(n: int, steps: int, grid: str) -> tuple[int, ...]:
    """M_0 .. M_T: the masked count at each grid time, M_0 = 0, M_T = n."""
    if grid == "uniform":  # round(n i / T), half to even, exactly
        out = []
        for i in range(steps + 1):
            q, r = divmod(n * i, steps)
            up = 2 * r > steps or (2 * r == steps and q % 2 == 1)
            out.append(q + up)
        return tuple(out)
    if grid != "sine":
        raise ValueError(f"unknown grid {grid!r} (choose from {', '.join(GRIDS)})")
    half = 1 << (FRAC - 1)
    out = [0] + [(n * s + half) >> FRAC for s in sine_table(steps)[1:-1]] + [n]
    if steps % 3 == 0:
        # sin(pi/6) = 1/2 is the grid's only rational point inside (0, 1) (Niven): for odd n it is a tie,
        # pinned to n // 2 (what formats 2-5 were written with: a float64 cos just below 1/2)
        out[steps // 3] = n // 2
    return tuple(out)


def reveal_counts(n: int, steps: int, grid: str = "sine") -> np.ndarray:
    """Tokens revealed at each reverse step (first step first), summing to n; empty steps dropped.

    Step k goes from t_{T-k+1} to t_{T-k}; under the linear schedule the expected number of masked
    tokens at time t is n*t, and the counts are its rounded differences. With steps >= n and the
    uniform grid this is one token per step: the any-order autoregressive code, i.e. the ELBO.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    steps = max(1, min(int(steps), n))
    masked = np.array(_masked(int(n), steps, grid), dtype=np.int64)
    counts = (masked[1:] - masked[:-1])[::-1]
    return counts[counts > 0]
