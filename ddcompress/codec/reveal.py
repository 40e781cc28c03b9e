"""The step grids and reveal counts of the coder: how many tokens each reverse step reveals (they decide
the bytes of a file; the masking schedules of training are in train/schedule.py)."""
from __future__ import annotations

import numpy as np

GRIDS = ("uniform", "sine")


def time_grid(steps: int, grid: str = "sine") -> np.ndarray:
    """t_0 = 0 < t_1 < ... < t_T = 1; reverse step i goes from t_i down to t_{i-1}.

    With the linear schedule, the masked fraction at t is t. "sine" is the seed's grid
    t_i = cos(pi/2 (1 - i/T)) = sin(pi i / 2T): few tokens are revealed early (t near 1), many late.
    (Named for its shape; it has nothing to do with the cosine masking schedule alpha_t.)
    """
    i = np.arange(steps + 1, dtype=np.float64)
    if grid == "uniform":
        return i / steps
    if grid == "sine":
        t = np.cos(0.5 * np.pi * (1.0 - i / steps))
        t[0], t[-1] = 0.0, 1.0
        return t
    raise ValueError(f"unknown grid {grid!r} (choose from {', '.join(GRIDS)})")


def reveal_counts(n: int, steps: int, grid: str = "sine") -> np.ndarray:
    """Tokens revealed at each reverse step (first step first), summing to n; empty steps dropped.

    Step k goes from t_{T-k+1} to t_{T-k}; under the linear schedule the expected number of masked
    tokens at time t is n*t, and the counts are its rounded differences. With steps >= n and the
    uniform grid this is one token per step: the any-order autoregressive code, i.e. the ELBO.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    steps = max(1, min(int(steps), n))
    t = time_grid(steps, grid)
    masked = np.rint(n * t).astype(np.int64)  # masked count at each grid time
    masked[0], masked[-1] = 0, n
    if grid == "sine" and steps % 3 == 0:
        # sin(pi/6) = 1/2 is the grid's only rational point inside (0, 1) (Niven): for odd n, n t is a
        # tie that a libm 1 ulp either side would round differently; pinned to n // 2 (what x86-64's
        # glibc and numpy give: the float argument lies just above pi/3). Everywhere else n t stays at
        # least 1.7e-10 from a half-integer for n, steps <= 1024 (tests/test_reveal.py), far beyond any
        # libm's error, so every machine rounds it the same way.
        masked[steps // 3] = n // 2
    counts = (masked[1:] - masked[:-1])[::-1]
    return counts[counts > 0]
