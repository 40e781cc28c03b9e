"""File-adaptive context mixing (format 5, mixer "cm1"): the denoiser's frequencies mixed with count
models that learn the file as it is coded.

mu_theta knows English, not this file. A decoder knows more than the denoiser uses: every token of
the file revealed so far (earlier groups whole, the current group's earlier steps). Count models
built from those tokens predict the next ones; a linear mixture in the probability domain, with
weights learned online from the code length, decides how far to trust each. Encoder and decoder
rebuild the same state, so nothing of it is stored in the file.

Everything here is integer arithmetic on Python ints, defined in docs/FORMAT.md ("Context mixing"):
no float decides a frequency, so files stay portable like the denoiser's own integers.

The pieces, for a position p about to be coded (the MD4 view: p is masked, some neighbours are
revealed, in any order):
  * count models: for each context shape (offsets relative to p, from both sides: an any-order coder
    sees right neighbours too), a table from the revealed context tokens to the counts of the token
    that followed them, kept to the `SLOT` most frequent tokens; an instance (context + target) is
    counted once, at the step where its last position is revealed;
  * product components: the denoiser's row restricted to a context's tokens, times their counts, and
    renormalized (the tokens both the denoiser and the file's statistics like);
  * a unigram of every revealed token plus the recent ones (dense: one cumulative row per step,
    shared by the step's rows);
  * the mixer: one weight per (component, evidence bucket, denoiser-confidence bucket); a row's weights
    split the 2^24 - V quantization budget, every token keeping its floor of 1 (rans.py).
The reference for tuning and ablations: benchmarks/results/mixing-ablation.md.
"""
from __future__ import annotations

import numpy as np

NAME = "cm1"  # the mixer's id in the header (FORMAT.md): a new rule gets a new id
PRECISION = 24
M = 1 << PRECISION

# context shapes: offsets of the context positions relative to the coded position p
SHAPES: tuple[tuple[int, ...], ...] = (
    (-1,), (-2, -1), (-3, -2, -1),  # left: the usual n-gram contexts
    (1,), (1, 2),  # right: what follows p, already revealed
    (-1, 1), (-2, -1, 1), (-1, 1, 2),  # both sides: only an any-order coder has these
)
SLOT = 16  # tokens kept per context (the most frequent; see _add)
COUNT_HALVE = 1 << 10  # a context's counts are halved when one reaches this (recent text weighs more)
MAX_CONTEXTS = 1 << 18  # per shape: beyond this its oldest contexts are dropped down to half
N_BUCKETS = 8  # evidence buckets of a count model (bit length of its total, capped)
D_BUCKETS = 12  # denoiser-confidence buckets (bit length of T // f_max, capped)
W_ONE = 1 << 16  # weight unit
W_INIT = W_ONE >> 4  # a component starts with 1/16 of the denoiser's weight
W_MIN, W_MAX = 1, 1 << 30
R_MAX = 1 << 24  # a responsibility ratio p_j / P is capped at 256 (fixed point 2^16)
LR_SHIFT = 4  # learning rate 1/16
RECENT, RECENT_K = 2048, 4  # the unigram: all revealed tokens plus RECENT_K x the last RECENT of them
UNIGRAM = True  # the unigram of the revealed tokens (off only for ablations)
PRODUCT = True  # product components: the denoiser's row times a context's counts, renormalized


def _bucket(n: int, cap: int) -> int:
    return min(n.bit_length(), cap) - 1 if n > 0 else 0


class Row:
    """One coded position's mixture: the denoiser's budget B0, the unigram's Bu, and the sparse count
    models as sorted tokens with their increments of the quantized cdf (see `Mixer.predict`)."""

    __slots__ = ("B0", "Bu", "toks", "incs", "comps", "db")

    def cdf_extra(self, s: int, ucum: np.ndarray, Nu: int) -> int:
        """The cdf's terms beyond the denoiser's at symbol s: floor(U_s Bu / Nu) + sum of increments of
        tokens below s."""
        e = int(ucum[s]) * self.Bu // Nu if self.Bu else 0
        for t, inc in zip(self.toks, self.incs):
            if t >= s:
                break
            e += inc
        return e

    def interval(self, s: int, C: int, F: int, T: int, ucum: np.ndarray, Nu: int) -> tuple[int, int]:
        """(start, width) of symbol s, given the denoiser row's C_s, f_s and T (the definition)."""
        lo = C * self.B0 // T + self.cdf_extra(s, ucum, Nu) + s
        hi = (C + F) * self.B0 // T + self.cdf_extra(s + 1, ucum, Nu) + s + 1
        return lo, hi - lo


