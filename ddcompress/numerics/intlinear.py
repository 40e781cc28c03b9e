"""Exact int8 linear layers: the matmuls of the exact denoiser (exact.py), summed so that every machine
gets the same integers.

Inputs are int8 rows with a per-row scale, weights the checkpoint's int8 rows with their scale. The
products are accumulated exactly: int32 via `torch._int_mm` where it is checked to sum exactly
(`int_mm_is_exact`), else a float GEMM over integer-valued tensors cut so that every partial sum is an
integer below 2^24 (fp32) or 2^53 (fp64), which every summation order (with or without FMA) gets right.
"""
from __future__ import annotations

import numpy as np
import torch

Q = 127  # int8 range used: [-127, 127], so |a * b| <= 127^2 = 16129
FP32_K = (1 << 24) // (Q * Q)  # 1040: K * 127^2 < 2^24, so an fp32 GEMM over this many products is exact


class ExactnessError(ValueError):
    """A checkpoint or shape outside the bounds the exact arithmetic is proved for."""


def int8_rows(tensors: dict[str, torch.Tensor], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(int8 matrix, fp32 per-row scale) as stored, or a deterministic int8 rounding of fp32 weights
    (numpy IEEE float32 divide + round-half-even: the same on every machine)."""
    w = tensors[name]
    if w.dtype == torch.int8:
        q = w.numpy()
        s = tensors[name + ".scale"].float().numpy().reshape(-1, 1)
        if (q == -128).any():
            raise ExactnessError(f"{name}: int8 weight -128 outside the proved range [-127, 127]")
        return q, s
    w = w.float().numpy()
    s = np.maximum(np.abs(w).max(axis=1, keepdims=True) / np.float32(Q), np.float32(1e-12)).astype(np.float32)
    q = np.clip(np.rint(w / s), -Q, Q).astype(np.int8)
    return q, s


def keep_freed_memory() -> None:
    """Ask glibc to reuse freed blocks instead of returning each large one to the kernel: every pass
    over a fresh 32 MB tensor otherwise pays ~8000 page faults, which doubled the exact forward's time.
    Process-wide and harmless elsewhere (no-op off glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    for param, value in ((-3, (1 << 31) - 1), (-1, (1 << 31) - 1), (-2, 1 << 28)):  # mmap / trim threshold, top pad
        mallopt(param, value)


_INT_MM_OK: dict[str, bool] = {}


def int_mm_is_exact(device: torch.device) -> bool:
    """Whether `torch._int_mm` sums int8 products exactly in int32 on this device (then it gives the
    same integers as the split float GEMM, faster). oneDNN's s8s8 kernels without VNNI add 16-bit pair
    sums with saturation (benchmarks/results/int-mm-isa-check.md), so on CPU it is checked once per
    process on inputs that saturate such kernels, at the shapes used; CUDA's int8 GEMM accumulates in
    int32. DDC_INT_MM=0 turns it off (the tests use it to check that both paths agree)."""
    import os

    key = str(device)
    if key not in _INT_MM_OK:
        ok = os.environ.get("DDC_INT_MM", "1") != "0" and hasattr(torch, "_int_mm")
        if ok:
            try:
                g = torch.Generator().manual_seed(1)
                for m, k, n in ((32, 64, 32), (32, 512, 64), (48, 1344, 64), (64, 2048, 32)):
                    a = torch.randint(-Q, Q + 1, (m, k), generator=g, dtype=torch.int8)
                    b = torch.randint(-Q, Q + 1, (k, n), generator=g, dtype=torch.int8)
                    a[: m // 2], b[:, : n // 2] = Q, Q  # all-max rows x columns: saturates 16-bit pair sums
                    a[m - 1], b[:, n - 1] = -Q, Q
                    want = a.long() @ b.long()
                    got = torch._int_mm(a.to(device), b.to(device)).cpu().long()
                    ok = ok and torch.equal(got, want)
            except (RuntimeError, NotImplementedError):
                ok = False
        _INT_MM_OK[key] = ok
    return _INT_MM_OK[key]


class ExactLinear:
    """y = x W^T with W int8 rows (N, K) and per-row scales. With `torch._int_mm` checked exact, W^T is
    the int8 (K, N) view of W (column-major: the layout oneDNN's s8 GEMM prefers); otherwise an
    integer-valued fp32 copy for the split float GEMM. `col` is the per-output scale / 127 (the 1/127
    of the activation's int8 scale folded in)."""

    def __init__(self, q: torch.Tensor, col: torch.Tensor, device: torch.device):
        self.int_mm = int_mm_is_exact(device)
        self.n = q.shape[0]
        if self.int_mm and device.type == "cuda" and self.n % 8:  # cuBLAS int8 GEMMs want N % 8 == 0
            q = torch.cat([q, q.new_zeros(-self.n % 8, q.shape[1])])
        self.w8 = q.to(device).t() if self.int_mm else None
        self.wt = None if self.int_mm else q.t().float().contiguous().to(device)
        self.col = col.to(device)
        self.packed = None  # W^T in the C kernels' AMX tile layout, made on first use (exact.ExactDenoiser._acc)

    @classmethod
    def from_tensors(cls, tensors, name: str, rows: int | None = None, device="cpu") -> "ExactLinear":
        q, s = int8_rows(tensors, name)
        if rows is not None:
            q, s = q[:rows], s[:rows]
        col = (s.astype(np.float64).reshape(1, -1) / float(Q)).astype(np.float32)
        return cls(torch.from_numpy(np.ascontiguousarray(q)), torch.from_numpy(col), torch.device(device))

    def acc(self, x8: torch.Tensor) -> torch.Tensor:
        """The integer products x8 @ W^T (x8: int8, or integer-valued fp32 in [-127, 127]), exact: int32, or fp32
        holding the exact integer rounded once (int32 converts to the same fp32)."""
        K = x8.shape[-1]
        lead, rows = x8.shape[:-1], x8[..., 0].numel()
        if not self.int_mm:
            x8 = x8.float()  # int8 rows (exact.layer_norm) or integer-valued fp32
        if self.int_mm:  # exact int32 sums: |sum| <= K * 127^2 < 2^31 for K < 2^17
            a = x8.reshape(rows, K).to(torch.int8)
            if rows <= 16:  # _int_mm wants more than 16 rows: pad with zero rows
                a = torch.cat([a, a.new_zeros(17 - rows, K)])
            return torch._int_mm(a, self.w8)[:rows, : self.n].reshape(*lead, -1)
        if K <= FP32_K:  # every partial sum is an integer of magnitude <= K * 127^2 < 2^24: exact
            return x8 @ self.wt
        out = None  # blocks of FP32_K, each exact in fp32; their sum exact in fp64 (< 2^53)
        for k0 in range(0, K, FP32_K):
            part = (x8[..., k0 : k0 + FP32_K] @ self.wt[k0 : k0 + FP32_K]).double()
            out = part if out is None else out + part
        return out.float()

    def __call__(self, x8: torch.Tensor, row: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Real-valued output (fp32, into `out` if given): the integer products times the row scale, then
        the column scale. int32 sums round to fp32 as the float path's (exact) integer would."""
        acc = self.acc(x8)
        if out is not None:
            out = out.copy_(acc)
        else:
            out = acc.float() if acc.dtype == torch.int32 else acc
        return out.mul_(row).mul_(self.col)


def max_abs(y: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """max |y| along dim, keepdim (exact: no rounding). amax and amin separately: torch.aminmax and
    abs().amax() are 3-10x slower on CPU."""
    return torch.maximum(y.amax(dim, keepdim=True), y.amin(dim, keepdim=True).neg_())


def quant_rows(y: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 along `dim`: (integer-valued q, max |y|) with y ~ q * max / 127."""
    m = max_abs(y, dim)
    r = torch.full_like(m, float(Q)) / torch.where(m > 0, m, torch.ones_like(m))  # 127 / max, per row (IEEE)
    return (y * r).round_(), m
