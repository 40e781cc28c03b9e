"""Fused CPU kernels, compiled for this machine on first use into one library: the exact denoiser's
(`denoiser.c`) and the entropy coder's (`coder.c`: format 4's rANS, format 5's mixed rows).

Optional and invisible in the output: each kernel computes the same IEEE operations in the same order
as the torch operations it replaces (exact.py keeps those as the fallback), so files are the same
with or without it. Between two GEMMs the exact path is a dozen elementwise passes (conversions,
integer LayerNorm, quantization, exp-table lookups) that torch runs one full pass at a time; fused,
each row is read once while it is in cache. On CPUs with AMX tiles (Intel Sapphire Rapids and later)
the int8 GEMMs themselves run on the tiles too (1.5-4x oneDNN's VNNI GEMM on one core), with a head's
whole attention in one call; their int32 sums are the same integers (DDC_AMX=0 turns them off).

The source is compiled with the system C compiler (`$CC`, else `cc`) into a shared library cached
under `$DDC_CACHE_DIR` (default `$XDG_CACHE_HOME/ddcompress` or `~/.cache/ddcompress`; if that cannot
be written, a private folder in the temp directory), keyed by the source, the flags and the CPU (it is
built with -march=native). No compiler, a failed build, or a
library that fails the self-check in exact.py: the torch operations run instead. DDC_NATIVE=0 turns it
off. Calls go through ctypes, which releases the GIL, so worker threads run kernels in parallel.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# the denoiser's kernels and the entropy coder's (rANS, mixing), compiled together into one library
SOURCES = (Path(__file__).with_name("denoiser.c"), Path(__file__).with_name("coder.c"))
# no fast-math and no contraction into FMA: every operation rounds as written, as torch's do
FLAGS = ("-O3", "-std=c99", "-fno-fast-math", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC")
ARCH_FLAGS = (("-march=native",), ("-mcpu=native",), ())  # first that builds; DDC_NATIVE_ARCH overrides
# 64-bit targets whose float arithmetic is IEEE single/double without excess precision (not x87)
MACHINES = {"x86_64", "amd64", "aarch64", "arm64", "ppc64le", "s390x", "riscv64"}

_P, _I, _F, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_double
_I32 = ctypes.c_int32
SIGNATURES = {
    "att_digits_i32": (_P, _I, _I, _P, _P, _I32, _P, _P),
    "att_digits_f32": (_P, _I, _I, _P, _P, _I32, _P, _P),
    "quant_rows_f32": (_P, _I, _I, _P, _P),
    "scale_acc_i32": (_P, _I, _I, _P, _P, _P),
    "scale_acc_f32": (_P, _I, _I, _P, _P, _P),
    "add_fixed_i32": (_P, _P, _I, _I, _P, _P, _F, _P),
    "add_fixed_f32": (_P, _P, _I, _I, _P, _P, _F, _P),
    "glu_q8_i32": (_P, _I, _I, _P, _P, _P, _I32, _I32, _P, _P),
    "glu_q8_f32": (_P, _I, _I, _P, _P, _P, _I32, _I32, _P, _P),
    "layer_norm_q8": (_P, _I, _I, _P, _P, _I32, _D, _P, _P, _P),
    "head_freqs_i32": (_P, _I, _I, _P, _P, _P, _I32, _P),
    "embed_q16": (_P, _I, _P, _P, _I, _P),
    "rans_symbols_f32": (_P, _I, _I, _P, _P, _P, _P, _P),  # format 4's entropy coder (rans.py)
    "rans_encode": (_P, _P, _I, _P, _I),
    "mix_row_stats": (_P, _I, _I, _P, _P, _P, _P, _P, _P),  # format 5's mixed rows (mixing.py)
    "mix_find": (_P, _I, _I, _I, _P, _P, _I, _I, _P, _P, _I, _I, _P),
    "rans_decode_f32": (_P, _I, _I, _P, _I, _P, _P, _P, _P),
    "rans_decode_u16": (_P, _P, _I, _I, _P, _I, _P, _P, _P, _P),
    "weighted_values": (_P, _I, _I, _I, _P, _P, _I),
    "pack_keys": (_P, _I, _I, _P),  # these two: AVX-512 VNNI builds only (VNNI_ONLY)
    "att_scores_digits": (_P, _I, _I, _I, _P, _P, _P, _I32, _P, _P, _P),
    "head_inputs_q8": (_P, _I, _I, _P, _P, _P, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I, _P),
    "amx_enable": (),  # from here: builds for CPUs with AMX tiles only (AMX_ONLY)
    "amx_pack": (_P, _I, _I, _I, _I, _P),
    "amx_gemm": (_P, _I, _I, _I, _P, _I, _P, _I),
    "amx_gemm_scaled": (_P, _I, _I, _I, _P, _I, _P, _P, _P, _I),
    "amx_gemm_add_fixed": (_P, _I, _I, _I, _P, _I, _P, _P, _F, _P, _P, _I),
    "attention_head_workspace": (_I, _I, _I, _I),
    "attention_head_amx": (_P, _I, _I, _P, _P, _P, _I, _I, _I, _P, _P, _F, _F, _P, _I32, _I32, _I32, _I, _P, _I, _P),
    "amx_gemm_glu_q8": (_P, _I, _I, _I, _P, _I, _P, _P, _P, _I32, _I32, _P, _P),
    "attention_head_qkv_workspace": (_I, _I, _I, _I, _I),
    "attention_head_qkv_amx": (_P, _I, _P, _I, _I, _I, _P, _P, _P, _I, _I, _P, _P, _F, _F, _P, _I32, _I32, _I32, _I, _P,
                               _I, _P),
}
RESTYPES = {"rans_symbols_f32": ctypes.c_int, "mix_row_stats": ctypes.c_int, "mix_find": ctypes.c_int, "rans_encode": ctypes.c_int64, "rans_decode_f32": ctypes.c_int, "rans_decode_u16": ctypes.c_int,
            "amx_enable": ctypes.c_int, "amx_gemm": ctypes.c_int, "amx_gemm_scaled": ctypes.c_int,
            "amx_gemm_add_fixed": ctypes.c_int, "attention_head_workspace": ctypes.c_int64,
            "attention_head_amx": ctypes.c_int, "attention_head_qkv_workspace": ctypes.c_int64,
            "attention_head_qkv_amx": ctypes.c_int, "amx_gemm_glu_q8": ctypes.c_int}

VNNI_ONLY = {"pack_keys", "att_scores_digits"}  # the fused score kernel (denoiser.c, #if AVX512VNNI)
AMX_ONLY = {"amx_enable", "amx_pack", "amx_gemm", "amx_gemm_scaled", "amx_gemm_add_fixed", "attention_head_workspace",
            "attention_head_amx", "attention_head_qkv_workspace", "attention_head_qkv_amx", "amx_gemm_glu_q8"}  # int8 GEMMs on the tile unit (denoiser.c, #if AMX)
AMX_K, AMX_N = 64, 32  # amx_pack pads K and N to multiples of these

_LIB: dict[str, object] = {}  # "lib": the loaded library or None; "why": the reason it is None
# what each part of the codec ran on in this process, for `ddc -v` (status); recorded by the parts
PARTS = ("denoiser", "coder", "mixer")
_RAN: dict[str, str] = {}


def cache_dir() -> Path:
    if os.environ.get("DDC_CACHE_DIR"):
        return Path(os.environ["DDC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ddcompress"


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags (a home directory shared by
    different machines then holds one library per kind of CPU)."""
    text = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f.read(1 << 16).splitlines() if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        text += "\n".join(sorted(set(lines)))
    except OSError:
        pass
    return text


