"""The exact integer denoiser: tables pinned, results independent of kernels, threads and batch."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from ddcompress.numerics import fixedpoint as fp
from ddcompress.native import kernels as native
from ddcompress.numerics.exact import FP32_K, ExactLinear
from ddcompress.codec.layout import chunk_layout, group_layout, layout_counts

# SHA-256 prefix of the exp, attention-exp, sigmoid and RoPE tables of numerics int8-exact-1 for L=1024,
# D=64, theta=1e4. If this changes, files made with the shipped model no longer decode: never update it
# casually (tests/golden/ would fail too).
SHIPPED_TABLES = "29f621d21dc37ecb"


def test_tables_do_not_depend_on_the_callers_decimal_context():
    """A program that uses ddcompress may set its own decimal precision: the tables (and so every file's
    bytes) must not follow it. Before every operation named the module's context, prec 6 gave others."""
    import decimal

    tables = (fp.exp_table, fp.att_exp_table, fp.sigmoid_table, fp.rope_tables)
    try:
        for prec in (6, 100):
            for f in tables:
                f.cache_clear()
            with decimal.localcontext(decimal.Context(prec=prec, rounding=decimal.ROUND_DOWN)):
                assert fp.tables_digest(1024, 64, 10000.0) == SHIPPED_TABLES, prec
    finally:
        for f in tables:
            f.cache_clear()


def test_tables_are_pinned_and_close_to_the_functions():
    assert fp.tables_digest(1024, 64, 10000.0) == SHIPPED_TABLES
    e = fp.exp_table()
    assert e[0] == 1 << fp.EXP_BITS and all(a >= b for a, b in zip(e, e[1:]))
    assert max(abs(e[u] / 2**fp.EXP_BITS - math.exp(-u / 2**fp.EXP_FRAC)) for u in range(len(e))) < 2**-fp.EXP_BITS
    a = fp.att_exp_table()
    assert a[0] == fp.ATT_EXP_MAX == 127 * 128 + 127 and a[-1] == 1 and all(x >= y for x, y in zip(a, a[1:]))
    assert max(abs(a[u] - fp.ATT_EXP_MAX * math.exp(-u / 2**fp.EXP_FRAC)) for u in range(len(a))) <= 0.5
    assert round(fp.ATT_EXP_MAX * math.exp(-len(a) / 2**fp.EXP_FRAC)) == 0
    s = fp.sigmoid_table()
    xs = [(i - fp.SIG_HALF) / 2**fp.SIG_FRAC for i in range(len(s))]
    assert max(abs(v / 2**fp.SIG_BITS - 1 / (1 + math.exp(-x))) for v, x in zip(s, xs)) < 1e-9
    cos_t, sin_t = fp.rope_tables(64, 8, 10000.0)
    for p in range(64):
        for i in range(4):
            w = p * 10000.0 ** (-2 * i / 8)
            assert abs(cos_t[p * 4 + i] / 2**30 - math.cos(w)) < 1e-9
            assert abs(sin_t[p * 4 + i] / 2**30 - math.sin(w)) < 1e-9


@pytest.mark.parametrize("int_mm", [False, True])
def test_split_gemm_is_exact_at_the_bound(monkeypatch, int_mm):
    """Running sums above 2^24 (1100 products of 127^2) that cancel to a small odd total: one fp32 GEMM
    over all of K would round its partial sums; the split into blocks of FP32_K must not (nor int32)."""
    from ddcompress.numerics import intlinear

    if int_mm and not intlinear.int_mm_is_exact(torch.device("cpu")):
        pytest.skip("torch._int_mm does not sum exactly on this CPU (the float path is used)")
    monkeypatch.setitem(intlinear._INT_MM_OK, "cpu", int_mm)
    K = 2200
    w = torch.full((2, K), 127, dtype=torch.int8)
    w[0, 1100:-1] = -127
    w[0, -1] = 1
    lin = ExactLinear.from_tensors({"w": w, "w.scale": torch.ones(2, 1)}, "w")
    assert lin.int_mm == int_mm
    x = torch.full((3, K), 127.0)  # 3 rows: the int path pads them to the 17 that _int_mm wants
    ref = (x.double() @ w.double().T).long()
    assert ref[0, 0].item() == 127 * 127 + 127 and torch.equal(lin.acc(x).long(), ref)
    assert FP32_K * 127 * 127 < 2**24 <= (FP32_K + 1) * 127 * 127


