"""The continuous-time MD4 NELBO: training loss and Monte Carlo estimator.

    NELBO(x0) = int_0^1 -alpha'_t / (1 - alpha_t) * E_{x_t ~ q(x_t|x0)} [ sum_{n masked} -log mu_theta(x_t)_n[x0_n] ] dt

Estimated with antithetic (stratified) times t_i = (u + i/B) mod 1 across the batch. With a
time-independent denoiser it equals the any-order autoregressive NLL, i.e. the expected code length of
revealing tokens one at a time along a random order (what `ddc -9` writes).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .model import Denoiser
from .schedule import alpha, nelbo_weight


def antithetic_times(batch: int, eps: float, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """t_i = eps + (1 - eps) * ((u + i/B) mod 1): one uniform shared, evenly spread over the batch."""
    u = torch.rand((), generator=generator, device=device if generator is None else generator.device)
    t = (u.to(device) + torch.arange(batch, device=device) / batch) % 1.0
    return eps + (1.0 - eps) * t


def nelbo_per_sequence(
    model: Denoiser,
    x0: torch.Tensor,
    t: torch.Tensor,
    schedule: str = "linear",
    power: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One-sample NELBO estimate in nats for each sequence x0 (B, L) at times t (B,).

    Masks each token with probability 1 - alpha_t, scores only the masked positions (SUBS), and
    weights their cross-entropy by -alpha'_t / (1 - alpha_t).
    """
    B, L = x0.shape
    a = alpha(t, schedule, power)
    u = torch.rand((B, L), generator=generator, device=x0.device if generator is None else generator.device).to(x0.device)
    masked = u < (1.0 - a)[:, None]
    xt = torch.where(masked, torch.full_like(x0, model.cfg.mask_id), x0)
    h = model.hidden(xt)
    rows = masked.nonzero(as_tuple=True)
    ce = F.cross_entropy(model.logits(h[rows]).float(), x0[rows], reduction="none")
    per_seq = torch.zeros(B, device=x0.device, dtype=torch.float32).index_add_(0, rows[0], ce)
    return nelbo_weight(t, schedule, power).float() * per_seq


@torch.no_grad()
def estimate_nelbo(
    model: Denoiser,
    tokens: np.ndarray,
    samples: int = 16,
    batch: int = 16,
    eps: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
    schedule: str = "linear",
) -> tuple[float, float]:
    """Monte Carlo NELBO of one sequence (length <= L) in nats: (mean, standard error).

    `samples` antithetic time draws in batches of `batch` (each batch is one stratified set, so the
    standard error is computed across batches when there are several, else across draws).
    """
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    x0 = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=device)[None]
    means = []
    draws = []
    for start in range(0, samples, batch):
        b = min(batch, samples - start)
        t = antithetic_times(b, eps, g).to(device)
        vals = nelbo_per_sequence(model, x0.expand(b, -1), t, schedule, generator=g).double().cpu()
        means.append(vals.mean().item())
        draws.append(vals)
    if len(means) > 1:
        m = np.array(means)
        return float(m.mean()), float(m.std(ddof=1) / math.sqrt(len(m)))
    d = torch.cat(draws).numpy()
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