class Mixer:
    """The adaptive state of one file: its tokens as revealed, count tables, unigram and
    mixer weights. `predict` a step's rows, `learn` each coded token, `reveal` the step's tokens."""

    def __init__(self, n_tokens: int, vocab: int):
        """n_tokens: room for the file's tokens (grows as tokens are revealed past it: a decoder's token
        array follows the data it has decoded, never a header's claim)."""
        self.V = vocab
        self.tok = np.zeros(max(n_tokens, 1), dtype=np.int64)
        self.known = np.zeros(max(n_tokens, 1), dtype=bool)
        self.tables: list[dict] = [dict() for _ in SHAPES]
        self.uni = np.zeros(vocab, dtype=np.int64)  # the unigram component's counts (all + RECENT_K x recent)
        self.seen = np.zeros(vocab, dtype=np.int64)  # every revealed token
        self.recent = np.zeros(vocab, dtype=np.int64)  # the last RECENT revealed tokens
        self.fifo: list[int] = []
        self.ucum = np.zeros(vocab + 1, dtype=np.int64)
        self.Nu = 0
        nm = len(SHAPES) + 1  # count shapes, unigram
        cells = N_BUCKETS * 2
        nd = D_BUCKETS
        self.w = [[[W_INIT] * nd for _ in range(cells)] for _ in range(nm)]
        self.v = [[[W_INIT] * nd for _ in range(cells)] for _ in SHAPES]  # product components
        self.w0 = [W_ONE] * nd

    # -- prediction ----------------------------------------------------------------------------
    def predict(self, p: int, T: int, fmax: int, freq=None) -> Row:
        """The mixture for position p, given its denoiser row's total T, largest frequency and, for the
        product components, the row itself (freq[t]: the denoiser's integer frequency of token t)."""
        db = _bucket(T // fmax, D_BUCKETS) if fmax else D_BUCKETS - 1
        comps = []  # (weight table, cell, {token: integer weight}, total): the sparse components
        for k, shape in enumerate(SHAPES):
            key = self._context(p, shape)
            slot = None if key is None else self.tables[k].get(key)
            if slot:
                N = sum(slot.values())
                cell = _bucket(N, N_BUCKETS) + N_BUCKETS * (len(slot) == 1)
                comps.append((self.w[k], cell, slot, N))
                if PRODUCT and freq is not None:  # the denoiser's row restricted to the slot, times the counts
                    prod = {t: int(freq[t]) * c for t, c in slot.items()}
                    Z = sum(prod.values())
                    if Z:
                        comps.append((self.v[k], cell, prod, Z))
        row = Row()
        row.db = db
        ws = [wt[c][db] for wt, c, _, _ in comps]
        wu = self.w[len(SHAPES)][_bucket(self.Nu, N_BUCKETS)][db] if self.Nu and UNIGRAM else 0
        w0 = self.w0[db]
        S = w0 + wu + sum(ws)
        R = M - self.V
        incs: dict[int, int] = {}
        used = 0
        for (_, _, dist, N), w in zip(comps, ws):
            B = R * w // S
            used += B
            cum = 0
            for t in sorted(dist):
                c_t = dist[t]
                inc = (cum + c_t) * B // N - cum * B // N
                cum += c_t
                if inc:
                    incs[t] = incs.get(t, 0) + inc
        row.Bu = R * wu // S
        row.B0 = R - used - row.Bu
        row.toks = sorted(incs)
        row.incs = [incs[t] for t in row.toks]
        row.comps = comps
        return row

    def _context(self, p: int, shape: tuple[int, ...]) -> tuple | None:
        """The tokens at p + offsets of `shape` when all of them are known, else None."""
        tok, known, n = self.tok, self.known, len(self.tok)
        for o in shape:
            q = p + o
            if q < 0 or q >= n or not known[q]:
                return None
        return tuple(int(tok[p + o]) for o in shape)

    # -- learning ------------------------------------------------------------------------------
    def learn(self, row: Row, s: int, F: int, T: int) -> None:
        """After coding symbol s (denoiser frequency F of total T): move each used weight by the ratio
        of its component's probability of s to the mixture's (fixed point, integers)."""
        db = row.db
        ps = [(F << 32) // T] + [(dist.get(s, 0) << 32) // N for _, _, dist, N in row.comps]
        ws = [self.w0[db]] + [wt[c][db] for wt, c, _, _ in row.comps]
        uni = self.Nu > 0 and UNIGRAM
        if uni:
            ub = _bucket(self.Nu, N_BUCKETS)
            ps.append((int(self.uni[s]) << 32) // self.Nu)
            ws.append(self.w[len(SHAPES)][ub][db])
        S = sum(ws)
        P = max(sum(w * pj for w, pj in zip(ws, ps)) // S, 1)
        new = []
        for w, pj in zip(ws, ps):
            r = min((pj << 16) // P, R_MAX)
            w += (w * (r - W_ONE)) >> (16 + LR_SHIFT)
            new.append(min(max(w, W_MIN), W_MAX))
        self.w0[db] = new[0]
        for (wt, c, _, _), w in zip(row.comps, new[1:]):
            wt[c][db] = w
        if uni:
            self.w[len(SHAPES)][ub][db] = new[-1]

    # -- revealing -----------------------------------------------------------------------------
    def reveal(self, positions: np.ndarray, values: np.ndarray) -> None:
        """A step's (or a known context's) tokens become known: count every instance that they
        complete, in a defined order (shapes in order, targets ascending)."""
        positions = np.asarray(positions, dtype=np.int64)
        if not len(positions):
            return
        top = int(positions.max())
        if top >= len(self.tok):  # room for them (unknown positions are never context)
            size = max(top + 1, 2 * len(self.tok))
            self.tok = np.concatenate([self.tok, np.zeros(size - len(self.tok), dtype=np.int64)])
            self.known = np.concatenate([self.known, np.zeros(size - len(self.known), dtype=bool)])
        self.tok[positions] = values
        self.known[positions] = True
        tok, known, n = self.tok, self.known, len(self.tok)
        vals = np.asarray(values, dtype=np.int64)
        np.add.at(self.seen, vals, 1)
        if RECENT_K:
            order = np.argsort(positions, kind="stable")
            self.fifo += vals[order].tolist()
            np.add.at(self.recent, vals, 1)
            if len(self.fifo) > RECENT:
                old = np.array(self.fifo[: len(self.fifo) - RECENT], dtype=np.int64)
                del self.fifo[: len(self.fifo) - RECENT]
                np.subtract.at(self.recent, old, 1)
        self.uni = self.seen + RECENT_K * self.recent
        self.ucum[1:] = np.cumsum(self.uni)
        self.Nu = int(self.ucum[-1])
        pos = sorted(set(positions.tolist()))
        for k, shape in enumerate(SHAPES):
            targets = set()
            for q in pos:
                targets.add(q)
                for o in shape:
                    targets.add(q - o)
            table = self.tables[k]
            for t in sorted(targets):
                if 0 <= t < n and known[t]:
                    key = self._context(t, shape)
                    if key is not None:
                        _add(table, key, int(tok[t]))
            if len(table) > MAX_CONTEXTS:
                for key in list(table)[: len(table) - MAX_CONTEXTS // 2]:
                    del table[key]


def _add(table: dict, key: tuple, t: int) -> None:
    """Count token t after context key: a slot keeps at most SLOT tokens; a new token replaces the
    least counted one (the first of them in slot order) and starts at 1; when a count reaches
    COUNT_HALVE, every count of the slot is halved (floor) and zeros leave."""
    slot = table.get(key)
    if slot is None:
        table[key] = {t: 1}
        return
    c = slot.get(t)
    if c is None:
        if len(slot) >= SLOT:
            low = min(slot.values())
            for u, cu in slot.items():
                if cu == low:
                    del slot[u]
                    break
        slot[t] = 1
        return
    slot[t] = c + 1
    if c + 1 >= COUNT_HALVE:
        for u in list(slot):
            slot[u] >>= 1
            if not slot[u]:
                del slot[u]


# -- the denoiser rows' side: C kernels (native/coder.c mix_*) with numpy definitions as fallback ------------
BLOCK = 64  # native/coder.c RANS_BLOCK


_NATIVE: dict = {}  # "lib": rans.py's checked library or None, decided (and recorded for `ddc -v`) once


def _lib():
    """rans.py's checked library (mix_* are in it too), or None: the numpy definitions run. (Called per
    row by the decoder: the decision and its record happen on the first call only.)"""
    if "lib" not in _NATIVE:
        from . import rans
        from ..native import kernels as native

        _NATIVE["lib"] = rans._lib()
        native.record("mixer", "mixing in C" if _NATIVE["lib"] is not None else "mixing in Python")
    return _NATIVE["lib"]


def row_stats(freq: np.ndarray, sym: np.ndarray | None = None):
    """Per row of integer frequencies (float32, n x V): T, f_max, block sums (n x ceil(V/64)) and, with
    the symbols, C_s and f_s; all int64 and exact."""
    freq = np.ascontiguousarray(freq, dtype=np.float32)
    n, V = freq.shape
    nb = -(-V // BLOCK)
    lib = _lib()
    if lib is not None:
        tot, fmax = np.empty(n, np.int64), np.empty(n, np.int64)
        bsum = np.empty((n, nb), np.int64)
        cs, fs = np.empty(n, np.int64), np.empty(n, np.int64)
        s32 = None if sym is None else np.ascontiguousarray(sym, dtype=np.int32)
        if lib.mix_row_stats(freq.ctypes.data, n, V, None if s32 is None else s32.ctypes.data, tot.ctypes.data,
                             fmax.ctypes.data, bsum.ctypes.data, cs.ctypes.data, fs.ctypes.data):
            raise ValueError("a symbol out of range")
        return tot, fmax, bsum, (cs, fs) if sym is not None else None
    f = freq.astype(np.int64)
    pad = np.zeros((n, nb * BLOCK), np.int64)
    pad[:, :V] = f
    bsum = pad.reshape(n, nb, BLOCK).sum(2)
    extra = None
    if sym is not None:
        sym = np.asarray(sym, dtype=np.int64)
        if ((sym < 0) | (sym >= V)).any():
            raise ValueError("a symbol out of range")
        cs = np.array([int(f[r, : sym[r]].sum()) for r in range(n)], dtype=np.int64)
        extra = (cs, f[np.arange(n), sym])
    return f.sum(1), f.max(1), bsum, extra


def find(freq_row: np.ndarray, T: int, bsum_row: np.ndarray, row: Row, ucum: np.ndarray, Nu: int,
         q: int) -> tuple[int, int, int, int]:
    """(s, start, width, f_s) of the symbol whose mixed interval holds q (the decoder's search)."""
    V = len(freq_row)
    toks = np.asarray(row.toks, dtype=np.int64)
    incs = np.asarray(row.incs, dtype=np.int64)
    lib = _lib()
    if lib is not None:
        out = np.empty(4, np.int64)
        if lib.mix_find(freq_row.ctypes.data, V, int(T), int(row.B0), bsum_row.ctypes.data, ucum.ctypes.data,
                        int(row.Bu), int(Nu), toks.ctypes.data, incs.ctypes.data, len(toks), int(q), out.ctypes.data):
            raise ValueError("no symbol for this quantile (corrupt data)")
        return int(out[0]), int(out[1]), int(out[2]), int(out[3])
    if T <= 0 or not 0 <= q < M:
        raise ValueError("no symbol for this quantile (corrupt data)")
    f = freq_row.astype(np.int64)
    C = np.concatenate([[0], np.cumsum(f)])
    E = np.zeros(V + 1, dtype=np.int64)
    if len(toks):
        np.add.at(E, toks + 1, incs)
        E = np.cumsum(E)
    from .rans import _muldiv  # floor(C B / T) exact in int64 (B < 2^24 split in halves)

    U = _muldiv(ucum, row.Bu, Nu) if row.Bu else 0
    Q = _muldiv(C, row.B0, T) + U + E + np.arange(V + 1)
    s = int(np.searchsorted(Q, q, side="right")) - 1
    return s, int(Q[s]), int(Q[s + 1] - Q[s]), int(f[s])
