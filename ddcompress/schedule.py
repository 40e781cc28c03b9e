"""Masking schedules alpha_t and the step grids / reveal counts used for coding.

Forward process (the seed, MD4): each token independently stays clean with probability alpha_t and
becomes the mask token otherwise; alpha_0 = 1, alpha_1 = 0. The continuous-time NELBO weights the
denoiser's cross-entropy by -alpha'_t / (1 - alpha_t) and is invariant to the schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # tensor methods only: the module loads without torch (ddc train --help)
    import torch

SCHEDULES = ("linear", "cosine", "polynomial")
GRIDS = ("uniform", "sine")


@dataclass(frozen=True)
class MaskingSchedule:
    """alpha_t, the probability that a token is still clean at time t (alpha_0 = 1, alpha_1 = 0), with
    its derivative alpha'_t and the NELBO weight -alpha'_t / (1 - alpha_t).

    kind: "linear" (alpha_t = 1 - t), "cosine" (1 - cos(pi/2 (1 - t))) or "polynomial" (1 - t^power).
    """

    kind: str = "linear"
    power: float = 1.0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r} (choose from {', '.join(SCHEDULES)})")

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return 1.0 - t
        if self.kind == "cosine":
            return 1.0 - (0.5 * math.pi * (1.0 - t)).cos()
        return 1.0 - t**self.power

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        """d alpha_t / dt (negative)."""
        if self.kind == "linear":
            return -t.new_ones(t.shape)
        if self.kind == "cosine":
            return -0.5 * math.pi * (0.5 * math.pi * (1.0 - t)).sin()
        return -self.power * t ** (self.power - 1.0)

    def nelbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """-alpha'_t / (1 - alpha_t): the weight on the masked tokens' cross-entropy at time t."""
        return -self.alpha_prime(t) / (1.0 - self.alpha(t)).clamp_min(1e-12)


LINEAR = MaskingSchedule()  # what the estimators use: the continuous-time NELBO does not depend on it


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
    counts = (masked[1:] - masked[:-1])[::-1]
    return counts[counts > 0]
