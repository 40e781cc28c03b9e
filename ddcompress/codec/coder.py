"""Masked-diffusion entropy coding of token sequences (the MD4 view, no bits-back).

Tokens are cut into chunks of the model length L. For each chunk a data-independent unmasking order
(a permutation, in format 5 spread so that one step's positions are not neighbours) and per-step
reveal counts come from the seed stored in the file. At each reverse step
the denoiser runs on the partly revealed chunks; the tokens revealed at that step are range-coded with
the probabilities mu_theta(x_t) at their positions. The probabilities come from the exact integer
denoiser (`exact.ExactDenoiser`, numerics "int8-exact-1"): integer frequencies that every machine
computes bit for bit, whatever its CPU, GPU, thread count or batch composition.

Chunks are coded in groups of `group_size`, one rANS stream per group. Forward passes batch
any number of whole groups (`batch_chunks`, a choice of the machine that runs it, not of the file): the
exact denoiser is batch invariant, so a file made with groups of 8 on a CPU decodes with 256 chunks per
forward pass on a GPU. The final partial chunk is coded inside the last L tokens of the file with the
already known ones as context, so every forward call keeps the full length L; it is coded after the
full chunks that hold its context.

Formats 4 and 5 code with ddc's own coder (`rans`: exact integer quantization, rANS); format 5 first
mixes each row with the file's own count models (`mixing`), one group after another. Formats 2 and 3,
read for old files, code with constriction's range coder on the same frequencies as float32.
"""
from __future__ import annotations

import math
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from . import mixing, prng, rans
from .container import FORMAT_VERSION
from ..errors import IntegrityError
from ..numerics.exact import ExactDenoiser
from .layout import Chunk, Layout
from .plan import Plan
from .reveal import reveal_counts

SPREAD_GAP = 2  # format 5: no two positions of one step within 2 tokens, where the counts allow
ROW_BLOCK = 512  # rows of the output head computed (and coded) at once: bounds memory at V = 50257


def _family():
    """The entropy model of formats 2 and 3."""
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


@dataclass
class GroupResult:
    payload: bytes
    ideal_bits: float  # sum of -log2 p of the coded tokens under the frequencies coded with
    token_crcs: list[int]
    denoiser_bits: float | None = None  # the same under the denoiser's alone (format 5; None: = ideal_bits)


def token_crc(tokens: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(tokens, dtype="<u4").tobytes())


def _coded(tokens: np.ndarray, group: list[Chunk]) -> np.ndarray:
    """The tokens a group codes (each chunk's, after its known context), in chunk order: what its token
    CRC covers. For a one-chunk group this is that chunk's tokens, so format 2's per-chunk CRC and
    format 3's per-group CRC agree there."""
    return np.concatenate([tokens[c.start + c.known : c.start + c.width] for c in group])


