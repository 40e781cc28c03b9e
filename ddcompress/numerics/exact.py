"""mu_theta in exact arithmetic: the probabilities every machine computes bit for bit (numerics "int8-exact-1").

The coder needs the encoder's and the decoder's probabilities to be identical, on any CPU, GPU, thread
count or library version. The float denoiser (`model.Denoiser`) cannot promise that: its GEMM, softmax
and LayerNorm reductions are summed in whatever order a kernel picks, and exp/sigmoid/cos come from
libm. This module recomputes the same network so that every result is defined by construction:

* Matmuls multiply int8-valued operands and accumulate exactly. Inputs are int8 rows with a per-row
  scale, weights the checkpoint's int8 rows with their scale. The products are summed by a float GEMM
  over integer-valued tensors, cut so that every partial sum is an integer below 2^24 (fp32) or 2^53
  (fp64): then every order of summation, with or without FMA, gives the same exact integer.
  Where `torch._int_mm` is checked to sum exactly (int32; `int_mm_is_exact`) it computes the same
  integers faster; oneDNN's s8s8 kernels on CPUs without VNNI saturate, so they are never used.
* Reductions between the matmuls are integer (or integer-valued fp64 below 2^53) sums, or maxima.
* No libm: exp, sigmoid and the RoPE rotations come from `fixedpoint`'s exactly defined tables.
* The remaining float arithmetic is single IEEE operations (+ - * / sqrt, round) on identical inputs
  in a fixed order, never a scalar division (CUDA turns that into a reciprocal multiply) and never a
  fused kernel.
* Every quantity is per row or per chunk, so a chunk's probabilities do not depend on its batch.

On a CPU the elementwise work between the GEMMs runs in fused C kernels where they can be built
(`native`: the same operations in the same order, checked against the torch operations at load),
and the row-wise layers go to one thread per core; otherwise the torch operations below run.

Notation follows the float model: residual stream h (int64, Q.16), LayerNorm without bias, rotary
attention, GLU MLP, tied output head. The output is integer frequencies (the exp table's values,
at most 2^24 each) for the V clean tokens: what the entropy coder gets.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from . import fixedpoint as fp
from ..native import kernels as native
from ..native.threads import pool
from .intlinear import (FP32_K, Q, ExactLinear, ExactnessError, int8_rows, int_mm_is_exact, keep_freed_memory, max_abs,
                        quant_rows)

NUMERICS = "int8-exact-1"
RES_FRAC = 16  # residual stream h: int64 in units of 2^-16
LN_FRAC = 16  # LayerNorm weights gamma as integers in units of 2^-16
LN_EPS = 1e-5  # nn.LayerNorm's default, as in the float model
LN_BITS = 21  # centred LayerNorm inputs are scaled below 2^21 before squaring: d * 2^42 < 2^53 (d <= 2^11)
ATT_BLOCK = 1 << 19  # attention scores per pass on a CPU thread (elements of one head's rows x keys)
PER_THREAD_MIN_LEN = 256  # shorter chunks: the batched path's few operations beat per-head ones on a CPU too
ATT_BATCH = 1 << 26  # attention scores per pass of the batched path (all heads; ~20 bytes per element)
ATT_TILE_ROWS = 64  # query rows per pass on the AMX tiles: their digits and value sums stay in L2
# Rows per pass (results never depend on them: every operation is per row). A CPU wants passes whose
# intermediates stay in cache; a GPU wants few, large kernels.
ROWS = {"cpu": 512, "other": 1 << 16}  # token rows of the row-wise layers (LayerNorm, linears, GLU)
HEAD_ROWS = {"cpu": 64, "other": 1 << 12}  # rows of the output head (its (rows, V) intermediates)


class ExactBlock:
    def __init__(self, tensors, prefix: str, device):
        self.g1 = _ln_weight(tensors, prefix + "norm1.weight").to(device)
        self.g2 = _ln_weight(tensors, prefix + "norm2.weight").to(device)
        self.qkv = ExactLinear.from_tensors(tensors, prefix + "attn.qkv.weight", device=device)
        self.proj = ExactLinear.from_tensors(tensors, prefix + "attn.proj.weight", device=device)
        self.gate_up = ExactLinear.from_tensors(tensors, prefix + "mlp.gate_up.weight", device=device)
        self.down = ExactLinear.from_tensors(tensors, prefix + "mlp.down.weight", device=device)


def _ln_weight(tensors, name: str) -> torch.Tensor:
    g = np.rint(tensors[name].double().numpy() * float(1 << LN_FRAC))  # exact scaling of an fp32 value
    if np.abs(g).max() >= 2.0**31:
        raise ExactnessError(f"{name}: LayerNorm weight outside the proved range")
    return torch.from_numpy(g)  # integer-valued fp64


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
        if cfg.seq_len * fp.ATT_EXP_MAX * Q >= 1 << 31 or d > 1 << 11:
            raise ExactnessError("model too large for the exact path's bounds")
        self.int_mm = int_mm_is_exact(self.device)
        kind = "cpu" if self.device.type == "cpu" else "other"
        self.nk = None  # fused C kernels (CPU), set after the self-check at the end
        self._threads = None  # the caller's torch thread count while _own_threads holds torch's at 1
        self._blank: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # `blank`'s rows per chunk length
        self._g_long: dict[int, torch.Tensor] = {}  # LayerNorm weights as int64 for the C kernel
        self.heads_per_thread = kind == "cpu"  # attention: whole heads per CPU thread, else all heads batched
        self.rows, self.head_rows = ROWS[kind], HEAD_ROWS[kind]
        if self.device.type == "cpu":
            keep_freed_memory()
        q, s = int8_rows(tensors, "embed.weight")
        # token embeddings in Q.16: rint(q * s * 2^16), exact products in fp64, computed per forward
        self.embed_q = torch.from_numpy(q).to(self.device)  # (V + 1, d) int8
        self.embed_s = torch.from_numpy(s.astype(np.float64) * float(1 << RES_FRAC)).to(self.device)  # (V + 1, 1)
        head_name = "embed.weight" if cfg.tie_embeddings else "head.weight"
        self.head = ExactLinear.from_tensors(tensors, head_name, rows=cfg.vocab_size, device=self.device)
        self.blocks = [ExactBlock(tensors, f"blocks.{i}.", self.device) for i in range(cfg.n_layer)]
        self.gf = _ln_weight(tensors, "norm_f.weight").to(self.device)
        cos_t, sin_t = fp.rope_tables(cfg.seq_len, self.head_dim, cfg.rope_theta)
        shape = (cfg.seq_len, self.head_dim // 2)
        unit = 1.0 / (1 << fp.ROPE_BITS)  # a power of two: the products below are exact
        self.cos = (torch.tensor(cos_t, dtype=torch.float64).view(shape) * unit).float().to(self.device)
        self.sin = (torch.tensor(sin_t, dtype=torch.float64).view(shape) * unit).float().to(self.device)
        self.exp = torch.tensor(fp.exp_table(), dtype=torch.float64, device=self.device)  # integers <= 2^24
        self.exp32 = self.exp.float()  # the same integers (<= 2^24 is exact in fp32)
        att = torch.tensor(fp.att_exp_table(), dtype=torch.int64)  # <= 16383 = 128 * 127 + 127
        self.att_digits = (torch.div(att, 128, rounding_mode="floor").to(self.device), (att % 128).to(self.device))
        self.att_packed = (self.att_digits[1] | self.att_digits[0] << 8).int()  # lo | hi << 8, for the C kernel
        # for the AMX kernel: e = e0 + e' with e0 the last entry, the weight of every score clamped there (most
        # of them), e' as digits (zero at the clamp: its value GEMM skips zero blocks), and the first index from
        # which every hi digit of e' is zero
        self.att_e0 = int(att[-1])
        rel = att - self.att_e0
        self.att_rel = ((rel % 128) | torch.div(rel, 128, rounding_mode="floor") << 8).int()
        hi_nonzero = torch.nonzero(rel >= 128)
        self.att_hi_top = int(hi_nonzero[-1]) + 1 if len(hi_nonzero) else 0
        self.pow2 = torch.tensor([2.0**-k for k in range(64)], dtype=torch.float64, device=self.device)
        self.sig = (torch.tensor(fp.sigmoid_table(), dtype=torch.float64) * (1.0 / (1 << fp.SIG_BITS))).float().to(self.device)
        # eps in the units of a row whose centred values were shifted right by sh bits: eps * 4^(16 - sh)
        self.ln_eps = torch.tensor([LN_EPS * 4.0 ** (RES_FRAC - sh) for sh in range(64)], dtype=torch.float64, device=self.device)
        # attention logit q.k / sqrt(D) in units of 2^-EXP_FRAC nat, per unit of (row scale * integer dot)
        self.att_unit = float(1 << fp.EXP_FRAC) / (Q * Q * math.sqrt(self.head_dim))
        if self.device.type == "cpu":
            self.nk = self._checked_kernels(native.kernels())

    # -- pieces ---------------------------------------------------------------------------------------
    def layer_norm(self, h: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LayerNorm(h) * gamma as int8 rows and their fp32 scales (1/127 folded into the next
        layer). Per-row int8 is scale-free, so 1/sigma only enters the scale: no rsqrt on the values.
        fp64 holds every value below as an exact integer (< 2^53), so its sums are order-free."""
        d = h.shape[-1]
        if self.nk is not None:
            if g.data_ptr() not in self._g_long:  # (gamma as int64 for the kernel, once per weight)
                self._g_long[g.data_ptr()] = g.long()
            q8, scale = self.nk.layer_norm(h.reshape(-1, d).contiguous(), self._g_long[g.data_ptr()], self.ln_eps, LN_BITS,
                                           float(1 << LN_FRAC))
            return q8.view(h.shape), scale.view(*h.shape[:-1], 1)
        xc = (h - torch.div(h.sum(-1, keepdim=True), d, rounding_mode="floor")).double()  # exact centring
        m = max_abs(xc)
        sh = torch.zeros(m.shape, dtype=torch.long, device=h.device)
        if bool((m >= float(1 << LN_BITS)).any()):  # rows this large are rare: shift them below 2^21
            for b in range(LN_BITS, 63):
                sh += (m >= float(1 << b)).long()
            xs = torch.floor(xc * self.pow2[sh])  # a power-of-two scaling, then floor: exact
        else:
            xs = xc
        var = (xs * xs).sum(-1, keepdim=True)  # integers < d * 2^42 < 2^53
        v = xs * g  # LayerNorm output * 2^16 * sigma (in xs units); integers < 2^21 * 2^31
        mv = max_abs(v).clamp_min(1)
        q8 = torch.mul(v, torch.full_like(mv, float(Q)) / mv, out=v).round_()  # round(127 v / mv) in [-127, 127]
        sigma = torch.sqrt(var * (1.0 / d) + self.ln_eps[sh])
        return q8.to(torch.int8), (mv / (sigma * float(1 << LN_FRAC))).float()

    def rope(self, x: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate-half rotary positions on (..., n, D) at positions 0..n-1, or `at` (..., n) (one head's
        or every head's rows), each product and sum a single IEEE op."""
        if at is None:
            c, s = self.cos[: x.shape[-2]], self.sin[: x.shape[-2]]
        else:
            c, s = self.cos[at], self.sin[at]
            if x.dim() > at.dim() + 1:  # (B, n) positions for (B, H, n, D): the same for every head
                c, s = c.unsqueeze(-3), s.unsqueeze(-3)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    def head_inputs(self, q, k, v, at=None):
        """Rotary positions, then keys and values int8 per channel over the chunk's positions, the key
        scales folded into the queries, then int8 per query row: (q8, k8, v8, logit unit per query row,
        value scales), for one head (n, D) or every head at once (B, H, n, D)."""
        q, k = self.rope(q, at), self.rope(k)
        k8, sk = quant_rows(k, dim=-2)
        q8, sq = quant_rows(q * sk, dim=-1)
        v8, sv = quant_rows(v, dim=-2)
        return q8, k8, v8, sq * self.att_unit, sv

    @staticmethod
    def _exp_index(dot: torch.Tensor, unit: torch.Tensor, top: int, out: torch.Tensor) -> torch.Tensor:
        """The softmax argument u = min(round((max - score) * unit), top) into `out` (fp32; `dot` holds
        integer scores, int32 or integer-valued fp32, and may be `out`): the index of each weight in the
        exp table. max - score is an exact integer, converted exactly, then one IEEE product."""
        torch.sub(dot.amax(-1, keepdim=True), dot, out=dot)
        if out is not dot:
            out.copy_(dot)
        return out.mul_(unit).round_().clamp_(max=top)

    @staticmethod
    def _weighted_values(acc: torch.Tensor, sv: torch.Tensor, D: int) -> torch.Tensor:
        """sum(e v8) / sum(e) from the integer sums acc (..., D + 1) (last column sum(e)), times the value
        scales / 127: fp64 division of exact integers, rounded once to fp32."""
        a = acc.double()
        return (a[..., :D] / a[..., D : D + 1]).float() * (sv * (1.0 / Q))

    def attention(self, qkv: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Bidirectional softmax attention, (B, L, 3d) -> (B, L, d) fp32, or only at the query rows
        `at` (B, n) -> (B, n, d): every query row is computed on its own, so both agree exactly.

        Per chunk and head (`head_inputs`, then per block of query rows): integer scores q8.k8 (exact),
        the softmax argument u = round((max - score) * unit) in 2^-10 nat, weights e = att_exp_table[u]
        <= 16383 split into two 7-bit digits e = 128 hi + lo, and hi @ [v8 | 1], lo @ [v8 | 1]: exact
        integer GEMMs (|sums| <= L * 127^2 < 2^24 in fp32, or int32) whose last column is the denominator
        sum(e). On a CPU each worker thread takes whole heads (`_attention_per_thread`); elsewhere, and
        for short chunks, all heads go through batched GEMMs (`_attention_batched`). Heads and rows are independent, and both
        compute the same IEEE operations on the same integers, so the split never changes a result."""
        q, k, v = self._heads(qkv, at)
        if self.heads_per_thread and qkv.shape[1] >= PER_THREAD_MIN_LEN:
            return self._attention_per_thread(q, k, v, at)
        return self._attention_batched(q, k, v, at)

    def _heads(self, qkv: torch.Tensor, at: torch.Tensor | None):
        """(B, L, 3d) -> q, k, v (B, H, L, D) views; q at the rows `at` (B, n) only if given."""
        B, L, _ = qkv.shape
        q, k, v = qkv.view(B, L, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if at is not None:
            q = q[torch.arange(B, device=qkv.device)[:, None], :, at].transpose(1, 2)  # (B, H, n, D)
        return q, k, v

    def _attention_batched(self, q, k, v, at) -> torch.Tensor:
        """All heads at once in fp32 batched GEMMs over integer-valued operands (exact: every partial
        sum is an integer below 2^24; TF32 is off), ATT_BATCH score elements per pass: a few large
        kernels per layer, as a GPU wants, instead of a dozen per head."""
        B, H, Lq, D = q.shape
        L = k.shape[2]
        q8, k8, v8, unit, sv = (t.reshape(B * H, *t.shape[2:]) for t in self.head_inputs(q, k, v, at))
        kt = k8.transpose(-1, -2)
        v1 = torch.cat([v8, torch.ones_like(v8[..., :1])], -1)  # values and a column of ones
        hi_t, lo_t = (t.float() for t in self.att_digits)
        top = len(hi_t) - 1
        acc = torch.empty(B * H, Lq, D + 1, dtype=torch.int32, device=q.device)
        g = max(1, ATT_BATCH // (Lq * L))
        for i in range(0, B * H, g):
            s = torch.bmm(q8[i : i + g], kt[i : i + g])  # integer scores, |sums| <= D * 127^2 < 2^24
            u = self._exp_index(s, unit[i : i + g], top, s).long()
            acc[i : i + g] = torch.bmm(hi_t[u], v1[i : i + g]).int().mul_(128).add_(torch.bmm(lo_t[u], v1[i : i + g]).int())
        out = self._weighted_values(acc, sv, D)
        return out.view(B, H, Lq, D).transpose(1, 2).reshape(B, Lq, H * D)

    def _attention_per_thread(self, q, k, v, at) -> torch.Tensor:
        """Heads on one thread per core (`_parallel`), each prepared in its thread (cache-warm), scores
        ATT_BLOCK elements per pass in reused buffers, both digits' products in one int8 GEMM."""
        B, H, Lq, D = q.shape
        L = k.shape[2]
        dev = q.device
        most = max(1, ATT_BLOCK // L)  # query rows per pass: scores stay in cache; blocks of equal size
        rows = -(-Lq // -(-Lq // most))
        use_int = self.int_mm and rows > 16 and L % 8 == 0 and D % 8 == 0
        dt = torch.int8 if use_int else torch.float32
        Dp = -(-(D + 1) // 8) * 8  # values, a column of ones, zero padding
        hi_t, lo_t = (t.to(dt) for t in self.att_digits)  # the weights' two 7-bit digits
        top = len(hi_t) - 1
        out = torch.empty(B, Lq, H * D, device=dev)
        nk = self.nk if use_int else None  # the C kernels for int8 operands
        fused = nk is not None and nk.vnni and L % 16 == 0 and D % 4 == 0  # score GEMM + digits in one

        def heads_on_tiles(first: int, step: int) -> None:  # all of a head's work below in one C call
            tile_rows = -(-Lq // -(-Lq // ATT_TILE_ROWS))  # (1.2x faster than ATT_BLOCK's 512 rows)
            ws = nk.attention_workspace(Lq, L, D, tile_rows)
            for bh in range(first, B * H, step):
                b, h = divmod(bh, H)
                nk.attention_head(q[b, h], k[b, h], v[b, h], None if at is None else at[b], self.cos, self.sin,
                                  self.att_unit, 1.0 / Q, self.att_rel, top, self.att_e0, self.att_hi_top, tile_rows,
                                  out[b, :, h * D : (h + 1) * D], ws)

        def heads(first: int, step: int) -> None:
            s = torch.empty(rows, L, device=dev)
            row = torch.empty(nk.SCORE_ROWS * L if fused else 0, dtype=torch.int32, device=dev)  # its scratch
            idx = torch.empty(rows, L, dtype=torch.int32, device=dev)
            hilo = torch.empty(2 * rows, L, dtype=dt, device=dev)  # a block's hi digits, then its lo digits
            v1 = torch.zeros(L, Dp, dtype=dt, device=dev)
            v1[:, D] = 1
            acc_all = torch.empty(Lq, Dp, dtype=torch.int32, device=dev)
            for bh in range(first, B * H, step):
                b, h = divmod(bh, H)
                pos = None if at is None else at[b]
                if nk is not None:  # the same, fused (int8 outputs)
                    q8, k8, sq, sv = nk.head_inputs(q[b, h], k[b, h], v[b, h], pos, self.cos, self.sin, v1)
                    unit, kt, svq = sq * self.att_unit, k8.t(), (sv * (1.0 / Q)).view(-1)
                    if fused:
                        kpack = nk.pack_keys(k8)
                else:
                    q8, k8, v8, unit, sv = self.head_inputs(q[b, h], k[b, h], v[b, h], pos)
                    q8, kt = q8.to(dt), k8.to(dt).t()
                    v1[:, :D] = v8
                for r0 in range(0, Lq, rows):
                    r1 = min(Lq, r0 + rows)
                    n = r1 - r0
                    hb, lb = hilo[:n], hilo[n : 2 * n]
                    if fused:  # the scores (the same int32 as _int_mm) and their digits, row by row in cache
                        nk.scores_digits(q8[r0:r1], kpack, unit[r0:r1], self.att_packed, top, row, hb, lb)
                    else:  # exact integer scores: int32, or fp32 with |partial sums| <= D * 127^2 < 2^24
                        dot = torch._int_mm(q8[r0:r1], kt) if use_int else torch.matmul(q8[r0:r1], kt, out=s[:n])
                        self._digits(dot, unit[r0:r1], top, (hi_t, lo_t), hb, lb, s[:n], idx[:n])
                    # both digits' products in one GEMM, [hi; lo] @ [v8 | 1]: int32, or exact fp32 sums
                    acc = torch._int_mm(hilo[: 2 * n], v1) if use_int else (hilo[: 2 * n] @ v1).int()
                    if nk is not None:  # the same as below, fused, straight into this head's columns
                        nk.weighted_values(acc, D, svq, out[b, r0:r1, h * D : (h + 1) * D])
                        continue
                    # 128 H + Lo in int32: <= L * 16383 * 127 < 2^31 (checked for L at load)
                    torch.add(acc[n:], acc[:n], alpha=128, out=acc_all[r0:r1])
                if nk is None:
                    out[b, :, h * D : (h + 1) * D] = self._weighted_values(acc_all, sv, D)

        self._parallel(heads_on_tiles if nk is not None and nk.amx else heads, B * H)
        return out

    def _digits(self, dot, unit, top: int, tables, hi, lo, scratch, idx) -> None:
        """hi, lo <- the two 7-bit digits e = 128 hi + lo of the weights att_exp_table[u] of integer
        scores `dot` (u from `_exp_index`): the C kernel's one pass, or torch's (`scratch`, `idx`:
        buffers of dot's shape, fp32 and int32; `tables`: the digit tables in hi's dtype)."""
        if self.nk is not None:
            self.nk.att_digits(dot, unit, self.att_packed, top, hi, lo)
            return
        idx.copy_(self._exp_index(dot, unit, top, scratch))
        torch.index_select(tables[0], 0, idx.view(-1), out=hi.view(-1))
        torch.index_select(tables[1], 0, idx.view(-1), out=lo.view(-1))

    def _parallel(self, work, n: int) -> None:
        """work(first, step) for first in range(k) over k threads: the per-head loop is many small ops,
        and index_select runs on one core, so heads go to one thread per core, each op single-threaded.
        (Heads are independent, so the result does not depend on the split.)"""
        k = min(self._cpu_threads(), n) if self.device.type == "cpu" else 1
        if k <= 1:
            work(0, 1)
            return
        threads, inference = torch.get_num_threads(), torch.is_inference_mode_enabled()

        def run(first: int) -> None:
            with torch.inference_mode(inference):  # thread-local: carry the caller's mode over
                work(first, k)

        torch.set_num_threads(1)
        try:
            futures = [pool().submit(run, i) for i in range(1, k)]
            try:
                run(0)  # the calling thread takes the first share
            finally:
                for f in futures:
                    f.result()
        finally:
            torch.set_num_threads(threads)

    def _cpu_threads(self) -> int:
        return self._threads or torch.get_num_threads()

    @contextlib.contextmanager
    def _own_threads(self):
        """With the C kernels on a CPU the work is split over worker threads (native/threads.py's pool);
        meanwhile torch's own OpenMP team is held at one thread, since its idle threads spin between
        torch's operations and take the cores from the workers (one 1024-token chunk per step: 0.13 ->
        0.09 s)."""
        if self.nk is None or self.device.type != "cpu" or self._threads is not None:
            yield
            return
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(self._threads)
            self._threads = None

    def glu(self, gu: torch.Tensor) -> torch.Tensor:
        """SiLU(gate) * up, the sigmoid from its table at gate rounded to 1/256."""
        gate, up = gu.chunk(2, dim=-1)
        half = fp.SIG_HALF
        t = gate * float(1 << fp.SIG_FRAC)
        idx = t.round_().clamp_(-half, half).add_(half).to(torch.int32)
        sig = torch.index_select(self.sig, 0, idx.view(-1)).view(idx.shape)
        return sig.mul_(gate).mul_(up)

    def attention_input(self, blk: ExactBlock, h: torch.Tensor) -> torch.Tensor:
        """qkv = W_qkv LayerNorm(h) for h (N, d) Q.16 integers -> (N, 3d) fp32, in row blocks."""
        out = torch.empty(len(h), blk.qkv.n, device=h.device)
        nk = self.nk

        def rows(r: slice) -> None:
            x8, s = self.layer_norm(h[r], blk.g1)
            if nk is not None:
                self._scale_acc(blk.qkv, x8, s, out[r])
            else:
                blk.qkv(x8, s, out=out[r])

        self._each_row_block(len(h), rows, self.rows, threads=nk is not None)
        return out

    def _qkv_in_heads(self, blk: ExactBlock) -> bool:
        """Whether the attention can compute each head's q, k and v itself from the LayerNorm's output
        (`attention_from_norm`): with the AMX tiles, per-thread heads and head dimensions of whole
        blocks of 32 columns, up to 256 (`hidden` uses it for chunks of PER_THREAD_MIN_LEN or more)."""
        return (self.nk is not None and self.nk.amx and self.heads_per_thread and self.head_dim % 32 == 0
                and self.head_dim <= 256 and self._tiles(blk.qkv) is not None)

    def attention_from_norm(self, blk: ExactBlock, h: torch.Tensor, B: int, at: torch.Tensor | None) -> torch.Tensor:
        """attention(attention_input(blk, h), at) for h (B L, d) on the AMX tiles, the same values: the
        LayerNorm in row blocks, then per chunk and head one C call that computes the head's q, k and v
        from it and the packed qkv weights and runs the attention (`attention_head_qkv`): the chunk's
        qkv (B L x 3d fp32, 50 MB for 8 chunks) is never written to memory and read back."""
        N, d = h.shape
        L, H, D = N // B, self.n_head, self.head_dim
        x8, xs = torch.empty(N, d, dtype=torch.int8), torch.empty(N, 1)

        def norm(r: slice) -> None:
            x8[r], xs[r] = self.layer_norm(h[r], blk.g1)

        self._each_row_block(N, norm, self.rows, threads=True)
        x8, xs = x8.view(B, L, d), xs.view(B, L, 1)
        n = L if at is None else at.shape[1]
        out = torch.empty(B, n, H * D)
        nk, wq, tile_rows = self.nk, self._tiles(blk.qkv), -(-n // -(-n // ATT_TILE_ROWS))
        top = len(self.att_digits[0]) - 1

        def heads(first: int, step: int) -> None:
            ws = nk.attention_qkv_workspace(n, L, d, D, tile_rows)
            for bh in range(first, B * H, step):
                b, hd = divmod(bh, H)
                nk.attention_head_qkv(x8[b], xs[b], wq, blk.qkv.col, hd, D, None if at is None else at[b], self.cos,
                                      self.sin, self.att_unit, 1.0 / Q, self.att_rel, top, self.att_e0,
                                      self.att_hi_top, tile_rows, out[b, :, hd * D : (hd + 1) * D], ws)

        self._parallel(heads, B * H)
        return out

    def residual_updates(self, blk: ExactBlock, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """h + proj(a), then + MLP(LayerNorm(.)) (Q.16 integers), for h (N, d) and the attention output a
        (N, d), in row blocks: every step is per row, so the blocks give the same integers."""
        out = torch.empty_like(h)
        nk = self.nk

        def rows(r: slice) -> None:
            if nk is not None:  # the torch operations below, with the elementwise passes fused
                qa, ma = nk.quant_rows(a[r])
                hb = self._add_fixed(blk.proj, h[r], qa, ma, torch.empty_like(h[r]))
                x8, s = self.layer_norm(hb, blk.g2)
                packed = self._tiles(blk.gate_up)
                if packed is not None:  # the same, the GEMM's sums used from cache a few rows at a time
                    qm, mm = nk.gate_up_glu(x8, packed, blk.gate_up.n, s, blk.gate_up.col, self.sig, fp.SIG_FRAC, fp.SIG_HALF)
                else:
                    qm, mm = nk.glu_q8(self._acc(blk.gate_up, x8), s, blk.gate_up.col, self.sig, fp.SIG_FRAC, fp.SIG_HALF)
                self._add_fixed(blk.down, hb, qm, mm, out[r])
                return
            hb = h[r] + self.to_fixed(blk.proj(*quant_rows(a[r])))
            m = self.glu(blk.gate_up(*self.layer_norm(hb, blk.g2)))
            torch.add(hb, self.to_fixed(blk.down(*quant_rows(m))), out=out[r])

        self._each_row_block(len(h), rows, self.rows, threads=nk is not None)
        return out

    def _acc(self, lin: ExactLinear, x8: torch.Tensor) -> torch.Tensor:
        """lin.acc(x8): on the AMX tiles where the C kernels have them (the same int32 sums)."""
        packed = self._tiles(lin)
        if packed is None:
            return lin.acc(x8)
        return self.nk.amx_matmul(x8.reshape(-1, x8.shape[-1]), packed, lin.n).view(*x8.shape[:-1], lin.n)

    def _tiles(self, lin: ExactLinear) -> torch.Tensor | None:
        """W^T in the AMX tiles' layout (packed on first use) where the C kernels have the tiles, else None."""
        nk = self.nk
        if nk is None or not nk.amx or lin.w8 is None or self.device.type != "cpu":
            return None
        if lin.packed is None:  # (two threads may both pack it: the same bytes)
            lin.packed = nk.amx_pack(lin.w8.t())
        return lin.packed

    def _scale_acc(self, lin: ExactLinear, x8, row, out) -> torch.Tensor:
        """The C kernels' scale_acc of lin's sums into out: on the tiles, block by block in the GEMM."""
        packed = self._tiles(lin)
        if packed is None:
            return self.nk.scale_acc(lin.acc(x8), row, lin.col, out)
        return self.nk.amx_scale_acc(x8, packed, lin.n, row, lin.col, out)

    def _add_fixed(self, lin: ExactLinear, h, x8, row, out) -> torch.Tensor:
        """The C kernels' add_fixed: h + to_fixed(lin(x8)) into out, on the tiles in the GEMM's blocks."""
        packed = self._tiles(lin)
        if packed is None:
            return self.nk.add_fixed(h, lin.acc(x8), row, lin.col, float(1 << RES_FRAC), out)
        return self.nk.amx_add_fixed(h, x8, packed, lin.n, row, lin.col, float(1 << RES_FRAC), out)

    def _each_row_block(self, n: int, work, most: int, threads: bool) -> None:
        """work(rows) for blocks of at most `most` rows. With `threads` (the C kernels on a CPU), blocks
        go to one thread per core (the kernels release the GIL; torch's operations did not gain from
        it), small enough that every thread gets one. Rows are independent: the same integers."""
        if not threads:
            for r in self._row_slices(n, most):
                work(r)
            return
        k = max(1, self._cpu_threads())
        blocks = self._row_slices(n, min(most, -(-n // k)))
        self._parallel(lambda first, step: [work(r) for r in blocks[first::step]], len(blocks))

    @staticmethod
    def _row_slices(n: int, rows: int) -> list[slice]:
        return [slice(r0, r0 + rows) for r0 in range(0, n, max(1, rows))]

    def _full_fp32(self) -> None:
        """fp32 GEMMs over integers are exact only at full precision (TF32 keeps 10 mantissa bits): set
        on every call, since training code in the same process may have turned TF32 on (CUDA only)."""
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False

    @staticmethod
    def to_fixed(y: torch.Tensor) -> torch.Tensor:
        return torch.round(y * float(1 << RES_FRAC)).long()

    def _checked_kernels(self, nk):
        """The C kernels if they give the torch operations' bits through the first block (LayerNorm with
        a row large enough to be shifted, qkv, per-thread attention with and without the fused score
        kernel, the residual updates) and the head on random tokens, else None: a compiler that rounds
        differently costs speed, never a file."""
        if nk is None:
            return None
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, self.cfg.vocab_size, (1, min(self.cfg.seq_len, 128)), generator=g)
        h = self.embed(x)[0]
        h[-1] *= 1 << 12  # beyond 2^LN_BITS: the LayerNorm's shift
        blk, got = self.blocks[0], []
        with torch.inference_mode():
            for k in (None, nk):
                self.nk = k
                qkv = self.attention_input(blk, h)
                a = self._attention_per_thread(*self._heads(qkv[None], None), None)[0]
                at = torch.arange(0, len(h), 3)[None]  # the last block's queries at revealed positions
                a_at = self._attention_per_thread(*self._heads(qkv[None], at), at)
                a_odd = self._attention_per_thread(*self._heads(qkv[None, : len(h) - 8], None), None)  # L % 16 = 8
                r = self.residual_updates(blk, h, a)
                fused = self._qkv_in_heads(blk)
                a_norm = self.attention_from_norm(blk, h, 1, None) if fused else a[None]
                a_norm_at = self.attention_from_norm(blk, h, 1, at) if fused else a_at
                got.append((self.embed(x), qkv, a, a_at, a_odd, a_norm, a_norm_at, r, self.frequencies(*self.layer_norm(r[:40], self.gf))))
        self.nk = None
        passed = all(torch.equal(a, b) for a, b in zip(*got))
        native.record_check(passed, amx=nk.amx)
        return nk if passed else None

    # -- the network ----------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token embeddings in Q.16: rint(q * s * 2^16), exact products in fp64 -> (B, L, d) int64."""
        if self.nk is not None and x.device.type == "cpu":  # the same, in one pass
            return self.nk.embed(x, self.embed_q, self.embed_s)
        return torch.round(self.embed_q[x].double() * self.embed_s[x]).long()

    @torch.inference_mode()
    def hidden(self, x: torch.Tensor, at: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Final LayerNorm output for ids x (B, L): int8 rows (B, L, d) fp32 and scales (B, L, 1) fp32;
        with `at` (B, n) positions, only those rows (B, n, ...): the last block then runs its queries
        and MLP on them alone (the coder needs only the positions revealed at a step)."""
        B, L = x.shape
        self._full_fp32()
        if L > self.cfg.seq_len:
            raise ValueError(f"sequence of {L} tokens exceeds the model's length {self.cfg.seq_len}")
        with self._own_threads():
            h = self.embed(x)
            last = len(self.blocks) - 1
            for i, blk in enumerate(self.blocks):
                sel = at if i == last and at is not None else None
                if L >= PER_THREAD_MIN_LEN and self._qkv_in_heads(blk):
                    a = self.attention_from_norm(blk, h.view(B * L, -1), B, sel)
                else:
                    a = self.attention(self.attention_input(blk, h.view(B * L, -1)).view(B, L, -1), sel)
                if sel is not None:
                    h = h[torch.arange(B, device=h.device)[:, None], sel]
                h = self.residual_updates(blk, h.reshape(-1, h.shape[-1]), a.reshape(-1, a.shape[-1])).view(h.shape)
            return self.layer_norm(h, self.gf)

    @torch.inference_mode()
    def blank(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`hidden` of one chunk of L mask tokens at every position: (L, d) int8 rows and (L, 1) scales,
        computed once per length. The reverse process's first step sees nothing but masks in every chunk
        without known tokens, so all of them (of every file this process codes) share these rows: the
        rows of hidden(x, at) for such chunks, exactly (rows and chunks are computed independently)."""
        if L not in self._blank:
            if len(self._blank) >= 8:  # a few lengths (the model's, short files'): drop the oldest
                self._blank.pop(next(iter(self._blank)))
            h8, scale = self.hidden(torch.full((1, L), self.cfg.mask_id, dtype=torch.int64, device=self.device))
            self._blank[L] = (h8[0], scale[0])
        return self._blank[L]

    @torch.inference_mode()
    def frequencies(self, h8: torch.Tensor, scale: torch.Tensor, indices: bool = False) -> torch.Tensor:
        """Integer frequencies (..., V) for rows h8 (..., d) as fp32, each <= 2^24 and the largest of a row exactly 2^24:
        round(2^24 exp(z - max z)) with the logits z rounded to 2^-10 nat. self.head_rows rows per pass (the
        passes after the GEMM then run in cache; rows are independent). With `indices`, the rows of
        exp-table indices u instead (int16; frequency = self.exp32[u]): half the bytes, for a GPU whose
        rows cross to the host."""
        self._full_fp32()
        lead = h8.shape[:-1]
        h8, scale = h8.reshape(-1, h8.shape[-1]), scale.reshape(-1, 1)
        out = torch.empty(len(h8), self.head.n, device=h8.device, dtype=torch.int16 if indices else torch.float32)
        top = len(self.exp32) - 1
        nk = self.nk if self.int_mm and not indices else None  # the C kernel takes the int32 sums

        def rows(r: slice) -> None:
            acc, f = self._acc(self.head, h8[r]), scale[r] * float(1 << fp.EXP_FRAC)
            if nk is not None:  # the same, fused
                nk.head_freqs(acc, self.head.col, f, self.exp32, top, out[r])
                return
            z = acc.float().mul_(self.head.col).mul_(f)
            u = torch.round(z.amax(-1, keepdim=True) - z).clamp_(max=top)
            if indices:
                out[r] = u.to(torch.int16)  # (top < 2^15)
            else:
                torch.take(self.exp32, u.long(), out=out[r])

        with self._own_threads():
            self._each_row_block(len(h8), rows, self.head_rows, threads=nk is not None)
        return out.view(*lead, -1)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Frequencies (B, L, V) for every position (small inputs: probes and tests)."""
        h8, s = self.hidden(x)
        return self.frequencies(h8, s)
