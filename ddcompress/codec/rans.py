"""ddc's entropy coder (format 4): the denoiser's integer frequencies quantized by exact integer
arithmetic, coded with rANS. Everything here is defined on integers, so a file decodes the same on any
machine and with any later library: nothing rests on how a library sums floats.

Quantization of one row of V integer frequencies f_j (0 <= f_j <= 2^24, T = sum f_j > 0) to 24 bits:

    C_i = sum_{j<i} f_j,   W = 2^24 - V,   cdf(i) = floor(C_i * W / T) + i     (cdf(0) = 0, cdf(V) = 2^24)

symbol s codes as the interval [cdf(s), cdf(s+1)), at least 1 wide: every token stays codable.

rANS (state x in [2^31, 2^63), which a signed 64-bit integer holds on any device; words of 32 bits;
L = 2^31). The encoder runs over the symbols last to first, from x = L: if x >= width << 39, it pushes
the low word of x and shifts x right by 32; then x = (x // width) << 24 + x % width + start. At the end
it pushes x's high word, then its low word. The payload is the pushed words last to first (the order a
decoder reads them), little-endian u32. The decoder starts from x = word0 | word1 << 32 (in [L, 2^63),
else the data is corrupt) and per symbol takes q = x mod 2^24, the s with cdf(s) <= q < cdf(s+1),
x = width * (x >> 24) + q - start, and when x < L reads x = x << 32 | next word.
A whole stream ends at x = L with every word read: a check on top of the token CRCs.

The C kernels (native/coder.c, `rans_*`) compute the same integers several times faster and release the
GIL; the Python here is the definition and the fallback (DDC_NATIVE=0, no compiler).
"""
from __future__ import annotations

import bisect

import numpy as np

PRECISION = 24
M = 1 << PRECISION
L = 1 << 31
WORD_MASK = (1 << 32) - 1
BLOCK = 64  # the C decoder's search blocks (native/coder.c RANS_BLOCK)

_NATIVE: dict[str, object] = {}


class CorruptStream(ValueError):
    """The payload ran out of words or did not end where its encoder left it."""


def _cdf(C: int, T: int, W: int, i: int) -> int:
    return C * W // T + i


def interval(row: np.ndarray, s: int) -> tuple[int, int, int, int]:
    """(start, width, T, f_s) of symbol s under one row of integer frequencies (the definition)."""
    f = row.astype(np.int64)
    V = len(f)
    C, F = int(f[:s].sum()), int(f[s])
    T = C + F + int(f[s + 1 :].sum())
    if T <= 0:
        raise ValueError("a row of frequencies without mass")
    W = M - V
    lo = _cdf(C, T, W, s)
    return lo, _cdf(C + F, T, W, s + 1) - lo, T, F


def _find(row: np.ndarray, q: int) -> tuple[int, int, int]:
    """(s, start, width) of the symbol whose interval holds q: the largest s with cdf(s) <= q."""
    f = row.astype(np.int64)
    V = len(f)
    Cx = np.concatenate([[0], np.cumsum(f)])
    T, W = int(Cx[-1]), M - V
    if T <= 0:
        raise ValueError("a row of frequencies without mass")
    # cdf(i) <= q  <=>  C_i W + i T < (q + 1) T, increasing in i
    s = bisect.bisect_left(range(V + 1), (q + 1) * T, key=lambda i: int(Cx[i]) * W + i * T) - 1
    lo = _cdf(int(Cx[s]), T, W, s)
    return s, lo, _cdf(int(Cx[s + 1]), T, W, s + 1) - lo


