"""The fused C kernels (native/kernels.py: denoiser.c and coder.c) give the torch operations' bits, or are not used."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ddcompress.numerics import exact
from ddcompress.numerics import intlinear
from ddcompress.native import kernels as native
from ddcompress.numerics.exact import ExactDenoiser

needs_kernels = pytest.mark.skipif(native.library() is None,
                                   reason="the C kernels could not be built here (no compiler): the torch operations run")


@pytest.fixture(autouse=True)
def _status_restored(monkeypatch):
    """Tests that build other libraries or none record other statuses: the process's own is put back."""
    monkeypatch.setattr(native, "_RAN", dict(native._RAN))


def _denoiser(lm, monkeypatch, int_mm: bool) -> ExactDenoiser:
    if int_mm and not intlinear.int_mm_is_exact(torch.device("cpu")):
        pytest.skip("torch._int_mm does not sum exactly on this CPU")
    monkeypatch.setitem(intlinear._INT_MM_OK, "cpu", int_mm)
    ex = ExactDenoiser(lm.cfg, lm.tensors, "cpu")
    assert ex.nk is not None  # the self-check at load passed
    return ex


def _both(ex: ExactDenoiser, fn):
    """(fn() on the torch operations, fn() with the C kernels)."""
    nk = ex.nk
    try:
        ex.nk = None
        want = fn()
        ex.nk = nk
        return want, fn()
    finally:
        ex.nk = nk


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))


