"""The step grids and reveal counts of the coder: how many tokens each reverse step reveals (they decide
the bytes of a file; the masking schedules of training are in train/schedule.py).

The grid: t_i = i/T ("uniform") or t_i = sin(pi i / 2T) ("sine", the seed's grid: few tokens revealed
early, at t near 1, many late; named for its shape, it has nothing to do with the cosine masking
schedule alpha_t); with the linear schedule the masked fraction at t is t. The counts are computed
with integers only (no libm, no float rounding): every machine and every later numpy derives the same."""
from __future__ import annotations

import functools

import numpy as np

from ..numerics.fixedpoint import sin_pi_ratio

GRIDS = ("uniform", "sine")

FRAC = 128  # fraction bits of the sine grid's table


@functools.lru_cache(maxsize=64)
def sine_table(steps: int) -> tuple[int, ...]:
    """round(2^FRAC sin(pi i / 2T)) for i = 0..T: the sine grid in fixed point (one table per step count),
    from the exact series the denoiser's RoPE tables use (numerics/fixedpoint.py)."""
    return tuple(sin_pi_ratio(i, 2 * steps, FRAC) for i in range(steps + 1))


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