def encode_words(starts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The payload words (decode order, uint32) of the symbols (start, width), first to last."""
    pushed = []
    x = L
    for st, w in zip(reversed(starts.tolist()), reversed(widths.tolist())):
        if x >= w << 39:
            pushed.append(x & WORD_MASK)
            x >>= 32
        x = ((x // w) << PRECISION) + x % w + st
        assert L <= x < 1 << 63
    pushed += [x >> 32, x & WORD_MASK]
    return np.array(pushed[::-1], dtype=np.uint32)


def _lib():
    """The C kernels if they agree with this module on a fixed case (else None: speed, never a file)."""
    if "lib" not in _NATIVE:
        from ..native import kernels as native

        lib = native.library()
        _NATIVE["lib"] = lib if lib is not None and _self_check(lib) else None
        native.record("coder", "rANS in C" if _NATIVE["lib"] is not None else "rANS in Python")
    return _NATIVE["lib"]


def _self_check(lib) -> bool:
    rng = np.random.default_rng(0)
    V, n = 1000, 24
    freq = np.where(rng.random((n, V)) < 0.3, rng.integers(0, M + 1, (n, V)), 0).astype(np.float32)
    freq[:, 0] = M  # the denoiser's largest frequency
    freq[3] = 0
    freq[3, 999] = M  # all the mass on the last symbol
    sym = rng.integers(0, V, n).astype(np.int32)
    sym[3] = 5
    try:
        st, wd, tot, fs = _symbols_c(lib, freq, sym)
        ref = [interval(freq[r], int(sym[r])) for r in range(n)]
        if st.tolist() != [r[0] for r in ref] or wd.tolist() != [r[1] for r in ref]:
            return False
        words = _encode_c(lib, st, wd)
        if not np.array_equal(words, encode_words(st, wd)):
            return False
        dec = Decoder(words.tobytes(), lib)
        if dec.decode(freq).tolist() != sym.tolist() or not dec.finished():
            return False
        table, idx = np.unique(freq, return_inverse=True)  # the same rows as indices into a table
        dec = Decoder(words.tobytes(), lib)
        got = dec.decode_indices(idx.reshape(freq.shape).astype(np.int16), table.astype(np.int32))
        return got.tolist() == sym.tolist() and dec.finished()
    except (ValueError, OSError):
        return False


def _symbols_c(lib, freq: np.ndarray, sym: np.ndarray):
    n, V = freq.shape
    st, wd = np.empty(n, np.uint32), np.empty(n, np.uint32)
    tot, fs = np.empty(n), np.empty(n)
    if lib.rans_symbols_f32(freq.ctypes.data, n, V, sym.ctypes.data, st.ctypes.data, wd.ctypes.data,
                            tot.ctypes.data, fs.ctypes.data):
        raise ValueError("a symbol out of range or a row of frequencies without mass")
    return st, wd, tot, fs


def _encode_c(lib, st: np.ndarray, wd: np.ndarray) -> np.ndarray:
    out = np.empty(len(st) + 2, np.uint32)
    k = lib.rans_encode(st.ctypes.data, wd.ctypes.data, len(st), out.ctypes.data, len(out))
    if k < 0:
        raise ValueError("invalid symbol interval")
    return out[:k].copy()


def _rows(freq: np.ndarray) -> np.ndarray:
    freq = np.ascontiguousarray(freq, dtype=np.float32)
    if freq.ndim != 2 or freq.shape[1] < 2 or freq.shape[1] >= M:
        raise ValueError(f"frequency rows must be (n, V) with 2 <= V < 2^24, got {freq.shape}")
    return freq


def _muldiv(C, W: int, T):
    """floor(C * W / T) for int64 tensors 0 <= C <= T < 2^48 and W < 2^24, exact in int64: W split
    into two 12-bit halves keeps every product below 2^61."""
    w1, w0 = W >> 12, W & 0xFFF
    q1, r1 = C * w1 // T, C * w1 % T
    return (q1 << 12) + ((r1 << 12) + C * w0) // T


def intervals_torch(freq, symbols):
    """`interval` of every row in torch integer operations on the rows' own device: (start, width, T,
    f_s) as int64 tensors. A GPU encoder then moves four numbers per token to the host, not V."""
    import torch

    f = freq.to(torch.int64)  # exact: integers <= 2^24
    n, V = f.shape
    if not 2 <= V < M:
        raise ValueError(f"frequency rows must have 2 <= V < 2^24, got {V}")
    s = symbols.to(device=f.device, dtype=torch.int64).view(-1, 1)
    fs = f.gather(1, s).view(-1)
    upto = f.cumsum(1).gather(1, s).view(-1)  # C_{s+1}
    T = f.sum(1)
    if bool((T <= 0).any()):
        raise ValueError("a row of frequencies without mass")
    W, s = M - V, s.view(-1)
    lo = _muldiv(upto - fs, W, T) + s
    return lo, _muldiv(upto, W, T) + s + 1 - lo, T, fs


def cdf_torch(freq):
    """cdf(0..V) of every row, (n, V + 1) int32, in torch integer operations on the rows' device."""
    import torch

    f = freq.to(torch.int64)
    n, V = f.shape
    C = torch.nn.functional.pad(f.cumsum(1), (1, 0))  # C_0 .. C_V
    T = C[:, -1:]
    if bool((T <= 0).any()):
        raise ValueError("a row of frequencies without mass")
    return (_muldiv(C, M - V, T) + torch.arange(V + 1, device=f.device)).to(torch.int32)


