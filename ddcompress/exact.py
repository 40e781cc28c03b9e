"""mu_theta in exact arithmetic: the probabilities every machine computes bit for bit (numerics "int8-exact-1").

The coder needs the encoder's and the decoder's probabilities to be identical, on any CPU, GPU, thread
count or library version. The float denoiser (`model.Denoiser`) cannot promise that: its GEMM, softmax
and LayerNorm reductions are summed in whatever order a kernel picks, and exp/sigmoid/cos come from
libm. This module recomputes the same network so that every result is defined by construction:

* Matmuls multiply int8-valued operands and accumulate exactly. Inputs are int8 rows with a per-row
  scale, weights the checkpoint's int8 rows with their scale. The products are summed by a float GEMM
  over integer-valued tensors, cut so that every partial sum is an integer below 2^24 (fp32) or 2^53
  (fp64): then every order of summation, with or without FMA, gives the same exact integer.
  (`torch._int_mm` is not used on CPU: oneDNN's s8s8 kernels saturate 16-bit pair sums on CPUs
  without VNNI, so their results depend on the ISA: benchmarks/results/int-mm-isa-check.md.)
* Reductions between the matmuls are integer (or integer-valued fp64 below 2^53) sums, or maxima.
* No libm: exp, sigmoid and the RoPE rotations come from `fixedpoint`'s exactly defined tables.
* The remaining float arithmetic is single IEEE operations (+ - * / sqrt, round) on identical inputs
  in a fixed order, never a scalar division (CUDA turns that into a reciprocal multiply) and never a
  fused kernel.
* Every quantity is per row or per chunk, so a chunk's probabilities do not depend on its batch.

Notation follows the float model: residual stream h (int64, Q.16), LayerNorm without bias, rotary
attention, GLU MLP, tied output head. The output is integer frequencies (the exp table's values,
at most 2^24 each) for the V clean tokens: what the range coder gets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import fixedpoint as fp

NUMERICS = "int8-exact-1"
RES_FRAC = 16  # residual stream h: int64 in units of 2^-16
LN_FRAC = 16  # LayerNorm weights gamma as integers in units of 2^-16
LN_EPS = 1e-5  # nn.LayerNorm's default, as in the float model
LN_BITS = 24  # centred LayerNorm inputs are shifted below 2^24 before squaring: d * 2^48 < 2^63
Q = 127  # int8 range used: [-127, 127], so |a * b| <= 127^2 = 16129
ATT_BLOCK = 1 << 20  # attention scores computed per pass (elements)
FP32_K = (1 << 24) // (Q * Q)  # 1040: K * 127^2 < 2^24, so an fp32 GEMM over this many products is exact


class ExactnessError(ValueError):
    """A checkpoint or shape outside the bounds the exact arithmetic is proved for."""


def _int8_rows(tensors: dict[str, torch.Tensor], name: str) -> tuple[np.ndarray, np.ndarray]:
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


@dataclass
class ExactLinear:
    """y = x W^T with W int8 rows: `wt` is W^T as an integer-valued fp32 (K, N) tensor, `col` the
    per-output scale / 127 in fp64 (the 1/127 of the activation's int8 scale is folded in here)."""

    wt: torch.Tensor
    col: torch.Tensor

    @classmethod
    def from_tensors(cls, tensors, name: str, rows: int | None = None) -> "ExactLinear":
        q, s = _int8_rows(tensors, name)
        if rows is not None:
            q, s = q[:rows], s[:rows]
        col = (s.astype(np.float64).reshape(1, -1) / float(Q)).astype(np.float32)
        return cls(torch.from_numpy(np.ascontiguousarray(q.T)).float(), torch.from_numpy(col))

    def to(self, device) -> "ExactLinear":
        return ExactLinear(self.wt.to(device), self.col.to(device))

    def acc(self, x8: torch.Tensor) -> torch.Tensor:
        """The integer products x8 @ W^T (x8: integer-valued fp32 in [-127, 127]), exact, then rounded
        once to fp32 (the same rounding everywhere)."""
        K = x8.shape[-1]
        if K <= FP32_K:  # every partial sum is an integer of magnitude <= K * 127^2 < 2^24: exact
            return x8 @ self.wt
        out = None  # blocks of FP32_K, each exact in fp32; their sum exact in fp64 (< 2^53)
        for k0 in range(0, K, FP32_K):
            part = (x8[..., k0 : k0 + FP32_K] @ self.wt[k0 : k0 + FP32_K]).double()
            out = part if out is None else out + part
        return out.float()

    def __call__(self, x8: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        """Real-valued output (fp32): the integer products times the row scale, then the column scale."""
        return self.acc(x8) * row * self.col


def quant_rows(y: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 along `dim`: (integer-valued q, max |y|) with y ~ q * max / 127."""
    m = y.abs().amax(dim=dim, keepdim=True)
    safe = torch.where(m > 0, m, torch.ones_like(m))
    return torch.round(y / safe * float(Q)).float(), m


class ExactBlock:
    def __init__(self, tensors, prefix: str, device):
        self.g1 = _ln_weight(tensors, prefix + "norm1.weight").to(device)
        self.g2 = _ln_weight(tensors, prefix + "norm2.weight").to(device)
        self.qkv = ExactLinear.from_tensors(tensors, prefix + "attn.qkv.weight").to(device)
        self.proj = ExactLinear.from_tensors(tensors, prefix + "attn.proj.weight").to(device)
        self.gate_up = ExactLinear.from_tensors(tensors, prefix + "mlp.gate_up.weight").to(device)
        self.down = ExactLinear.from_tensors(tensors, prefix + "mlp.down.weight").to(device)


def _ln_weight(tensors, name: str) -> torch.Tensor:
    g = tensors[name].double().numpy() * float(1 << LN_FRAC)  # exact scaling of an fp32 value
    return torch.from_numpy(np.rint(g).astype(np.int64))


class ExactDenoiser:
    """mu_theta(x_t) for coding: token ids (B, L) -> integer frequencies over the V clean tokens.

    `hidden` runs the blocks and returns the final LayerNorm's output as int8 rows with their scales;
    `frequencies` applies the tied head to selected rows (the coder only needs revealed positions)."""

    def __init__(self, cfg, tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        d, H = cfg.d_model, cfg.n_head
        self.n_head, self.head_dim = H, d // H
        if self.head_dim % 2 or self.head_dim > FP32_K:
            raise ExactnessError(f"head dimension {self.head_dim} outside the exact path's range")
        if cfg.seq_len > (1 << 53) // ((1 << fp.EXP_BITS) * Q) or d >= 1 << 14:
            raise ExactnessError("model too large for the exact path's bounds")
        q, s = _int8_rows(tensors, "embed.weight")
        emb = np.rint(q.astype(np.float64) * s.astype(np.float64) * float(1 << RES_FRAC))  # exact products
        self.embed = torch.from_numpy(emb.astype(np.int64)).to(self.device)  # (V + 1, d) in Q.16
        head_name = "embed.weight" if cfg.tie_embeddings else "head.weight"
        self.head = ExactLinear.from_tensors(tensors, head_name, rows=cfg.vocab_size).to(self.device)
        self.blocks = [ExactBlock(tensors, f"blocks.{i}.", self.device) for i in range(cfg.n_layer)]
        self.gf = _ln_weight(tensors, "norm_f.weight").to(self.device)
        cos_t, sin_t = fp.rope_tables(cfg.seq_len, self.head_dim, cfg.rope_theta)
        shape = (cfg.seq_len, self.head_dim // 2)
        unit = 1.0 / (1 << fp.ROPE_BITS)  # a power of two: the products below are exact
        self.cos = (torch.tensor(cos_t, dtype=torch.float64).view(shape) * unit).float().to(self.device)
        self.sin = (torch.tensor(sin_t, dtype=torch.float64).view(shape) * unit).float().to(self.device)
        self.exp = torch.tensor(fp.exp_table(), dtype=torch.float64, device=self.device)  # integers <= 2^24
        self.exp32 = self.exp.float()  # the same integers (<= 2^24 is exact in fp32)
        self.sig = (torch.tensor(fp.sigmoid_table(), dtype=torch.float64) * (1.0 / (1 << fp.SIG_BITS))).float().to(self.device)
        # eps in the units of a row whose centred values were shifted right by sh bits: eps * 4^(16 - sh)
        self.ln_eps = torch.tensor([LN_EPS * 4.0 ** (RES_FRAC - sh) for sh in range(64)], dtype=torch.float64, device=self.device)
        # attention logit q.k / sqrt(D) in units of 2^-EXP_FRAC nat, per unit of (row scale * integer dot)
        self.att_unit = float(1 << fp.EXP_FRAC) / (Q * Q * math.sqrt(self.head_dim))

    # -- pieces ---------------------------------------------------------------------------------------
    def layer_norm(self, h: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LayerNorm(h) * gamma as int8 rows (fp32) and their fp64 scales (1/127 folded into the next
        layer). Per-row int8 is scale-free, so 1/sigma only enters the scale: no rsqrt on the values."""
        d = h.shape[-1]
        xc = h - torch.div(h.sum(-1, keepdim=True), d, rounding_mode="floor")  # exact integer centring
        m = xc.abs().amax(-1, keepdim=True)
        sh = torch.zeros_like(m)
        for b in range(LN_BITS, 63):
            sh += (m >= (1 << b)).long()
        xs = torch.bitwise_right_shift(xc, sh)  # |xs| < 2^24
        var = (xs * xs).sum(-1, keepdim=True)  # exact: < d * 2^48
        v = xs * g  # LayerNorm output * 2^16 * sigma (in xs units)
        mv = v.abs().amax(-1, keepdim=True).clamp_min(1)
        q8 = torch.div(254 * v + mv, 2 * mv, rounding_mode="floor")  # round(127 v / mv), in [-127, 127]
        sigma = torch.sqrt(var.double() * (1.0 / d) + self.ln_eps[sh])
        return q8.float(), (mv.double() / (sigma * float(1 << LN_FRAC))).float()

    def rope(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate-half rotary positions on (B, H, L, D), each product and sum a single IEEE op."""
        L = x.shape[2]
        c, s = self.cos[:L], self.sin[:L]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    def attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """Bidirectional softmax attention, (B, L, 3d) -> (B, L, d), fp32 values."""
        B, L, _ = qkv.shape
        H, D = self.n_head, self.head_dim
        q, k, v = qkv.view(B, L, 3, H, D).permute(2, 0, 3, 1, 4)
        q, k = self.rope(q), self.rope(k)
        k8, sk = quant_rows(k, dim=2)  # keys: int8 per channel over the chunk's positions
        q8, sq = quant_rows(q * sk, dim=-1)  # the key scales folded into the queries, then int8 per row
        v8, sv = quant_rows(v, dim=2)  # values: int8 per channel
        kt, v8, top = k8.transpose(-1, -2).contiguous(), v8.double(), len(self.exp) - 1
        unit = sq * self.att_unit
        rows = max(16, ATT_BLOCK // (B * H * L))  # query rows per pass: keeps the (B, H, rows, L) scores in cache
        out = torch.empty(B, H, L, D, dtype=torch.float64, device=qkv.device)
        for r0 in range(0, L, rows):
            dot = q8[:, :, r0 : r0 + rows] @ kt  # fp32, exact: |partial sums| <= D * 127^2 < 2^24
            gap = dot.amax(-1, keepdim=True) - dot  # integers >= 0, exact in fp32
            u = torch.round(gap * unit[:, :, r0 : r0 + rows]).clamp_(max=top).long()  # softmax argument, 2^-10 nat
            e = torch.take(self.exp, u)  # round(2^24 exp(-u / 1024)), integer-valued fp64
            # e @ v8 is exact in fp64: |partial sums| <= L * 2^24 * 127 < 2^53; so is the sum of e
            out[:, :, r0 : r0 + rows] = (e @ v8) / e.sum(-1, keepdim=True)
        out = out.float() * (sv * (1.0 / Q))
        return out.transpose(1, 2).reshape(B, L, H * D)

    def glu(self, gu: torch.Tensor) -> torch.Tensor:
        gate, up = gu.chunk(2, dim=-1)
        half = fp.SIG_HALF
        idx = torch.round(gate * float(1 << fp.SIG_FRAC)).clamp_(-half, half).long() + half
        return gate * self.sig[idx] * up  # SiLU(gate) * up

    @staticmethod
    def to_fixed(y: torch.Tensor) -> torch.Tensor:
        return torch.round(y * float(1 << RES_FRAC)).long()

    # -- the network ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final LayerNorm output for ids x (B, L): int8 rows (B, L, d) fp32 and scales (B, L, 1) fp64."""
        B, L = x.shape
        if L > self.cfg.seq_len:
            raise ValueError(f"sequence of {L} tokens exceeds the model's length {self.cfg.seq_len}")
        h = self.embed[x]
        for blk in self.blocks:
            a = self.attention(blk.qkv(*self.layer_norm(h, blk.g1)))
            h = h + self.to_fixed(blk.proj(*quant_rows(a)))
            m = self.glu(blk.gate_up(*self.layer_norm(h, blk.g2)))
            h = h + self.to_fixed(blk.down(*quant_rows(m)))
        return self.layer_norm(h, self.gf)

    @torch.inference_mode()
    def frequencies(self, h8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Integer frequencies (N, V) as fp32, each <= 2^24 and the largest of a row exactly 2^24:
        round(2^24 exp(z - max z)) with the logits z rounded to 2^-10 nat."""
        z = self.head.acc(h8) * self.head.col * (scale * float(1 << fp.EXP_FRAC))
        u = torch.round(z.amax(-1, keepdim=True) - z)
        return torch.take(self.exp32, u.clamp_(max=len(self.exp32) - 1).long())

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Frequencies (B, L, V) for every position (small inputs: probes and tests)."""
        h8, s = self.hidden(x)
        return self.frequencies(h8, s)
