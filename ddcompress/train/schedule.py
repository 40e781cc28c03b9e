"""Masking schedules alpha_t of training and the NELBO estimators (the coder's step grids and reveal
counts are in codec/reveal.py).

Forward process (the seed, MD4): each token independently stays clean with probability alpha_t and
becomes the mask token otherwise; alpha_0 = 1, alpha_1 = 0. The continuous-time NELBO weights the
denoiser's cross-entropy by -alpha'_t / (1 - alpha_t) and is invariant to the schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tensor methods only: the module loads without torch (ddc train --help)
    import torch

SCHEDULES = ("linear", "cosine", "polynomial")


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