def _arch_flags() -> tuple[tuple[str, ...], ...]:
    """The -march choices to try: the machine's own, or DDC_NATIVE_ARCH (e.g. "-march=x86-64-v3" for a
    cache shared by different CPUs; the tests use it to build the generic and AVX2 code paths)."""
    arch = os.environ.get("DDC_NATIVE_ARCH")
    return (tuple(shlex.split(arch)),) if arch else ARCH_FLAGS


def _build(path: Path) -> bool:
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    for arch in _arch_flags():
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        try:
            r = subprocess.run([cc, *FLAGS, *arch, *map(str, SOURCES), "-o", tmp, "-lm"], capture_output=True, timeout=120)
            if r.returncode == 0:
                os.replace(tmp, path)  # atomic: concurrent builders each install a whole library
                return True
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return False


def library():
    """The loaded kernel library, or None (disabled, unsupported platform, no compiler, build failed)."""
    if "lib" in _LIB:
        return _LIB["lib"]
    lib = None
    if os.environ.get("DDC_NATIVE", "1") == "0":
        _LIB["why"] = "torch operations (DDC_NATIVE=0)"
    elif platform.machine().lower() not in MACHINES or sys.maxsize <= 2**32:
        _LIB["why"] = f"torch operations (no C kernels for {platform.machine()})"
    else:
        no_cc = shutil.which(os.environ.get("CC") or "cc") is None  # (a cached library needs none)
        _LIB["why"] = ("torch operations (no C compiler: the C kernels are about 2x faster)" if no_cc
                       else "torch operations (the C kernels did not build)")
        key = hashlib.sha256(b"".join(src.read_bytes() for src in SOURCES) + repr((FLAGS, _arch_flags(), platform.machine(), _cpu_id())).encode()).hexdigest()[:16]
        for folder in (cache_dir(), _private_tmp()):  # an unwritable cache (read-only home): a private temp folder
            if folder is None:
                continue
            path = folder / f"kernels-{key}.so"
            try:
                if path.exists() or _build(path):
                    lib = ctypes.CDLL(str(path))
                    for name, args in SIGNATURES.items():
                        if name in VNNI_ONLY | AMX_ONLY and not hasattr(lib, name):
                            continue
                        fn = getattr(lib, name)
                        fn.argtypes, fn.restype = args, RESTYPES.get(name)
                    break
            except (OSError, AttributeError):
                lib = None
    _LIB["lib"] = lib
    return lib