class DeviceDecoder:
    """Many streams decoded at once on a device (a GPU decoder: the rows stay there, only the symbols
    move). Per row of a block: the row's cdf (`cdf_torch`), then one batched step per position, every
    stream advancing by one symbol: the same integers as `Decoder`, in signed int64 (the state stays
    below 2^63). Corrupt streams are flagged on the device and raised once per block."""

    def __init__(self, payloads: list[bytes], device):
        import torch

        if any(len(p) % 4 for p in payloads):
            raise CorruptStream("a payload is not word-aligned")
        words = [np.frombuffer(p, dtype="<u4").astype(np.int64) for p in payloads]
        self.n = torch.tensor([len(w) for w in words], dtype=torch.int64, device=device)
        width = max([len(w) for w in words] + [2])
        pad = np.zeros((len(words), width), dtype=np.int64)
        for k, w in enumerate(words):
            pad[k, : len(w)] = w
        self.words = torch.from_numpy(pad).to(device)
        self.x = self.words[:, 0] | self.words[:, 1] << 32  # (garbage for a stream under 2 words: flagged)
        self.bad = (self.n < 2) | (self.x < L)  # x < 2^63 holds: two words give at most 2^64 - 1 -> negative
        self.pos = torch.full_like(self.n, 2)
        self.started = torch.zeros_like(self.bad)

    def decode(self, freq, streams: list[tuple[int, int, int]]):
        """Symbols (n,) int64 on the device of the rows freq (n, V); streams: (stream k, a, b), rows a:b
        are stream k's next b - a symbols, in order."""
        import torch

        if len({k for k, _, _ in streams}) != len(streams):
            raise ValueError("one piece per stream and block (its rows in order)")
        dev = freq.device
        cdf = cdf_torch(freq)
        n, most = len(freq), max((b - a for _, a, b in streams), default=0)
        # the pieces' rows side by side, padded with row n (sym's scratch entry; its cdf is row n - 1's):
        # every step works on all pieces at once, with fixed shapes and no host round trip until the end
        rows = torch.full((len(streams), most), n, dtype=torch.int64)
        for i, (_, a, b) in enumerate(streams):
            rows[i, : b - a] = torch.arange(a, b)
        rows = rows.to(dev)
        k = torch.tensor([k for k, _, _ in streams], dtype=torch.int64, device=dev)
        sym = torch.zeros(n + 1, dtype=torch.int64, device=dev)
        mask, last = (1 << PRECISION) - 1, self.words.shape[1] - 1
        x, p, n_words = self.x[k], self.pos[k], self.n[k]
        bad = torch.zeros_like(x, dtype=torch.bool)
        for j in range(most):
            r = rows[:, j]
            live = r < n
            c = cdf[r.clamp(max=n - 1)]
            q = x & mask
            s = torch.searchsorted(c, q.to(torch.int32).unsqueeze(1), right=True)
            lo = c.gather(1, s - 1).squeeze(1).long()
            w = c.gather(1, s).squeeze(1).long() - lo
            y = w * (x >> PRECISION) + q - lo
            need = live & (y < L)
            bad |= need & (p >= n_words)
            y = torch.where(need, y << 32 | self.words[k, p.clamp(max=last)], y)
            x = torch.where(live, y, x)
            p = p + need.long()
            sym[r] = s.squeeze(1) - 1
        self.x[k], self.pos[k] = x, p
        self.bad[k] |= bad
        sym = sym[:n]
        done = torch.zeros_like(self.bad)
        done[k] = True
        if bool((self.bad & done).any()):
            raise CorruptStream("the coded data ran out or its first state is invalid")
        self.started |= done
        return sym

    def finished(self, k: int) -> bool:
        if not bool(self.started[k]):  # nothing decoded: the payload must be the bare initial state
            return int(self.n[k]) == 2 and int(self.x[k]) == L
        return int(self.x[k]) == L and int(self.pos[k]) == int(self.n[k])


