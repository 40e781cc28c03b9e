"""The continuous-time MD4 NELBO: training loss and Monte Carlo estimator.

    NELBO(x0) = int_0^1 -alpha'_t / (1 - alpha_t) * E_{x_t ~ q(x_t|x0)} [ sum_{n masked} -log mu_theta(x_t)_n[x0_n] ] dt

Estimated with antithetic (stratified) times t_i = (u + i/B) mod 1 across the batch. With a
time-independent denoiser it equals the any-order autoregressive NLL, i.e. the expected code length of
revealing tokens one at a time along a random order (what `ddc -9` writes).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..model.denoiser import Denoiser
from .schedule import LINEAR, MaskingSchedule

T_EPS = 1e-4  # smallest t drawn by the estimators (MD4): keeps the 1/t weight finite


def antithetic_times(batch: int, eps: float, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """t_i = eps + (1 - eps) * ((u + i/B) mod 1): one uniform shared, evenly spread over the batch."""
    u = torch.rand((), generator=generator, device=device if generator is None else generator.device)
    t = (u.to(device) + torch.arange(batch, device=device) / batch) % 1.0
    return eps + (1.0 - eps) * t


def nelbo_per_sequence(
    model: Denoiser,
    x0: torch.Tensor,
    t: torch.Tensor,
    schedule: MaskingSchedule = LINEAR,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One-sample NELBO estimate in nats for each sequence x0 (B, L) at times t (B,).

    Masks each token with probability 1 - alpha_t, scores only the masked positions (SUBS), and
    weights their cross-entropy by -alpha'_t / (1 - alpha_t).
    """
    B, L = x0.shape
    a = schedule.alpha(t)
    u = torch.rand((B, L), generator=generator, device=x0.device if generator is None else generator.device).to(x0.device)
    masked = u < (1.0 - a)[:, None]
    xt = torch.where(masked, torch.full_like(x0, model.cfg.mask_id), x0)
    h = model.hidden(xt)
    rows = masked.nonzero(as_tuple=True)
    ce = F.cross_entropy(model.logits(h[rows]).float(), x0[rows], reduction="none")
    per_seq = torch.zeros(B, device=x0.device, dtype=torch.float32).index_add_(0, rows[0], ce)
    return schedule.nelbo_weight(t).float() * per_seq


@torch.no_grad()
def estimate_nelbo_chunks(model, chunks: np.ndarray, samples: int = 2, batch: int = 8, target: float = 0.005,
                          min_passes: int = 2, max_passes: int = 32, seed: int = 0, device: str = "cpu",
                          advance=None, schedule: MaskingSchedule = LINEAR, autocast=None) -> dict:
    """Monte Carlo NELBO (nats) summed over chunks (C, L), with its standard error: the one estimator of
    bench, training validation and the benchmarks.

    Each pass draws `samples` antithetic times per chunk in [T_EPS, 1] (stratified within the chunk).
    Passes repeat until the standard error of the total is below `target` of it (or max_passes);
    per-chunk estimates are independent across passes and chunks, so Var(total) = sum_i s_i^2 / P.
    Times and masks come from one CPU generator seeded with `seed`, so a fixed set of chunks gets the
    same draws on every device (paired comparisons between checkpoints). `autocast`: a context manager
    factory for the forward pass (mixed precision in training), none by default.
    """
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.int64))
    C, L = x_all.shape
    rows = np.repeat(np.arange(C), samples)
    passes: list[torch.Tensor] = []
    while True:
        t = torch.cat([antithetic_times(samples, T_EPS, g) for _ in range(C)])
        vals = torch.empty(C * samples, dtype=torch.float64)
        for r0 in range(0, len(rows), batch):
            idx = torch.from_numpy(rows[r0 : r0 + batch])
            x = x_all[idx].to(device)
            with autocast() if autocast else contextlib.nullcontext():
                v = nelbo_per_sequence(model, x, t[r0 : r0 + len(idx)].to(device), schedule, generator=g)
            vals[r0 : r0 + len(idx)] = v.double().cpu()
            if advance:
                advance(len(idx) * L)
        passes.append(vals.view(C, samples).mean(1))
        X = torch.stack(passes)  # (P, C)
        total = float(X.mean(0).sum())
        P = len(passes)
        se = float(math.sqrt(X.var(0, unbiased=True).sum() / P)) if P > 1 else float("inf")
        if P >= max_passes or (P >= min_passes and se < target * abs(total)):
            return {"nats": total, "stderr_nats": se, "passes": P, "draws_per_chunk": P * samples}


def estimate_nelbo(model: Denoiser, tokens: np.ndarray, samples: int = 16, batch: int = 16, seed: int = 0,
                   device: str = "cpu") -> tuple[float, float]:
    """Monte Carlo NELBO of one sequence (length <= L) in nats: (mean, standard error), from about
    `samples` antithetic draws in passes of `batch` (at least two passes)."""
    r = estimate_nelbo_chunks(model, np.asarray(tokens)[None], samples=batch, batch=batch, target=0.0,
                              min_passes=max(2, -(-samples // batch)), max_passes=max(2, -(-samples // batch)),
                              seed=seed, device=device)
    return r["nats"], r["stderr_nats"]