def _residual_rows(ex: ExactDenoiser, n: int, seed: int) -> torch.Tensor:
    """Q.16 residual rows with the edge cases: embeddings, rows beyond 2^LN_BITS (the LayerNorm's
    shift) up to 2^45 and past 2^53 (where the reference's doubles round), a constant row (zero after
    centring), negated rows (floor of negative means)."""
    g = torch.Generator().manual_seed(seed)
    h = ex.embed(torch.randint(0, ex.cfg.vocab_size, (1, n), generator=g))[0]
    h[1] *= 1 << 12
    h[2] *= 1 << 30
    h[3] = 12345
    h[4] = -h[4] - 7
    h[5] = 0
    h[6, 0] = 1 << 45
    h[7, :3] = torch.tensor([(1 << 55) + 12345, -(1 << 54) - 777, (1 << 53) + 1])  # beyond 2^53: rounded as doubles
    # a row whose centred maximum is 2^55 - 1: as a double it rounds up to 2^55, so the reference's
    # floor(xc * 2^-35) is 2^20 where the exact shift would give 2^20 - 1
    d, t = h.shape[1], (1 << 55) - 1
    r = t % (d - 1)
    h[8] = 0
    h[8, 0] = d * ((t - r) // (d - 1)) + r
    return h


@needs_kernels
@pytest.mark.parametrize("int_mm", [True, False])
def test_row_wise_layers_and_head_match_the_torch_operations(tiny_lm, one_thread, monkeypatch, int_mm):
    ex = _denoiser(tiny_lm, monkeypatch, int_mm)
    blk = ex.blocks[0]
    h = _residual_rows(ex, 70, 1)
    g = torch.Generator().manual_seed(2)
    a = torch.randn(70, ex.cfg.d_model, generator=g)
    a[0] = 0  # a zero row: scale 1
    a[1] *= 1e4
    a[2, 3] = -0.0
    for rows in (512, 16):  # one block; blocks of 16 on worker threads
        monkeypatch.setattr(ex, "rows", rows)
        for fn in (lambda: ex.layer_norm(h, blk.g1), lambda: ex.layer_norm(h.view(7, 10, -1), blk.g2),
                   lambda: ex.attention_input(blk, h), lambda: ex.residual_updates(blk, h, a),
                   lambda: ex.frequencies(*ex.layer_norm(h, ex.gf))):
            want, got = _both(ex, fn)
            assert _equal(want, got)
    assert ex.layer_norm(h, blk.g1)[0].dtype == torch.int8


@needs_kernels
@pytest.mark.parametrize("int_mm,amx", [(True, True), (True, False), (False, False)])
def test_attention_matches_the_torch_operations(tiny_lm, one_thread, monkeypatch, int_mm, amx):
    """Per-thread attention (exp-table digits, head inputs) at every query or at revealed rows, chunk
    lengths with and without a tail of 16 scores, a zero query (unit 0) and logits far beyond the table;
    with the score and value GEMMs on the AMX tiles, and without (the VNNI score kernel, torch._int_mm)."""
    ex = _denoiser(tiny_lm, monkeypatch, int_mm)
    if amx and not ex.nk.amx:
        pytest.skip("no AMX tiles on this CPU")
    monkeypatch.setattr(ex.nk, "amx", amx)
    g = torch.Generator().manual_seed(3)
    for L in (64, 40):
        qkv = torch.randn(2, L, 3 * ex.cfg.d_model, generator=g)
        qkv[0, 5, : ex.cfg.d_model] = 0
        qkv[1, :, : ex.cfg.d_model] *= 50
        at = torch.stack([torch.randperm(L, generator=g)[:20] for _ in range(2)])
        for sel in (None, at):
            want, got = _both(ex, lambda: ex._attention_per_thread(*ex._heads(qkv, sel), sel))
            assert _equal(want, got)


@needs_kernels
@pytest.mark.parametrize("amx", [True, False])
def test_long_chunks_and_peaked_heads_match_the_torch_operations(tiny_lm, one_thread, monkeypatch, amx):
    """Chunks of several blocks of 64 keys with a tail (200, 131), several passes of query rows and row
    groups that end inside a tile (37 revealed rows), heads from flat to peaked (logits scaled up to
    x60: most weights clamped, the value GEMM on the tiles skips most blocks of keys), and query rows
    whose every logit lies beyond the table but one."""
    if not intlinear.int_mm_is_exact(torch.device("cpu")):
        pytest.skip("torch._int_mm does not sum exactly on this CPU")
    monkeypatch.setitem(intlinear._INT_MM_OK, "cpu", True)
    ex = ExactDenoiser(dataclasses.replace(tiny_lm.cfg, seq_len=256), tiny_lm.tensors, "cpu")
    assert ex.nk is not None  # the self-check at load passed
    if amx and not ex.nk.amx:
        pytest.skip("no AMX tiles on this CPU")
    monkeypatch.setattr(ex.nk, "amx", amx)
    d, H = ex.cfg.d_model, ex.n_head
    g = torch.Generator().manual_seed(4)
    for L in (200, 131):
        qkv = torch.randn(2, L, 3 * d, generator=g)
        scale = torch.tensor([0.2, 1.0, 5.0, 20.0, 60.0] * H)[:H].repeat_interleave(d // H)
        qkv[..., :d] *= scale
        qkv[1, 3, :d] *= 1000  # one query far sharper than the rest
        at = torch.stack([torch.randperm(L, generator=g)[:37] for _ in range(2)])
        for sel in (None, at):
            want, got = _both(ex, lambda: ex._attention_per_thread(*ex._heads(qkv, sel), sel))
            assert _equal(want, got)


@needs_kernels
def test_heads_computing_their_own_qkv_match_the_torch_operations(tmp_path, one_thread, monkeypatch):
    """With the AMX tiles each head's q, k and v come from the LayerNorm's output inside the attention
    call (`attention_from_norm`, head dimension 32 here): the same values as attention_input then the
    attention, at every query or at revealed rows, over chunks of several blocks with a tail; and a
    whole forward at a length past PER_THREAD_MIN_LEN takes that path and agrees too."""
    if not intlinear.int_mm_is_exact(torch.device("cpu")):
        pytest.skip("torch._int_mm does not sum exactly on this CPU")
    monkeypatch.setitem(intlinear._INT_MM_OK, "cpu", True)
    from ddcompress.model.checkpoint import load_checkpoint, save_checkpoint
    from ddcompress.model.denoiser import Denoiser, DenoiserConfig

    torch.manual_seed(1)
    save_checkpoint(Denoiser(DenoiserConfig(seq_len=320, n_layer=2, n_head=2, d_model=64, d_mlp=96)), tmp_path / "m")
    lm = load_checkpoint(tmp_path / "m")
    ex = ExactDenoiser(lm.cfg, lm.tensors, "cpu")
    assert ex.nk is not None  # the self-check at load passed
    if not ex.nk.amx:
        pytest.skip("no AMX tiles on this CPU")
    g = torch.Generator().manual_seed(8)
    blk = ex.blocks[0]
    for L in (320, 131):
        x = torch.randint(0, lm.cfg.vocab_size, (2, L), generator=g)
        x[torch.rand(x.shape, generator=g) < 0.5] = lm.cfg.mask_id
        h = ex.embed(x).view(2 * L, -1)
        at = torch.stack([torch.randperm(L, generator=g)[:37] for _ in range(2)])
        for sel in (None, at):
            got = ex.attention_from_norm(blk, h, 2, sel)
            want, _ = _both(ex, lambda: ex.attention(ex.attention_input(blk, h).view(2, L, -1), sel))
            assert _equal(want, got)
    x = torch.randint(0, lm.cfg.vocab_size, (2, 320), generator=g)
    at = torch.stack([torch.randperm(320, generator=g)[:50] for _ in range(2)])
    assert ex._qkv_in_heads(blk) and 320 >= exact.PER_THREAD_MIN_LEN  # hidden takes that path
    want, got = _both(ex, lambda: ex.hidden(x, at))
    assert _equal(want, got)
    bad = native.Kernels(ex.nk.lib)  # and the self-check at load refuses one value off in its output
    inner = bad.attention_head_qkv

    def one_off(*args, **kw):
        inner(*args, **kw)
        args[-2][1, 7] += 1

    bad.attention_head_qkv = one_off
    assert ex._checked_kernels(bad) is None


@needs_kernels
def test_exp_table_digits_match_the_torch_operations_at_the_table_edge(tiny_lm, monkeypatch):
    """The digits kernel sends a vector of 16 scores straight to the clamped weight when an integer
    compare shows every gap (max - score) past the last one that indexes inside the table; that limit
    must be exact. Units and gaps around the edge nearbyint(gap * unit) = top, units 0 and tiny and
    large, rows of 16 and with a tail, against the torch operations."""
    ex = tiny_lm.exact("cpu")
    nk = ex.nk
    assert nk is not None
    top = len(ex.att_digits[0]) - 1
    g = torch.Generator().manual_seed(5)
    units, rows = [], []
    for x in (1, 3, 7, 64, 1000, 12345, 1 << 20):
        u = torch.tensor((top - 0.5) / x, dtype=torch.float32)
        for du in (u, torch.nextafter(u, torch.tensor(0.0)), torch.nextafter(u, torch.tensor(1e9))):
            units.append(float(du))
            gaps = torch.arange(max(0, x - 40), x + 40)
            rows.append(gaps)
    for u in (0.0, 1e-30, 1e-7, 1.0, 37.5, 1e6):
        units.append(u)
        rows.append(torch.randint(0, 1 << 22, (80,), generator=g))
    for L in (1040, 1043):
        dot = torch.empty(len(rows), L, dtype=torch.int32)
        for i, gaps in enumerate(rows):
            m = int(torch.randint(-(1 << 20), 1 << 20, (1,), generator=g))
            row = m - torch.randint(0, 1 << 23, (L,), generator=g)  # mostly far below the maximum
            row[torch.randperm(L, generator=g)[: len(gaps)]] = m - gaps
            row[int(torch.randint(0, L, (1,), generator=g))] = m
            dot[i] = row.int()
        unit = torch.tensor(units, dtype=torch.float32).view(-1, 1)
        want = [torch.empty(len(rows), L, dtype=torch.int8) for _ in range(2)]
        got = [torch.empty_like(w) for w in want]
        tables = tuple(t.to(torch.int8) for t in ex.att_digits)
        ex.nk = None
        ex._digits(dot.clone(), unit, top, tables, *want, torch.empty(len(rows), L), torch.empty(len(rows), L, dtype=torch.int32))
        ex.nk = nk
        nk.att_digits(dot, unit, ex.att_packed, top, *got)
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


@needs_kernels
@pytest.mark.parametrize("kernel", ["att_digits", "scores_digits", "glu_q8", "head_freqs", "amx_matmul", "amx_scale_acc",
                                    "amx_add_fixed", "attention_head", "gate_up_glu", "embed"])
def test_a_kernel_that_rounds_differently_is_not_used(tiny_lm, one_thread, monkeypatch, kernel):
    """The load-time self-check compares the kernels with the torch operations: one value off in an
    output of any kernel (as a miscompiled one would give) and the torch operations run instead. (An
    int8 GEMM's sum off by one can vanish in the roundings after it: those are off by 1000.)"""
    monkeypatch.setitem(intlinear._INT_MM_OK, "cpu", intlinear.int_mm_is_exact(torch.device("cpu")))
    ex = tiny_lm.exact("cpu")
    good = native.kernels()
    if kernel == "scores_digits" and not good.vnni:
        pytest.skip("the fused score kernel is built for AVX-512 VNNI CPUs only")
    if (kernel.startswith("amx") or kernel in ("attention_head", "gate_up_glu")) and not good.amx:
        pytest.skip("the AMX GEMMs are built for CPUs with AMX tiles only")
    if kernel in ("scores_digits", "att_digits", "glu_q8"):
        good.amx = False  # (with the tiles these run inside attention_head and gate_up_glu)
    if kernel != "glu_q8" and not ex.int_mm:
        pytest.skip("this kernel takes int8 GEMM outputs; torch._int_mm is not exact here")
    assert ex._checked_kernels(good) is good
    bad = native.Kernels(good.lib)
    bad.amx = good.amx
    inner = getattr(bad, kernel)

    def one_off(*args, **kw):
        res = inner(*args, **kw)
        if kernel == "attention_head":
            args[-2][1, 7] += 1  # its output (a view of the head's columns), before the workspace
        else:
            out = res[0] if isinstance(res, tuple) else res if res is not None else args[-1]  # lo digits: last
            out.view(-1)[7] += 1000 if kernel.startswith("amx") else 1
        return res

    setattr(bad, kernel, one_off)
    assert ex._checked_kernels(bad) is None


@needs_kernels
def test_amx_gemms_give_the_exact_int8_products():
    """The AMX tile GEMM against int64 products: row counts, sum lengths and column counts on and off
    the tiles' multiples (16/32 rows, 64 sums, 32 columns), rows apart, the full int8 range."""
    nk = native.kernels()
    if not nk.amx:
        pytest.skip("no AMX tiles on this CPU (or DDC_AMX=0)")
    g = torch.Generator().manual_seed(11)
    for M, K, N in [(1, 64, 7), (17, 100, 33), (32, 512, 32), (33, 1000, 72), (70, 1344, 512), (64, 4, 1), (96, 65, 100)]:
        a = torch.randint(-128, 128, (M, K + 5), dtype=torch.int8, generator=g)[:, 2 : K + 2]  # rows K + 5 apart
        w = torch.randint(-128, 128, (N, K), dtype=torch.int8, generator=g)
        w[0] = -128  # |sums| up to K * 2^14
        a[0] = -128
        want = a.long() @ w.long().t()
        got = nk.amx_matmul(a, nk.amx_pack(w), N)
        assert got.dtype == torch.int32 and torch.equal(got.long(), want), (M, K, N)
        assert torch.equal(nk.amx_matmul(a, nk.amx_pack(w.t().contiguous().t()), N), got)  # B from a column-major W
    with pytest.raises(ValueError):
        nk.amx_matmul(a, nk.amx_pack(w[:, :64].contiguous()), N)  # B packed for another width


@needs_kernels
def test_ddc_amx_0_turns_the_tiles_off(tiny_lm, monkeypatch):
    """DDC_AMX=0: the GEMMs run on torch._int_mm / the VNNI kernels, with the same results."""
    lib = native.library()
    if not native.Kernels(lib).amx:
        pytest.skip("no AMX tiles on this CPU")
    monkeypatch.setenv("DDC_AMX", "0")
    assert not native.Kernels(lib).amx
    off = ExactDenoiser(tiny_lm.cfg, tiny_lm.tensors, "cpu")
    assert off.nk is not None and not off.nk.amx and native.status()["denoiser"] == "C kernels"
    monkeypatch.delenv("DDC_AMX")
    on = ExactDenoiser(tiny_lm.cfg, tiny_lm.tensors, "cpu")
    assert on.nk.amx and native.status()["denoiser"] == "C kernels, AMX GEMMs"
    x = torch.randint(0, tiny_lm.cfg.vocab_size, (2, 64), generator=torch.Generator().manual_seed(5))
    assert torch.equal(on(x), off(x))


@needs_kernels
def test_torch_threads_are_held_at_one_during_a_forward_and_restored(tiny_lm, monkeypatch):
    """With the C kernels the workers split the work by the caller's thread count, while torch's own
    thread team is held at one (its idle threads would spin); afterwards the caller's count is back."""
    ex = ExactDenoiser(tiny_lm.cfg, tiny_lm.tensors, "cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        inner = ex._parallel
        monkeypatch.setattr(ex, "_parallel", lambda work, n: (seen.append((torch.get_num_threads(), ex._cpu_threads())),
                                                                 inner(work, n)))
        x = torch.randint(0, tiny_lm.cfg.vocab_size, (1, 64), generator=torch.Generator().manual_seed(3))
        ex(x)
        assert seen and set(seen) == {(1, 2)} and torch.get_num_threads() == 2 and ex._threads is None
    finally:
        torch.set_num_threads(before)


def test_without_a_compiler_the_torch_operations_run(tiny_lm, monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_LIB", {})
    monkeypatch.setenv("DDC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert native.library() is None and not list(tmp_path.iterdir())
    assert ExactDenoiser(tiny_lm.cfg, tiny_lm.tensors, "cpu").nk is None
    assert native.status()["denoiser"].startswith("torch operations (no C compiler")  # what `ddc -v` reports
    monkeypatch.setattr(native, "_LIB", {})
    monkeypatch.delenv("CC")
    monkeypatch.setenv("DDC_NATIVE", "0")
    assert native.kernels() is None and native.status()["denoiser"] == "torch operations (DDC_NATIVE=0)"


def test_one_status_lists_what_each_part_ran_on(tiny_lm, monkeypatch):
    """status() is the one report of native code (`ddc -v`): the denoiser's kernels, the rANS coder
    and the mixer each record what they run on, in that order, once they ran."""
    from ddcompress.codec import mixing, rans

    monkeypatch.setattr(native, "_RAN", {})
    assert native.status() == {}
    monkeypatch.setattr(rans, "_NATIVE", {})  # the coder and the mixer decide (and record) again
    monkeypatch.setattr(mixing, "_NATIVE", {})
    c = rans._lib() is not None
    assert native.status() == {"coder": "rANS in C" if c else "rANS in Python"}
    mixing._lib()
    ExactDenoiser(tiny_lm.cfg, tiny_lm.tensors, "cpu")
    how = native.status()
    assert list(how) == ["denoiser", "coder", "mixer"] and how["mixer"] == ("mixing in C" if c else "mixing in Python")
    assert how["denoiser"] in ("C kernels", "C kernels, AMX GEMMs") or how["denoiser"].startswith("torch operations (")
    # without the library (as DDC_NATIVE=0): every part says so
    monkeypatch.setattr(native, "_LIB", {"lib": None, "why": "torch operations (DDC_NATIVE=0)"})
    monkeypatch.setattr(rans, "_NATIVE", {})
    monkeypatch.setattr(mixing, "_NATIVE", {})
    rans._lib()
    mixing._lib()
    ExactDenoiser(tiny_lm.cfg, tiny_lm.tensors, "cpu")
    assert native.status() == {"denoiser": "torch operations (DDC_NATIVE=0)", "coder": "rANS in Python",
                               "mixer": "mixing in Python"}
    assert not hasattr(rans, "status")  # one status function: the coder's own is gone


@needs_kernels
def test_an_unwritable_cache_builds_in_a_private_temp_folder(monkeypatch, tmp_path):
    import tempfile

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(native, "_LIB", {})
    monkeypatch.setenv("DDC_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert native.library() is not None
    (folder,) = (tmp_path / "tmp").iterdir()
    assert folder.stat().st_mode & 0o777 == 0o700 and len(list(folder.glob("kernels-*.so"))) == 1
    monkeypatch.setattr(native, "_LIB", {})
    folder.chmod(0o755)  # a folder others can write into is not trusted: the torch operations run
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert native.library() is None


@needs_kernels
def test_the_library_is_built_once_per_cache_and_reused(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_LIB", {})
    monkeypatch.setenv("DDC_CACHE_DIR", str(tmp_path))
    assert native.library() is not None
    built = list(tmp_path.glob("kernels-*.so"))
    assert len(built) == 1 and not [p for p in tmp_path.iterdir() if p not in built]  # no temporary left
    mtime = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_LIB", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))  # a cached library needs no compiler
    assert native.library() is not None and built[0].stat().st_mtime_ns == mtime



@needs_kernels
@pytest.mark.parametrize("arch", ["-march=x86-64", "-march=x86-64-v3"])
def test_kernels_built_for_other_x86_levels_match_too(tiny_lm, one_thread, monkeypatch, tmp_path, arch):
    """The portable C paths (generic x86-64: no AVX; AVX2 without AVX-512, so no masked gathers and no
    fused score kernel), built here with DDC_NATIVE_ARCH, pass the self-check and give the torch bits."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86 code paths")
    monkeypatch.setattr(native, "_LIB", {})
    monkeypatch.setenv("DDC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DDC_NATIVE_ARCH", arch)
    other = native.kernels()
    if other is None:
        pytest.skip(f"the compiler does not build {arch}")
    assert not other.vnni and not other.amx
    monkeypatch.setattr(native, "_LIB", {})
    ex = _denoiser(tiny_lm, monkeypatch, intlinear.int_mm_is_exact(torch.device("cpu")))
    assert ex._checked_kernels(other) is other
    ex.nk = other
    g = torch.Generator().manual_seed(7)
    h = _residual_rows(ex, 70, 8)
    qkv, a = torch.randn(2, 64, 3 * ex.cfg.d_model, generator=g), torch.randn(70, ex.cfg.d_model, generator=g)
    for fn in (lambda: ex.residual_updates(ex.blocks[1], h, a), lambda: ex._attention_per_thread(*ex._heads(qkv, None), None),
               lambda: ex.frequencies(*ex.layer_norm(h, ex.gf))):
        want, got = _both(ex, fn)
        assert _equal(want, got)