def record(part: str, how: str) -> None:
    """What `part` (one of PARTS) runs on in this process: each part records itself when it first runs."""
    _RAN[part] = how


def record_check(passed: bool, amx: bool = False) -> None:
    """The exact denoiser's load-time comparison of the kernels with the torch operations."""
    record("denoiser", (("C kernels, AMX GEMMs" if amx else "C kernels") if passed
                        else "torch operations (the C kernels failed their self-check)"))


def status() -> dict[str, str]:
    """What native code this process ran on so far, for `ddc -v`, per part that ran (in PARTS' order):
    "denoiser": the exact denoiser's arithmetic on a CPU, "C kernels" (", AMX GEMMs" when the int8
    GEMMs run on the tiles) or "torch operations (why)"; "coder": rANS, "rANS in C" or "rANS in Python";
    "mixer": format 5's mixing, "mixing in C" or "mixing in Python"."""
    return {part: _RAN[part] for part in PARTS if part in _RAN}


def _private_tmp() -> Path | None:
    """tempdir/ddcompress-<uid>, made 0700 and owned by this user (else None: another user could have
    put a library there for us to load)."""
    if not hasattr(os, "getuid"):
        return None
    folder = Path(tempfile.gettempdir()) / f"ddcompress-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.stat()
    except OSError:
        return None
    return folder if st.st_uid == os.getuid() and not st.st_mode & 0o077 else None


def _ptr(t: torch.Tensor, dtype: torch.dtype) -> int:
    if t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError(f"native kernel wants a contiguous CPU {dtype} tensor, got {t.dtype} {tuple(t.stride())}")
    return t.data_ptr()


def _acc_kind(acc: torch.Tensor) -> str:
    return "i32" if acc.dtype == torch.int32 else "f32"