def _probe_script(ckpt: str) -> str:
    """Prints one line per (threads, GEMM path): kernel level, threads, int_mm, probe hash."""
    return f"""
import hashlib, torch
from ddcompress.numerics import exact
from ddcompress.numerics import intlinear
from ddcompress.model.checkpoint import load_checkpoint
from ddcompress.numerics.exact import ExactDenoiser
lm = load_checkpoint({ckpt!r})
g = torch.Generator().manual_seed(1)
x = torch.randint(0, lm.cfg.vocab_size, (2, lm.cfg.seq_len), generator=g)
x[torch.rand(x.shape, generator=g) < 0.5] = lm.cfg.mask_id
paths = sorted({{intlinear.int_mm_is_exact(torch.device("cpu")), False}})
for threads in (1, 2):
    torch.set_num_threads(threads)
    for int_mm in paths:  # int8 GEMMs where they are exact, and the split float GEMMs
        intlinear._INT_MM_OK["cpu"] = int_mm
        ex = ExactDenoiser(lm.cfg, lm.tensors, "cpu")
        kernels = ex.nk
        for min_len in (exact.PER_THREAD_MIN_LEN, 1):  # attention batched (short chunks) and per thread
            exact.PER_THREAD_MIN_LEN = min_len
            for nk in ((kernels, None) if kernels else (None,)):  # the C kernels (where they build), torch ops
                ex.nk = nk
                f = ex(x)
                print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), ex.int_mm, min_len,
                      nk is not None, hashlib.sha256(f.numpy().tobytes()).hexdigest()[:16])
"""


def test_probe_hash_identical_across_cpu_kernels_and_threads(tiny_ckpt):
    """The same frequencies under every ATen kernel level (each in a fresh process), with 1 and 2
    threads, both GEMM paths, both attention paths (batched, per thread), with and without the C kernels."""
    hashes = {}
    for cap in ("default", "avx2", "avx512"):
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
        out = subprocess.run([sys.executable, "-c", _probe_script(str(tiny_ckpt))], env=env,
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            cap_run, threads, int_mm, min_len, kernels, digest = line.split()
            hashes[(cap_run, threads, int_mm, min_len, kernels)] = digest
    assert len(set(hashes.values())) == 1, hashes
    assert len({k[0] for k in hashes}) >= 2  # at least two kernel levels actually ran
    assert {k[1] for k in hashes} == {"1", "2"}
    assert {k[2] for k in hashes} == {"False", "True"} or not _int_mm_here()  # both GEMM paths ran
    assert len({k[3] for k in hashes}) == 2  # both attention paths ran
    assert {k[4] for k in hashes} == {"True", "False"} or native.library() is None  # C kernels and torch ops


def _int_mm_here() -> bool:
    from ddcompress.numerics.intlinear import int_mm_is_exact

    return int_mm_is_exact(torch.device("cpu"))


def test_int_mm_check_rejects_a_saturating_kernel(monkeypatch):
    """The check feeds inputs whose 16-bit pair sums overflow: a kernel that saturates them is refused."""
    from ddcompress.numerics import intlinear

    def saturating(a, b):  # what oneDNN's s8s8 kernels do without VNNI: u8 = a + 128, pairs saturate
        u = a.long() + 128
        prod = u[:, :, None] * b.long()[None]  # (m, k, n)
        k = prod.shape[1] - prod.shape[1] % 2
        pairs = (prod[:, 0:k:2] + prod[:, 1:k:2]).clamp(-(2**15), 2**15 - 1).sum(1)
        return (pairs - 128 * b.long().sum(0)).int()

    monkeypatch.setattr(intlinear, "_INT_MM_OK", {})
    monkeypatch.setattr(torch, "_int_mm", saturating)
    assert not intlinear.int_mm_is_exact(torch.device("cpu"))
    monkeypatch.setattr(intlinear, "_INT_MM_OK", {})
    monkeypatch.setattr(torch, "_int_mm", lambda a, b: (a.long() @ b.long()).int())
    assert intlinear.int_mm_is_exact(torch.device("cpu"))


def test_selected_rows_equal_the_full_computation(tiny_lm, one_thread):
    """hidden(x, at) (the last block on the revealed rows only) is exactly hidden(x) at those rows."""
    em = tiny_lm.exact("cpu")
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, tiny_lm.cfg.vocab_size, (3, tiny_lm.cfg.seq_len), generator=g)
    x[torch.rand(x.shape, generator=g) < 0.5] = tiny_lm.cfg.mask_id
    h8, s = em.hidden(x)
    rows = torch.arange(3)[:, None]
    for n in (3, 40):
        at = torch.stack([torch.randperm(tiny_lm.cfg.seq_len, generator=g)[:n] for _ in range(3)])
        a8, a_s = em.hidden(x, at)
        assert torch.equal(a8, h8[rows, at]) and torch.equal(a_s, s[rows, at])