class Coder:
    """Runs the reverse process over groups of chunks, encoding or decoding as it goes."""

    def __init__(self, denoiser: ExactDenoiser, plan: Plan, seed: int, format_version: int = FORMAT_VERSION,
                 mixer: str | None = mixing.NAME, device_decode: bool = False):
        """denoiser: mu_theta in exact integers (on any device: the bytes do not depend on it); plan: steps
        and grid; seed: of the reveal orders. mixer (format 5): the denoiser's frequencies mixed with
        file-adaptive count models (mixing.py), whose state (self.mix) belongs to one file and starts afresh
        with the group of chunk 0. device_decode: see below."""
        self.denoiser, self.steps, self.grid, self.seed = denoiser, plan.steps, plan.grid, seed
        self.mixer = mixer if format_version >= 5 else None
        self.mix: mixing.Mixer | None = None
        self.device = denoiser.device
        self.mask_id, self.vocab_size = denoiser.cfg.mask_id, denoiser.cfg.vocab_size
        self.version = format_version  # 4, 5: ddc's rANS; 2, 3: constriction (decode only)
        self.seconds: Counter = Counter()  # wall time in the denoiser ("model") and the entropy coder ("coder")
        # On a GPU the encoder's intervals are computed where the rows are (rans.intervals_torch: 4 numbers
        # per token cross to the host, not V). The decoder's rows cross to the host, where the C rANS
        # decodes the streams on threads; rans.DeviceDecoder (device_decode; formats 4 and 5 without a
        # mixer) decodes them on the device instead, one batched step per symbol of a stream: it wins only
        # with many short streams per batch, which a GPU run has yet to measure (tools/campaign/gpu_check.sh).
        # The rows that do cross go as int16 exp-table indices (half of fp32's bytes) into pinned memory.
        self.intervals_on_device = self.device.type != "cpu"
        self.decode_on_device = self.device.type != "cpu" and device_decode
        self.indices_to_host = self.device.type != "cpu"
        self._pinned: torch.Tensor | None | bool = None  # the host buffer of _to_host (False: no pinning)

    # -- the shared walk ----------------------------------------------------------------------------
    def _orders(self, chunks: list[Chunk]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per chunk: its window positions in reveal order and its tokens revealed per step (format 5:
        the seed's order spread so that one step's positions lie more than SPREAD_GAP apart)."""
        counts = [reveal_counts(c.coded, self.steps, self.grid) for c in chunks]
        perms = [self.order(self.seed, c.index, c.coded, k) for c, k in zip(chunks, counts)]
        return [c.known + p for c, p in zip(chunks, perms)], counts

    def order(self, seed: int, chunk_index: int, n: int, counts: np.ndarray) -> np.ndarray:
        """The reveal order of a chunk's n coded tokens (offsets after its known context)."""
        perm = prng.permutation(seed, chunk_index, n)
        return prng.spread(perm, counts, SPREAD_GAP) if self.version >= 5 else perm

    @torch.inference_mode()
    def _walk(self, x: torch.Tensor, perms: list[np.ndarray], counts: list[np.ndarray], indices: bool = False):
        """Yield (positions per chunk, tokens per chunk (G,), first row, frequencies (rows, V) float32 on
        the denoiser's device) per reverse step and row block, rows chunk-major; the caller fills x at
        the positions (encoder: the true tokens; decoder: the decoded ones) when a step's last block is
        done. Chunks may reveal different numbers of tokens per step (an encoder's full chunks and tail
        in one batch): the step's positions are padded to its widest chunk with the chunk's own first
        one, and the padding rows are dropped (every row is computed on its own); a chunk with nothing
        to reveal sits the step out. Frequencies are exact integers (the largest of a row is 2^24); the
        coder normalizes them. With `indices`: the rows as int16 exp-table indices instead
        (`ExactDenoiser.frequencies`)."""
        G = x.shape[0]
        offs = np.zeros(G, dtype=np.int64)
        blank = (x == self.mask_id).all(dim=1).cpu().numpy()  # chunks with no known token
        for step in range(max((len(c) for c in counts), default=0)):
            cs = np.array([c[step] if step < len(c) else 0 for c in counts], dtype=np.int64)
            pos = [p[o : o + k] for p, o, k in zip(perms, offs, cs)]
            offs += cs
            t0 = time.perf_counter()
            act = np.flatnonzero(cs)  # chunks that reveal tokens at this step (a short tail ends early)
            width = int(cs.max())
            at_np = np.zeros((len(act), width), dtype=np.int64)
            for i, g in enumerate(act):
                at_np[i, :] = pos[g][0]
                at_np[i, : cs[g]] = pos[g]
            at = torch.from_numpy(at_np).to(self.device)
            xa = x if len(act) == G else x[torch.from_numpy(act).to(self.device)]
            h8, scale = self._step_rows(xa, at, blank[act] if step == 0 else None)
            if (cs[act] < width).any():  # drop the padding rows
                keep = torch.from_numpy(np.arange(width)[None, :] < cs[act][:, None]).to(self.device)
                h8, scale = h8[keep], scale[keep]
            h8, scale = h8.reshape(-1, h8.shape[-1]), scale.reshape(-1, 1)
            for r0 in range(0, len(h8), ROW_BLOCK):
                freq = self.denoiser.frequencies(h8[r0 : r0 + ROW_BLOCK], scale[r0 : r0 + ROW_BLOCK], indices=indices)
                self.seconds["model"] += time.perf_counter() - t0
                yield pos, cs, r0, freq
                t0 = time.perf_counter()

    def _step_rows(self, x: torch.Tensor, at: torch.Tensor, blank: np.ndarray | None):
        """hidden(x, at); at the first step the chunks without known tokens (`blank`) take their rows from
        the denoiser's all-mask chunk (the same input for each, so the same rows) and only the others run."""
        if blank is None or not blank.any():
            return self.denoiser.hidden(x, at=at)
        rows, scales = self.denoiser.blank(x.shape[1])
        h8, scale = rows[at], scales[at]
        if not blank.all():
            rest = torch.from_numpy(np.flatnonzero(~blank)).to(self.device)
            h8[rest], scale[rest] = self.denoiser.hidden(x[rest], at=at[rest])
        return h8, scale

    def _window(self, tokens: np.ndarray, group: list[Chunk], known_only: bool) -> torch.Tensor:
        W = group[0].width
        x = np.full((len(group), W), self.mask_id, dtype=np.int64)
        for g, c in enumerate(group):
            x[g, : c.known] = tokens[c.start : c.start + c.known]
        return torch.from_numpy(x).to(self.device)

    # -- encode / decode ----------------------------------------------------------------------------
    def _known_walk(self, tokens: np.ndarray, chunks: list[Chunk], progress=None, perms: np.ndarray | None = None):
        """The walk when the tokens are known (encoder, code lengths): yields (tokens per chunk at this
        step (G,), first row, symbols int32, probs) per row block and reveals each step's true tokens
        once the step is done. Rows are chunk-major within a step. `perms` replaces the seed's orders
        (one row per chunk: code lengths of other orders)."""
        x = self._window(tokens, chunks, True)
        truth = np.stack([tokens[c.start : c.start + c.width] for c in chunks]).astype(np.int64)
        orders, counts = self._orders(chunks)
        perms = orders if perms is None else list(perms)
        for pos, cs, r0, probs in self._walk(x, perms, counts):
            step_truth = [t[p] for t, p in zip(truth, pos)]
            flat = np.concatenate(step_truth)
            yield pos, cs, r0, flat[r0 : r0 + probs.shape[0]].astype(np.int32), probs
            if r0 + probs.shape[0] >= len(flat):  # step finished: reveal its tokens
                self._reveal(x, pos, step_truth)
                if progress:
                    progress(len(flat))

    def _reveal(self, x: torch.Tensor, pos: list[np.ndarray], values: list[np.ndarray]) -> None:
        rows = np.repeat(np.arange(len(pos)), [len(p) for p in pos])
        x[torch.from_numpy(rows), torch.from_numpy(np.concatenate(pos))] = torch.from_numpy(
            np.concatenate(values).astype(np.int64)).to(self.device)

    def encode_groups(self, tokens: np.ndarray, groups: list[list[Chunk]], progress: Callable[[int], None] | None = None) -> list[GroupResult]:
        """Encode groups in one walk, each into its own stream (any shapes of one window width: the
        encoder knows every token, so a tail's context is there from the start; see `batches`)."""
        if self.version < 4:
            raise ValueError(f"this ddc writes format {FORMAT_VERSION}, not {self.version}")
        if self.mixer:
            return self._encode_mixed(tokens, groups, progress)
        encs = [rans.Encoder() for _ in groups]
        ideal = [0.0] * len(groups)
        chunks = [c for g in groups for c in g]
        first = np.cumsum([0] + [len(g) for g in groups])  # each group's first chunk in the batch
        for _, cs, r0, sym, probs in self._known_walk(tokens, chunks, progress):
            t0 = time.perf_counter()
            if self.intervals_on_device:  # the intervals where the rows are: 4 numbers per token move
                iv = [t.cpu().numpy() for t in rans.intervals_torch(probs, torch.from_numpy(sym))]
                t1 = time.perf_counter()
                self.seconds["model"] += t1 - t0  # (mostly waiting for the device's forward pass)
                for k, a, b in _pieces(_group_rows(cs, first), r0, r0 + len(sym)):
                    ideal[k] += encs[k].add_intervals(*(v[a:b] for v in iv))
                self.seconds["coder"] += time.perf_counter() - t1
                continue
            probs = probs.numpy()
            for k, a, b in _pieces(_group_rows(cs, first), r0, r0 + len(sym)):
                ideal[k] += encs[k].add(probs[a:b], sym[a:b])
            self.seconds["coder"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        payloads = [enc.payload() for enc in encs]
        self.seconds["coder"] += time.perf_counter() - t0
        return [GroupResult(p, bits, [token_crc(_coded(tokens, g))]) for p, bits, g in zip(payloads, ideal, groups)]

    def decode_groups(self, tokens: np.ndarray, groups: list[list[Chunk]], payloads: list[bytes], crcs: list[list[int]],
                      progress: Callable[[int], None] | None = None) -> None:
        """Decode groups of one shape in one walk into `tokens` (in place); their context (the known
        tokens of a tail chunk) must already be there. Format 5: one group after the other (a group's
        mixture depends on every token of the groups before it)."""
        if self.mixer:
            for g, p, c in zip(groups, payloads, crcs):
                self._decode_mixed(tokens, g, p, c, progress)
            return
        on_device = self.version >= 4 and self.decode_on_device
        if on_device:
            try:
                dd = rans.DeviceDecoder(payloads, self.device)
            except rans.CorruptStream as err:
                raise IntegrityError("corrupt data: a chunk payload is not word-aligned") from err
            finished = dd.finished
        else:
            decs = [self._decoder(p) for p in payloads]
            finished = lambda k: decs[k].finished()  # noqa: E731
        chunks = [c for g in groups for c in g]
        first = np.cumsum([0] + [len(g) for g in groups])
        x = self._window(tokens, chunks, True)
        perms, counts = self._orders(chunks)
        step_syms: list[np.ndarray] = []

        def corrupt(ks) -> IntegrityError:
            g0, g1 = groups[min(ks)], groups[max(ks)]
            return IntegrityError(f"corrupt ddc file: invalid coded data in chunks {g0[0].index}-{g1[-1].index}")

        indices = self.version >= 4 and not on_device and self.indices_to_host
        table = self.denoiser.exp32.cpu().numpy().astype(np.int32) if indices else None

        def piece(k: int, a: int, b: int, probs: np.ndarray) -> np.ndarray:
            try:
                return decs[k].decode_indices(probs[a:b], table) if indices else decs[k](probs[a:b])
            except (AssertionError, ValueError, RuntimeError) as err:  # rans.CorruptStream (a ValueError); constriction: "invalid compressed data"
                raise corrupt([k]) from err

        for pos, cs, r0, probs in self._walk(x, perms, counts, indices=indices):
            n = probs.shape[0]
            parts = list(_pieces(_group_rows(cs, first), r0, r0 + n))
            t0 = time.perf_counter()
            if on_device:  # the rows stay on the device; only the symbols come back
                try:
                    step_syms.append(dd.decode(probs, parts).cpu().numpy())
                except rans.CorruptStream as err:
                    raise corrupt([k for k, _, _ in parts]) from err
                self.seconds["coder"] += time.perf_counter() - t0
            else:
                probs = self._to_host(probs)
                t1 = time.perf_counter()
                self.seconds["model"] += t1 - t0  # (a device's rows reach the host)
                pool = self._pool(len(parts)) if self.version >= 4 else None
                if pool is None:
                    step_syms += [piece(k, a, b, probs) for k, a, b in parts]
                else:  # each group's stream on its own thread (the C decoder releases the GIL)
                    step_syms += list(pool.map(lambda p: piece(*p, probs), parts))
                self.seconds["coder"] += time.perf_counter() - t1
            total = int(cs.sum())
            if r0 + n >= total:
                sym = np.concatenate(step_syms)
                step_syms = []
                self._reveal(x, pos, np.split(sym, np.cumsum(cs)[:-1]))
                if progress:
                    progress(total)
        _store_checked(tokens, x.cpu().numpy(), groups, crcs, finished)

    # -- format 5: the denoiser mixed with the file's own statistics (mixing.py) ----------------------
    def _file_mixer(self, tokens: np.ndarray, group: list[Chunk]) -> mixing.Mixer:
        """The file's adaptive state; a new one at the group of chunk 0 (the first of every file)."""
        if self.mix is None or group[0].index == 0:
            self.mix = mixing.Mixer(0 if tokens is None else len(tokens), self.vocab_size)
        return self.mix

    def _encode_mixed(self, tokens: np.ndarray, groups: list[list[Chunk]], progress) -> list[GroupResult]:
        """One group after the other, as the decoder will: per row, the mixture from the state so far
        (it reads the denoiser's row at the count models' tokens) and its interval, the weights'
        update; per step, the tokens revealed to the mixer."""
        out = []
        for g in groups:
            mix = self._file_mixer(tokens, g)
            starts = np.array([c.start for c in g], dtype=np.int64)
            st, wd = [], []
            dn_bits = 0.0
            for pos, cs, r0, sym, probs in self._known_walk(tokens, g, progress):
                if r0 == 0:
                    fpos = np.concatenate([starts[i] + p for i, p in enumerate(pos)]).tolist()
                probs = self._to_host(probs)
                t0 = time.perf_counter()
                T, fmax, _, (C, F) = mixing.row_stats(probs, sym)
                for i, (s, t, fm, c, f) in enumerate(zip(sym.tolist(), T.tolist(), fmax.tolist(), C.tolist(), F.tolist())):
                    row = mix.predict(fpos[r0 + i], t, fm, probs[i])
                    lo, w = row.interval(s, c, f, t, mix.ucum, mix.Nu)
                    st.append(lo)
                    wd.append(w)
                    mix.learn(row, s, f, t)
                    dn_bits += math.log2(t / f) if f else math.inf
                if r0 + len(sym) >= int(cs.sum()):
                    mix.reveal(np.array(fpos, dtype=np.int64), tokens[np.array(fpos, dtype=np.int64)])
                self.seconds["coder"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            enc = rans.Encoder()
            bits = enc.add_intervals(st, wd, np.full(len(wd), rans.M), wd)
            out.append(GroupResult(enc.payload(), bits, [token_crc(_coded(tokens, g))], dn_bits))
            self.seconds["coder"] += time.perf_counter() - t0
        return out

    def _decode_mixed(self, tokens: np.ndarray, group: list[Chunk], payload: bytes, crcs: list[int], progress) -> None:
        """One group: per row, the mixture from the state so far, the symbol its interval holds, the
        weights' update; per step, the tokens revealed to the denoiser and to the mixer."""
        mix = self._file_mixer(tokens, group)
        dec = self._decoder(payload)
        x = self._window(tokens, group, True)
        perms, counts = self._orders(group)
        starts = np.array([c.start for c in group], dtype=np.int64)
        syms: list[int] = []

        def corrupt() -> IntegrityError:
            return IntegrityError(f"corrupt ddc file: invalid coded data in chunks {group[0].index}-{group[-1].index}")

        for pos, cs, r0, probs in self._walk(x, perms, counts):
            if r0 == 0:
                fpos = np.concatenate([starts[i] + p for i, p in enumerate(pos)]).tolist()
                syms = []
            probs = self._to_host(probs)
            t0 = time.perf_counter()
            T, fmax, bsum, _ = mixing.row_stats(probs)
            for i, (t, fm) in enumerate(zip(T.tolist(), fmax.tolist())):
                row = mix.predict(fpos[r0 + i], t, fm, probs[i])
                try:
                    s, lo, w, F = mixing.find(probs[i], t, bsum[i], row, mix.ucum, mix.Nu, dec.quantile())
                    dec.advance(lo, w)
                except ValueError as err:  # rans.CorruptStream, or no symbol for the quantile
                    raise corrupt() from err
                mix.learn(row, s, F, t)
                syms.append(s)
            self.seconds["coder"] += time.perf_counter() - t0
            total = int(cs.sum())
            if r0 + len(probs) >= total:
                sym = np.array(syms, dtype=np.int64)
                self._reveal(x, pos, np.split(sym, np.cumsum(cs)[:-1]))
                mix.reveal(np.array(fpos, dtype=np.int64), sym)
                if progress:
                    progress(total)
        _store_checked(tokens, x.cpu().numpy(), [group], [crcs], lambda k: dec.finished())

    def _to_host(self, rows: torch.Tensor) -> np.ndarray:
        """A block of rows as a numpy array: a device's through one reused pinned buffer (a page-locked
        copy runs at the bus's speed, a pageable one at a fraction of it)."""
        if rows.device.type == "cpu":
            return rows.numpy()
        n = rows.shape[0]
        buf = self._pinned
        if buf is False:  # (pinning failed once: plain copies)
            return rows.cpu().numpy()
        if buf is None or buf.shape[0] < n or buf.shape[1:] != rows.shape[1:] or buf.dtype != rows.dtype:
            try:
                buf = self._pinned = torch.empty((max(n, ROW_BLOCK), *rows.shape[1:]), dtype=rows.dtype,
                                                 pin_memory=True)
            except RuntimeError:  # no page-locked memory here (a container's limit): slower, same bytes
                self._pinned = False
                return rows.cpu().numpy()
        buf[:n].copy_(rows)  # (synchronous: the decoder reads it next)
        return buf[:n].numpy()

    def _pool(self, n: int):
        """Threads for n streams decoded at once (None for one, or without the C coder: the Python
        coder holds the GIL)."""
        from ..native import threads

        workers = min(n, os.cpu_count() or 1)
        if workers <= 1 or rans._lib() is None:
            return None
        return threads.pool()

    def _decoder(self, payload: bytes):
        """A stream's decoder: called with a block of frequency rows, it gives their symbols (int64)."""
        if len(payload) % 4:
            raise IntegrityError("corrupt data: a chunk payload is not word-aligned")
        return _Rans(payload) if self.version >= 4 else _Constriction(payload)

    def encode_group(self, tokens: np.ndarray, group: list[Chunk], progress: Callable[[int], None] | None = None) -> GroupResult:
        return self.encode_groups(tokens, [group], progress)[0]

    def decode_group(self, tokens: np.ndarray, group: list[Chunk], payload: bytes, crcs: list[int], progress: Callable[[int], None] | None = None) -> None:
        self.decode_groups(tokens, [group], [payload], [crcs], progress)


class _Rans(rans.Decoder):
    def __call__(self, freq: np.ndarray) -> np.ndarray:
        return self.decode(freq)


class _Constriction:
    """Formats 2 and 3: constriction's range decoder (a queue), Categorical(perfect=False) on float32."""

    def __init__(self, payload: bytes):
        import constriction

        self.dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        self.family = _family()

    def __call__(self, freq: np.ndarray) -> np.ndarray:
        return np.asarray(self.dec.decode(self.family, freq), dtype=np.int64)

    def finished(self) -> bool:  # (these formats were written without the end check)
        return True


def _store_checked(tokens: np.ndarray, out: np.ndarray, groups: list[list[Chunk]], crcs: list[list[int]],
                   finished: Callable[[int], bool]) -> None:
    """Check decoded windows (rows of `out`, chunk-major) against their token CRCs and their streams'
    ends, then write their coded tokens into `tokens`."""
    row = 0
    for gi, (g, want) in enumerate(zip(groups, crcs)):
        segs = [out[row + i, c.known : c.width] for i, c in enumerate(g)]
        row += len(g)
        per = len(g) // len(want)  # chunks per token CRC: the whole group (format 3) or one (format 2)
        for k, crc in enumerate(want):
            part = g[k * per : (k + 1) * per]
            if token_crc(np.concatenate(segs[k * per : (k + 1) * per])) != crc:
                which = f"chunk {part[0].index}" if per == 1 else f"chunks {part[0].index}-{part[-1].index}"
                raise IntegrityError(f"corrupt ddc file: {which} failed its checksum")
        if not finished(gi):
            raise IntegrityError(f"corrupt ddc file: the coded data of chunks {g[0].index}-{g[-1].index} "
                                 "does not end where its encoder left it")
        for c, seg in zip(g, segs):
            tokens[c.start + c.known : c.start + c.width] = seg


def _group_rows(cs: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each group's first row in a step (rows chunk-major, cs tokens per chunk) and the end: `_pieces`'
    bounds (first: each group's first chunk, and the number of chunks)."""
    ends = np.concatenate([[0], np.cumsum(cs)])
    return ends[first]


def _pieces(bounds: np.ndarray, r0: int, r1: int) -> Iterator[tuple[int, int, int]]:
    """(group k, a, b) for the rows [r0, r1) of a block, cut at the groups' row boundaries (bounds[k]:
    group k's first row, bounds[-1]: the end), as offsets a:b into the block."""
    k = int(np.searchsorted(bounds, r0, side="right")) - 1
    r = r0
    while r < r1:
        end = min(r1, int(bounds[k + 1]))
        if end > r:
            yield k, r - r0, end - r0
        r, k = end, k + 1


def _shape(groups, i: int, encoding: bool) -> tuple[tuple[int, ...], int]:
    """(shape, chunks) of group i, from a `Layout` in O(1) or from a list of chunk lists."""
    if isinstance(groups, Layout):
        (width, known), n = groups.shape(i), groups.chunks_in(i)
    else:
        g = groups[i]
        (width, known), n = (g[0].width, g[0].known), len(g)
    return ((width,) if encoding else (width, known)), n


def iter_batches(groups: Layout | list[list[Chunk]], batch_chunks: int, encoding: bool = False) -> Iterator[list[int]]:
    """`batches`, one batch at a time: nothing is held per group or per chunk beyond the batch."""
    cur: list[int] = []
    shape = size = None
    for i in range(len(groups)):
        sh, n = _shape(groups, i, encoding)
        if cur and sh == shape and size + n <= batch_chunks:
            cur.append(i)
            size += n
        else:
            if cur:
                yield cur
            cur, shape, size = [i], sh, n
    if cur:
        yield cur


def batches(groups: Layout | list[list[Chunk]], batch_chunks: int, encoding: bool = False) -> list[list[int]]:
    """Indices of the groups that go through the walk together: consecutive groups of one shape (width
    and known tokens of their chunks: all full groups, or a tail on its own), up to `batch_chunks`
    chunks (at least one group). In order, so a tail comes after the full chunks that hold its context.
    An encoder knows the tail's context from the start: with `encoding`, groups of one width go
    together, the tail with the full chunks (a walk of its own costs the tail as many forward passes,
    each over a whole window, as a full chunk). The files are the same either way."""
    return list(iter_batches(groups, batch_chunks, encoding))


def encode_all(coder: Coder, tokens: np.ndarray, groups: Layout | list[list[Chunk]], batch_chunks: int,
               progress: Callable[[int], None] | None = None) -> list[GroupResult]:
    """Every group of a file, `batch_chunks` chunks per forward pass at most (a batch's chunks are built
    when it runs: `groups` may be a `Layout`)."""
    results: list[GroupResult] = []
    for idx in batches(groups, batch_chunks, encoding=True):
        results += coder.encode_groups(tokens, [groups[i] for i in idx], progress)
    return results


def decode_all(coder: Coder, tokens: np.ndarray | None, groups: Layout | list[list[Chunk]], payloads: list[bytes],
               crcs: list[list[int]], batch_chunks: int, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Decode every group, batch by batch (a batch's chunks are built when it runs: `groups` may be a
    `Layout`). tokens: the array to decode into, in place; or None: an array that grows as the batches
    decode, so that its size follows the data decoded so far (at most twice that, or one batch's
    windows more), never a header's claim. Returns the tokens."""
    total = groups.n_tokens if isinstance(groups, Layout) else None
    for idx in batches(groups, batch_chunks):  # (indices of groups: the table holds each group's entry)
        batch = [groups[i] for i in idx]
        if tokens is None or (total is not None and len(tokens) < total):
            end = max(c.start + c.width for g in batch for c in g)
            have = 0 if tokens is None else len(tokens)
            if end > have:
                size = max(end, min(2 * have, total if total is not None else end))
                grown = np.zeros(size, dtype=np.int64)
                if have:
                    grown[:have] = tokens
                tokens = grown
        coder.decode_groups(tokens, batch, [payloads[i] for i in idx], [crcs[i] for i in idx], progress)
    return np.zeros(0, dtype=np.int64) if tokens is None else tokens


@torch.inference_mode()
def path_code_lengths(denoiser: ExactDenoiser, tokens: np.ndarray, plan: Plan, seeds, chunk_index: int = 0) -> np.ndarray:
    """Exact code length in bits (sum of -log2 mu_theta) of one chunk along the unmasking path of each
    seed (format 5's spread order), without entropy coding: what the coder achieves up to ~0.01 bit/token. The seeds' walks go
    through the denoiser as one batch; its batch invariance makes each row's probabilities those of
    its own walk (tests/test_codec.py checks it against one walk at a time)."""
    coder = Coder(denoiser, plan, 0)
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens)
    counts = reveal_counts(n, plan.steps, plan.grid)
    perms = np.stack([coder.order(s, chunk_index, n, counts) for s in seeds])
    bits = np.zeros(len(perms))
    for _, cs, r0, sym, probs in coder._known_walk(tokens, [Chunk(chunk_index, 0, n, 0)] * len(perms), perms=perms):
        probs = probs.cpu().numpy()
        p = probs[np.arange(len(sym)), sym].astype(np.float64) / probs.sum(axis=1, dtype=np.float64)
        seed = np.repeat(np.arange(len(cs)), cs)[r0 : r0 + len(sym)]  # row -> its seed (chunk-major rows)
        np.add.at(bits, seed, -np.log2(p))
    return bits


def path_code_length(denoiser: ExactDenoiser, tokens: np.ndarray, plan: Plan, seed: int, chunk_index: int = 0) -> float:
    """path_code_lengths of one seed, walked alone."""
    return float(path_code_lengths(denoiser, tokens, plan, [seed], chunk_index)[0])