class Kernels:
    """torch-facing wrappers: each takes and returns tensors, the shapes of exact.py's torch code."""

    def __init__(self, lib):
        self.lib = lib
        self.vnni = all(hasattr(lib, name) for name in VNNI_ONLY)  # the fused score kernel was built
        self.amx = amx_ready(lib)  # int8 GEMMs on the AMX tiles

    def att_digits(self, dot, unit, tab, top, hi, lo) -> None:
        """hi, lo (n, L) <- the digits of att_exp_table[min(rint((max - dot) * unit), top)]."""
        n, L = dot.shape
        kind = _acc_kind(dot)
        dt = torch.int8 if kind == "i32" else torch.float32
        getattr(self.lib, f"att_digits_{kind}")(_ptr(dot, dot.dtype), n, L, _ptr(unit, torch.float32),
                                                _ptr(tab, torch.int32), top, _ptr(hi, dt), _ptr(lo, dt))

    def quant_rows(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = y.shape
        q, mx = torch.empty(n, k, dtype=torch.int8), torch.empty(n, 1)
        self.lib.quant_rows_f32(_ptr(y, torch.float32), n, k, q.data_ptr(), mx.data_ptr())
        return q, mx

    def scale_acc(self, acc, row, col, out) -> torch.Tensor:
        n, k = acc.shape
        getattr(self.lib, f"scale_acc_{_acc_kind(acc)}")(_ptr(acc, acc.dtype), n, k, _ptr(row, torch.float32),
                                                         _ptr(col, torch.float32), _ptr(out, torch.float32))
        return out

    def add_fixed(self, h, acc, row, col, unit: float, out) -> torch.Tensor:
        n, k = acc.shape
        getattr(self.lib, f"add_fixed_{_acc_kind(acc)}")(_ptr(h, torch.int64), _ptr(acc, acc.dtype), n, k,
                                                         _ptr(row, torch.float32), _ptr(col, torch.float32), unit,
                                                         _ptr(out, torch.int64))
        return out

    def glu_q8(self, acc, row, col, sig, frac: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, f2 = acc.shape
        f = f2 // 2
        q, mx = torch.empty(n, f, dtype=torch.int8), torch.empty(n, 1)
        getattr(self.lib, f"glu_q8_{_acc_kind(acc)}")(_ptr(acc, acc.dtype), n, f, _ptr(row, torch.float32),
                                                      _ptr(col, torch.float32), _ptr(sig, torch.float32), frac, half,
                                                      q.data_ptr(), mx.data_ptr())
        return q, mx

    def gate_up_glu(self, a, bp, n2: int, row, col, sig, frac: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
        """glu_q8(amx_matmul(a, bp, n2), row, col, sig, frac, half) on the AMX tiles, a few rows at a time
        so that the GEMM's sums stay in cache."""
        (M, K), f = a.shape, n2 // 2
        _check_amx_operands(a, bp, n2)
        q, mx = torch.empty(M, f, dtype=torch.int8), torch.empty(M, 1)
        if M and not self.lib.amx_gemm_glu_q8(a.data_ptr(), M, K, max(a.stride(0), K), bp.data_ptr(), n2,
                                              _ptr(row, torch.float32), _ptr(col, torch.float32),
                                              _ptr(sig, torch.float32), frac, half, q.data_ptr(), mx.data_ptr()):
            raise MemoryError("amx_gemm_glu_q8")
        return q, mx

    def layer_norm(self, h, g, eps, ln_bits: int, g_unit: float) -> tuple[torch.Tensor, torch.Tensor]:
        """g: the integer gamma as int64; eps: LayerNorm's eps per shift of the row."""
        n, d = h.shape
        xs, q, scale = torch.empty(d, dtype=torch.int64), torch.empty(n, d, dtype=torch.int8), torch.empty(n, 1)
        self.lib.layer_norm_q8(_ptr(h, torch.int64), n, d, _ptr(g, torch.int64), _ptr(eps, torch.float64),
                               ln_bits, g_unit, xs.data_ptr(), q.data_ptr(), scale.data_ptr())
        return q, scale


    def head_inputs(self, q, k, v, pos, cos, sin, v1):
        """exact.head_inputs for one head, int8: (q8 (n, D), k8 (L, D), sq (n, 1), sv (1, D)), the values'
        int8 written into v1[:, :D]. q, k, v: (rows, D) views with unit column stride."""
        (n, D), L = q.shape, k.shape[0]
        if q.stride(1) != 1 or k.stride(1) != 1 or v.stride(1) != 1 or k.stride(0) != v.stride(0) or D > 256:
            raise ValueError("head_inputs wants rows with unit column stride")
        kr, qr = torch.empty(L, D), torch.empty(n, D)
        q8, sq = torch.empty(n, D, dtype=torch.int8), torch.empty(n, 1)
        k8, sk, sv = torch.empty(L, D, dtype=torch.int8), torch.empty(D), torch.empty(1, D)
        self.lib.head_inputs_q8(q.data_ptr(), q.stride(0), n, None if pos is None else _ptr(pos, torch.int64),
                                k.data_ptr(), v.data_ptr(), k.stride(0), L, D, _ptr(cos, torch.float32),
                                _ptr(sin, torch.float32), kr.data_ptr(), qr.data_ptr(), q8.data_ptr(), sq.data_ptr(),
                                k8.data_ptr(), sk.data_ptr(), _ptr(v1, torch.int8),
                                v1.stride(0), sv.data_ptr())
        return q8, k8, sq, sv


    def embed(self, x, q, s) -> torch.Tensor:
        """exact.embed: ids x (any shape) -> (..., d) int64 rint(q[x] * s[x]), q (V, d) int8, s (V, 1) fp64."""
        d = q.shape[1]
        xs = x.reshape(-1).contiguous()
        if xs.dtype != torch.int64 or not q.is_contiguous() or s.shape != (len(q), 1) or not s.is_contiguous():
            raise ValueError("embed wants int64 ids, contiguous int8 rows and their fp64 scales")
        if len(xs) and (int(xs.min()) < 0 or int(xs.max()) >= len(q)):
            raise IndexError("embed: token id out of range")
        out = torch.empty(*x.shape, d, dtype=torch.int64)
        self.lib.embed_q16(xs.data_ptr(), len(xs), _ptr(q, torch.int8), _ptr(s, torch.float64), d, out.data_ptr())
        return out

    def head_freqs(self, acc, col, f, tab, top: int, out) -> torch.Tensor:
        """exact.frequencies' integer frequencies from the head's int32 sums acc (n, V) into out."""
        n, V = acc.shape
        self.lib.head_freqs_i32(_ptr(acc, torch.int32), n, V, _ptr(col, torch.float32), _ptr(f, torch.float32),
                                _ptr(tab, torch.float32), top, _ptr(out, torch.float32))
        return out


    SCORE_ROWS = 16  # query rows per pass of the fused score kernel (SROWS in denoiser.c)

    def pack_keys(self, k8: torch.Tensor) -> torch.Tensor:
        """One head's int8 keys (L, D) in the layout of scores_digits (unsigned, k + 128)."""
        L, D = k8.shape
        kpack = torch.empty(L, D, dtype=torch.uint8)
        self.lib.pack_keys(_ptr(k8, torch.int8), L, D, kpack.data_ptr())
        return kpack

    def scores_digits(self, q8, kpack, unit, tab, top: int, rows, hi, lo) -> None:
        """att_digits of the scores q8 @ k8^T, computed SCORE_ROWS rows at a time (VNNI builds only);
        rows: scratch of at least SCORE_ROWS * L int32."""
        n, D = q8.shape
        L = kpack.shape[0]
        if rows.numel() < self.SCORE_ROWS * L or kpack.shape[1] != D:
            raise ValueError("scores_digits: scratch too small or keys of another width")
        self.lib.att_scores_digits(_ptr(q8, torch.int8), n, L, D, _ptr(kpack, torch.uint8), _ptr(unit, torch.float32),
                                   _ptr(tab, torch.int32), top, _ptr(rows, torch.int32), _ptr(hi, torch.int8),
                                   _ptr(lo, torch.int8))


    def weighted_values(self, acc, D: int, svq, out) -> None:
        """exact._weighted_values of a block from the value GEMM's sums acc (2n, Dp) ([hi; lo] rows) into
        out (n, D), a view whose rows may be apart (one head's columns of the attention output)."""
        n2, Dp = acc.shape
        if out.stride(1) != 1 or out.shape != (n2 // 2, D) or out.dtype != torch.float32:
            raise ValueError("weighted_values wants (n, D) float rows with unit column stride")
        self.lib.weighted_values(_ptr(acc, torch.int32), n2 // 2, D, Dp, _ptr(svq, torch.float32), out.data_ptr(),
                                 out.stride(0))


    def amx_pack(self, w: torch.Tensor) -> torch.Tensor:
        """B = w^T for amx_matmul, from w (N, K) int8 (any strides): the tile unit's layout, zero-padded."""
        N, K = w.shape
        if w.dtype != torch.int8 or w.device.type != "cpu":
            raise ValueError("amx_pack wants a CPU int8 matrix")
        bp = torch.empty(_packed_size(N, K), dtype=torch.int8)
        self.lib.amx_pack(w.data_ptr(), N, K, w.stride(0), w.stride(1), bp.data_ptr())
        return bp

    def attention_workspace(self, n: int, L: int, D: int, rows: int) -> torch.Tensor:
        """Scratch for attention_head (one per thread, reused across heads)."""
        return torch.empty(self.lib.attention_head_workspace(n, L, D, rows) + 64, dtype=torch.int8)

    def attention_head(self, q, k, v, pos, cos, sin, att_unit: float, sv_unit: float, tab, top: int, e0: int,
                       hi_top: int, rows: int, out, ws) -> None:
        """exact._attention_per_thread's work for one head on the AMX tiles, in one call: head_inputs, the
        logit units and value scales, the score GEMM and its digits, the value GEMM and weighted_values
        into out (n, D) (a view of the head's columns). q: (n, D), k, v: (L, D) views as for head_inputs;
        tab: the packed digits of the exp table less e0 (its entry at top), hi_top: the first index from
        which their hi digits are all 0; ws: attention_workspace(n, L, D, rows)."""
        (n, D), L = q.shape, k.shape[0]
        if q.stride(1) != 1 or k.stride(1) != 1 or v.stride(1) != 1 or k.stride(0) != v.stride(0) or D > 256:
            raise ValueError("attention_head wants rows with unit column stride")
        _check_head_out(out, n, D, ws, self.lib.attention_head_workspace(n, L, D, rows))
        base = ws.data_ptr()
        if not self.lib.attention_head_amx(q.data_ptr(), q.stride(0), n, None if pos is None else _ptr(pos, torch.int64),
                                           k.data_ptr(), v.data_ptr(), k.stride(0), L, D, _ptr(cos, torch.float32),
                                           _ptr(sin, torch.float32), att_unit, sv_unit, _ptr(tab, torch.int32), top,
                                           e0, hi_top, rows, out.data_ptr(), out.stride(0), base + (-base % 64)):
            raise MemoryError("attention_head_amx")

    def attention_qkv_workspace(self, n: int, L: int, d: int, D: int, rows: int) -> torch.Tensor:
        """Scratch for attention_head_qkv (one per thread, reused across heads)."""
        return torch.empty(self.lib.attention_head_qkv_workspace(n, L, d, D, rows) + 64, dtype=torch.int8)

    def attention_head_qkv(self, x8, xs, wq, col, h: int, D: int, pos, cos, sin, att_unit: float, sv_unit: float, tab,
                           top: int, e0: int, hi_top: int, rows: int, out, ws) -> None:
        """attention_head for head h with its q, k and v computed in the call from one chunk's LayerNorm
        output x8 (L, d) int8 (row stride free) and row scales xs (L, 1) and the qkv weights packed by
        amx_pack (3d columns) with their column scales col: the values attention_input would store. pos:
        the query rows (n,) or None (all L); out (n, D): a view of the head's columns. D % 32 == 0."""
        (L, d), n = x8.shape, (len(x8) if pos is None else len(pos))
        if x8.dtype != torch.int8 or x8.stride(1) != 1 or xs.shape != (L, 1) or D % 32 or D > 256 or col.numel() != 3 * d:
            raise ValueError("attention_head_qkv wants int8 rows, their scales, 3d column scales and D % 32 == 0, D <= 256")
        if wq.numel() != _packed_size(3 * d, d) or not 0 <= h < d // D:
            raise ValueError("attention_head_qkv: weights packed for another shape, or no such head")
        _check_head_out(out, n, D, ws, self.lib.attention_head_qkv_workspace(n, L, d, D, rows))
        base = ws.data_ptr()
        if not self.lib.attention_head_qkv_amx(x8.data_ptr(), x8.stride(0), _ptr(xs, torch.float32), L, d, n,
                                               None if pos is None else _ptr(pos, torch.int64), _ptr(wq, torch.int8),
                                               _ptr(col, torch.float32), h, D, _ptr(cos, torch.float32),
                                               _ptr(sin, torch.float32), att_unit, sv_unit, _ptr(tab, torch.int32),
                                               top, e0, hi_top, rows, out.data_ptr(), out.stride(0),
                                               base + (-base % 64)):
            raise MemoryError("attention_head_qkv_amx")

    def amx_matmul(self, a: torch.Tensor, bp: torch.Tensor, n: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """a (M, K) int8 (rows may be apart) @ B (K, n) packed by amx_pack -> (M, n) int32: torch._int_mm's
        integers."""
        out = torch.empty(len(a), n, dtype=torch.int32) if out is None else out
        self._amx("amx_gemm", a, bp, n, out, torch.int32)
        return out

    def amx_scale_acc(self, a, bp, n: int, row, col, out) -> torch.Tensor:
        """scale_acc(amx_matmul(a, bp, n), row, col, out), each block scaled while it is in cache."""
        self._amx("amx_gemm_scaled", a, bp, n, out, torch.float32, _ptr(row, torch.float32), _ptr(col, torch.float32))
        return out

    def amx_add_fixed(self, h, a, bp, n: int, row, col, unit: float, out) -> torch.Tensor:
        """add_fixed(h, amx_matmul(a, bp, n), row, col, unit, out), in the GEMM's blocks."""
        if h.shape != out.shape or h.stride() != out.stride():
            raise ValueError("amx_add_fixed: h and out of one layout")
        self._amx("amx_gemm_add_fixed", a, bp, n, out, torch.int64, _ptr(row, torch.float32), _ptr(col, torch.float32),
                  unit, _ptr(h, torch.int64))
        return out

    def _amx(self, fn: str, a, bp, n: int, out, dtype, *epilogue) -> None:
        M, K = a.shape
        _check_amx_operands(a, bp, n)
        if out.dtype != dtype or out.stride(1) != 1 or out.shape != (M, n):
            raise ValueError(f"{fn} writes {dtype} rows with unit column stride")
        if M and not getattr(self.lib, fn)(a.data_ptr(), M, K, max(a.stride(0), K), bp.data_ptr(), n, *epilogue,
                                           out.data_ptr(), out.stride(0)):
            raise MemoryError(fn)


def _packed_size(n: int, K: int) -> int:
    """Bytes of amx_pack's layout of a K x n matrix (both padded)."""
    return -(-n // AMX_N) * AMX_N * -(-K // AMX_K) * AMX_K


def _check_amx_operands(a: torch.Tensor, bp: torch.Tensor, n: int) -> None:
    if a.dtype != torch.int8 or a.stride(1) != 1 or bp.numel() != _packed_size(n, a.shape[1]):
        raise ValueError("amx GEMMs want int8 rows with unit column stride and B packed for their width")


def _check_head_out(out: torch.Tensor, n: int, D: int, ws: torch.Tensor, need: int) -> None:
    """An attention head call's output view (n, D) and its workspace (`need` bytes, aligned in it)."""
    if out.shape != (n, D) or out.stride(1) != 1 or out.dtype != torch.float32:
        raise ValueError("attention heads write (n, D) float rows with unit column stride")
    if ws.numel() < need + 64 or ws.dtype != torch.int8:
        raise ValueError("attention head: workspace too small")


def amx_ready(lib) -> bool:
    """Whether the library has the AMX GEMMs and Linux granted this process the tile state (once per
    process; DDC_AMX=0 turns them off)."""
    if os.environ.get("DDC_AMX", "1") == "0" or not all(hasattr(lib, name) for name in AMX_ONLY):
        return False
    if "amx" not in _LIB:
        _LIB["amx"] = bool(lib.amx_enable())
    return _LIB["amx"]


def kernels() -> Kernels | None:
    """The denoiser's kernels, or None: the torch operations run, and status() says why."""
    lib = library()
    if lib is None:
        record("denoiser", _LIB["why"])
    return None if lib is None else Kernels(lib)