class Encoder:
    """One stream: `add` each block of rows and their true symbols in decode order, then `payload`."""

    def __init__(self, native: bool = True):
        self.lib = _lib() if native else None
        self.starts: list[np.ndarray] = []
        self.widths: list[np.ndarray] = []

    def add(self, freq: np.ndarray, symbols: np.ndarray) -> float:
        """Queue the symbols; returns their ideal code length in bits (sum of -log2 f_s / T)."""
        freq, sym = _rows(freq), np.ascontiguousarray(symbols, dtype=np.int32)
        if len(sym) != len(freq):
            raise ValueError("one symbol per row")
        if self.lib is not None:
            st, wd, tot, fs = _symbols_c(self.lib, freq, sym)
        else:
            parts = [interval(freq[r], int(sym[r])) for r in range(len(sym))]
            st = np.array([p[0] for p in parts], dtype=np.uint32)
            wd = np.array([p[1] for p in parts], dtype=np.uint32)
            tot = np.array([p[2] for p in parts], dtype=np.float64)
            fs = np.array([p[3] for p in parts], dtype=np.float64)
        return self.add_intervals(st, wd, tot, fs)

    def add_intervals(self, starts, widths, tot, fs) -> float:
        """Queue symbols by their intervals (`interval`, `intervals_torch`); returns the ideal bits."""
        self.starts.append(np.asarray(starts, dtype=np.uint32))
        self.widths.append(np.asarray(widths, dtype=np.uint32))
        with np.errstate(divide="ignore"):  # a frequency of 0 (past the exp table): infinite ideal bits
            return float(-np.log2(np.asarray(fs, np.float64) / np.asarray(tot, np.float64)).sum())

    def payload(self) -> bytes:
        st = np.concatenate(self.starts) if self.starts else np.zeros(0, np.uint32)
        wd = np.concatenate(self.widths) if self.widths else np.zeros(0, np.uint32)
        words = _encode_c(self.lib, st, wd) if self.lib is not None else encode_words(st, wd)
        return words.astype("<u4").tobytes()