def test_blank_chunks_share_the_first_steps_rows(tiny_lm, one_thread):
    """`blank` (one all-mask chunk, every position, computed once per length) gives exactly the rows
    that hidden(x, at) computes for a batch of all-mask chunks: the coder's first step uses it."""
    em = tiny_lm.exact("cpu")
    g = torch.Generator().manual_seed(7)
    for L in (tiny_lm.cfg.seq_len, 37):
        x = torch.full((4, L), tiny_lm.cfg.mask_id)
        at = torch.stack([torch.randperm(L, generator=g)[:9] for _ in range(4)])
        h8, s = em.hidden(x, at)
        rows, scales = em.blank(L)
        assert torch.equal(rows[at], h8) and torch.equal(scales[at], s)
        assert em.blank(L)[0] is rows  # computed once


def test_row_blocks_and_batched_heads_never_change_a_result(tiny_lm, one_thread, monkeypatch):
    """Row blocks of the row-wise layers and of the head, query-row blocks of attention (uneven ones
    included) and all heads batched (as on a GPU) instead of per worker thread give the same integers."""
    from ddcompress.numerics import exact

    em = tiny_lm.exact("cpu")
    L = tiny_lm.cfg.seq_len
    g = torch.Generator().manual_seed(6)
    x = torch.randint(0, tiny_lm.cfg.vocab_size, (3, L), generator=g)
    x[torch.rand(x.shape, generator=g) < 0.5] = tiny_lm.cfg.mask_id
    at = torch.stack([torch.randperm(L, generator=g)[:40] for _ in range(3)])
    want = [em.hidden(x), em.hidden(x, at), em(x)]  # the batched path (chunks < PER_THREAD_MIN_LEN)
    monkeypatch.setattr(em, "rows", 50)  # 192 rows: blocks of 50, 50, 50, 42
    monkeypatch.setattr(em, "head_rows", 7)
    monkeypatch.setattr(exact, "ATT_BLOCK", 24 * L)  # 64 query rows: 3 blocks of 22, 22, 20
    monkeypatch.setattr(exact, "ATT_BATCH", 5 * L * L)  # batched: 6 heads in passes of 5 and 1
    monkeypatch.setattr(exact, "PER_THREAD_MIN_LEN", 1)  # the tiny model's 64-token chunks per thread too
    for per_thread in (True, False):
        monkeypatch.setattr(em, "heads_per_thread", per_thread)
        got = [em.hidden(x), em.hidden(x, at), em(x)]
        assert all(torch.equal(a, b) for w, o in zip(want[:2], got[:2]) for a, b in zip(w, o))
        assert torch.equal(want[2], got[2])  # the head's row blocks too


def test_batch_invariance(tiny_lm, one_thread):
    em = tiny_lm.exact("cpu")
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, tiny_lm.cfg.vocab_size, (8, tiny_lm.cfg.seq_len), generator=g)
    x[torch.rand(x.shape, generator=g) < 0.6] = tiny_lm.cfg.mask_id
    batch = em(x)
    for i in (0, 5):
        assert torch.equal(em(x[i : i + 1])[0], batch[i])


def test_exact_probabilities_track_the_float_model(tiny_lm, one_thread):
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, tiny_lm.cfg.vocab_size, (2, tiny_lm.cfg.seq_len), generator=g)
    x[:, ::2] = tiny_lm.cfg.mask_id
    freq = tiny_lm.exact("cpu")(x).double()
    p_exact = freq / freq.sum(-1, keepdim=True)
    with torch.inference_mode():
        p_float = torch.softmax(tiny_lm.model(x).double(), -1)
    kl = (p_float * (p_float.clamp_min(1e-30).log() - p_exact.clamp_min(1e-30).log())).sum(-1)
    assert kl.max().item() < 1e-3
    assert freq.max(-1).values.eq(2**fp.EXP_BITS).all()  # the largest frequency of a row is exactly 2^24


def test_layout_counts_match_layout_and_scale_linearly():
    for n in list(range(0, 200)) + [10**6 + 7]:
        for L, gs in ((1, 3), (7, 2), (64, 8)):
            if n > 10**5 and L < 64:
                continue
            chunks = chunk_layout(n, L)
            assert layout_counts(n, L, gs) == (len(chunks), len(group_layout(chunks, gs)))
    assert layout_counts(10**15, 1024, 8)[0] == -(-10**15 // 1024)