class Decoder:
    """One stream's payload, decoded block by block of rows in the encoder's order."""

    def __init__(self, payload: bytes, lib=None, native: bool = True):
        if len(payload) % 4:
            raise CorruptStream("a payload is not word-aligned")
        self.words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        self.lib = lib if lib is not None else (_lib() if native else None)
        self.state = np.zeros(1, np.uint64)  # C-side state; position 0 = not started
        self.pos = np.zeros(1, np.int64)
        self._x: int | None = None  # the Python state

    def decode(self, freq: np.ndarray) -> np.ndarray:
        """The next len(freq) symbols (int64), row r's under frequencies freq[r]."""
        freq = _rows(freq)
        n, V = freq.shape
        if self.lib is not None:
            sym = np.empty(n, np.int32)
            scratch = np.empty(-(-V // BLOCK))
            rc = self.lib.rans_decode_f32(freq.ctypes.data, n, V, self.words.ctypes.data, len(self.words),
                                          self.state.ctypes.data, self.pos.ctypes.data, sym.ctypes.data,
                                          scratch.ctypes.data)
            if rc == -2:
                raise ValueError("a row of frequencies without mass")
            if rc:
                raise CorruptStream("the coded data ran out")
            return sym.astype(np.int64)
        return np.array([self._decode_py(freq[r]) for r in range(n)], dtype=np.int64)

    def decode_indices(self, idx: np.ndarray, table: np.ndarray) -> np.ndarray:
        """`decode` for rows given as exp-table indices: row r's frequencies are table[idx[r]] (idx int16
        or uint16 in [0, len(table)), as the denoiser makes them; table the integer frequencies)."""
        idx = np.ascontiguousarray(idx).view(np.uint16)
        table = np.ascontiguousarray(table, dtype=np.int32)
        if idx.ndim != 2 or not 2 <= idx.shape[1] < M:
            raise ValueError(f"index rows must be (n, V) with 2 <= V < 2^24, got {idx.shape}")
        if self.lib is None:
            return self.decode(table[idx].astype(np.float32))
        n, V = idx.shape
        sym = np.empty(n, np.int32)
        scratch = np.empty(-(-V // BLOCK))
        rc = self.lib.rans_decode_u16(idx.ctypes.data, table.ctypes.data, n, V, self.words.ctypes.data,
                                      len(self.words), self.state.ctypes.data, self.pos.ctypes.data,
                                      sym.ctypes.data, scratch.ctypes.data)
        if rc == -2:
            raise ValueError("a row of frequencies without mass")
        if rc:
            raise CorruptStream("the coded data ran out")
        return sym.astype(np.int64)

    def _decode_py(self, row: np.ndarray) -> int:
        w = self.words
        if self._x is None:
            if len(w) < 2:
                raise CorruptStream("the coded data ran out")
            self._x, self.pos[0] = int(w[0]) | int(w[1]) << 32, 2
            if not L <= self._x < 1 << 63:
                raise CorruptStream("invalid initial state")
        x = self._x
        s, lo, wd = _find(row, x & (M - 1))
        x = wd * (x >> PRECISION) + (x & (M - 1)) - lo
        if x < L:
            if self.pos[0] >= len(w):
                raise CorruptStream("the coded data ran out")
            x = x << 32 | int(w[self.pos[0]])
            self.pos[0] += 1
        self._x = x
        return s

    # -- one symbol at a time, by its interval (format 5: the caller finds the symbol, mixing.find) --
    def _get_x(self) -> int:
        if self.lib is None:
            x = self._x
        else:
            x = int(self.state[0]) if self.pos[0] else None
        if x is None:
            w = self.words
            if len(w) < 2:
                raise CorruptStream("the coded data ran out")
            x, self.pos[0] = int(w[0]) | int(w[1]) << 32, 2
            if not L <= x < 1 << 63:
                raise CorruptStream("invalid initial state")
            self._set_x(x)
        return x

    def _set_x(self, x: int) -> None:
        if self.lib is None:
            self._x = x
        else:
            self.state[0] = x

    def quantile(self) -> int:
        """q = x mod 2^24 of the next symbol: its interval [start, start + width) holds q."""
        return self._get_x() & (M - 1)

    def advance(self, start: int, width: int) -> None:
        """Consume the next symbol, whose interval is (start, width) and holds `quantile()`."""
        x = self._get_x()
        q = x & (M - 1)
        if not (width >= 1 and start <= q < start + width):
            raise CorruptStream("an interval that does not hold the quantile")
        x = width * (x >> PRECISION) + q - start
        if x < L:
            if self.pos[0] >= len(self.words):
                raise CorruptStream("the coded data ran out")
            x = x << 32 | int(self.words[self.pos[0]])
            self.pos[0] += 1
        self._set_x(x)

    def finished(self) -> bool:
        """True when the stream ended where its encoder started: state L, every word read."""
        x = self._x if self.lib is None else (int(self.state[0]) if self.pos[0] else None)
        if x is None:  # nothing decoded: the payload must be the bare initial state
            return len(self.words) == 2 and int(self.words[0]) | int(self.words[1]) << 32 == L
        return x == L and int(self.pos[0]) == len(self.words)


__all__ = ["Encoder", "Decoder", "DeviceDecoder", "CorruptStream", "interval", "intervals_torch", "cdf_torch",
           "encode_words", "PRECISION"]
