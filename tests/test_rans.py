"""Format 4's entropy coder (ddcompress/codec/rans.py): the integer quantization and rANS as defined there,
the C kernels word for word against the Python definition, and corrupt streams refused."""
from __future__ import annotations

import numpy as np
import pytest

from ddcompress.codec import rans

M = 1 << 24


def rows(n: int, V: int, seed: int = 0, zeros: float = 0.5) -> np.ndarray:
    """Frequencies like the denoiser's: integers <= 2^24, the largest of a row 2^24, many zeros."""
    rng = np.random.default_rng(seed)
    f = np.floor(np.exp(rng.normal(0, 4, (n, V)))).clip(0, M)
    f[rng.random((n, V)) < zeros] = 0
    f[np.arange(n), rng.integers(0, V, n)] = M
    return f.astype(np.float32)


def native() -> bool:
    return rans._lib() is not None


def test_quantization_by_hand():
    """cdf(i) = floor(C_i (2^24 - V) / T) + i."""
    assert rans.interval(np.array([1, 1], np.float32), 0) == (0, 1 << 23, 2, 1)
    assert rans.interval(np.array([1, 1], np.float32), 1) == (1 << 23, 1 << 23, 2, 1)
    f = np.array([0, 3, 0, 1], np.float32)  # T = 4, W = 2^24 - 4
    W = M - 4
    assert rans.interval(f, 0) == (0, 1, 4, 0)  # zero frequency: width 1, still codable
    assert rans.interval(f, 1) == (1, 3 * W // 4 + 2 - 1, 4, 3)
    assert rans.interval(f, 3) == (3 * W // 4 + 3, M - (3 * W // 4 + 3), 4, 1)


def test_encoding_pinned():
    """The format: these words are what every ddc must write for these symbols."""
    f = np.array([[M, 1, 0, 7], [5, 5, 5, M], [0, 0, M, 0]], np.float32)
    enc = rans.Encoder(native=False)
    enc.add(f, np.array([1, 3, 2]))
    words = np.frombuffer(enc.payload(), "<u4").tolist()
    assert words == [167772150, 4194309]
    # the same by hand: intervals, then x = L, last symbol first
    iv = [rans.interval(f[r], s)[:2] for r, s in enumerate([1, 3, 2])]
    x = 1 << 31
    for st, w in reversed(iv):
        assert x < w << 39  # no word pushed for these
        x = ((x // w) << 24) + x % w + st
    assert words[:2] == [x & 0xFFFFFFFF, x >> 32]


def test_empty_stream():
    for nat in (False, True):
        assert rans.Encoder(native=nat).payload() == (1 << 31).to_bytes(8, "little")
        assert rans.Decoder((1 << 31).to_bytes(8, "little"), native=nat).finished()


@pytest.mark.parametrize("V", [2, 3, 1000, 50257, 70001])
def test_roundtrip_python_and_c_agree(V):
    """Random rows and symbols (uniform, so many with frequency 0): C and Python give the same words,
    each decodes the other's, in blocks of any size."""
    n = 60 if V > 10000 else 300
    f = rows(n, V, seed=V)
    sym = np.random.default_rng(V + 1).integers(0, V, n).astype(np.int32)
    py = rans.Encoder(native=False)
    py.add(f[:17], sym[:17])
    py.add(f[17:], sym[17:])
    payload = py.payload()
    assert len(payload) % 4 == 0
    for nat in (False, True):
        if nat and not native():
            pytest.skip("no C kernels")
        enc = rans.Encoder(native=nat)
        enc.add(f, sym)
        assert enc.payload() == payload
        dec = rans.Decoder(payload, native=nat)
        out = np.concatenate([dec.decode(f[:1]), dec.decode(f[1:40]), dec.decode(f[40:])])
        np.testing.assert_array_equal(out, sym)
        assert dec.finished()


def test_code_length_near_ideal():
    """Symbols drawn from the rows themselves: the payload is within 0.01 bit/token (+ 64 bits) of
    sum -log2(f_s / T)."""
    V, n = 5000, 400
    f = rows(n, V, seed=3, zeros=0.9)
    rng = np.random.default_rng(4)
    cum = np.cumsum(f.astype(np.float64), axis=1)
    sym = np.array([np.searchsorted(c, rng.random() * c[-1], side="right") for c in cum], dtype=np.int32)
    enc = rans.Encoder()
    ideal = enc.add(f, sym)
    bits = 8 * len(enc.payload())
    assert ideal <= bits <= ideal + 0.01 * n + 64


def test_corrupt_streams_are_refused():
    V, n = 300, 50
    f = rows(n, V, seed=9)
    sym = np.random.default_rng(5).integers(0, V, n).astype(np.int32)
    enc = rans.Encoder()
    enc.add(f, sym)
    payload = enc.payload()
    for nat in (False, True):
        with pytest.raises(rans.CorruptStream):  # runs out of words
            rans.Decoder(payload[:8], native=nat).decode(f)
        for first in (bytes(8), b"\xff" * 8):  # initial states below 2^31 and at 2^63 or more
            with pytest.raises(rans.CorruptStream):
                rans.Decoder(first + payload[8:], native=nat).decode(f)
        with pytest.raises(rans.CorruptStream):
            rans.Decoder(payload[:-1], native=nat)
        dec = rans.Decoder(payload + bytes(4), native=nat)  # a word too many: decodes, but does not end
        np.testing.assert_array_equal(dec.decode(f), sym)
        assert not dec.finished()
        dec = rans.Decoder(payload, native=nat)  # stopping early: not finished either
        dec.decode(f[:-1])
        assert not dec.finished()


def test_bad_rows_and_symbols():
    f = rows(3, 10)
    for nat in (False, True):
        with pytest.raises(ValueError):
            rans.Encoder(native=nat).add(np.zeros((1, 10), np.float32), np.array([3]))
        with pytest.raises(ValueError):
            rans.Encoder(native=nat).add(f, np.array([0, 1]))
    with pytest.raises(ValueError):
        rans.Encoder().add(np.ones((1, 1), np.float32), np.array([0]))  # V = 1


def test_c_kernels_match_the_definition_or_are_not_used(monkeypatch):
    """A C coder that disagrees with rans.py on the load-time case is not used (speed, never a file)."""
    if not native():
        pytest.skip("no C kernels")

    class Broken:
        def __init__(self, lib):
            self.lib = lib

        def __getattr__(self, name):
            return getattr(self.lib, name)

        def rans_encode(self, st, wd, n, out, cap):  # one bit off in the first word
            k = self.lib.rans_encode(st, wd, n, out, cap)
            np.ctypeslib.as_array((np.ctypeslib.ctypes.c_uint32 * 1).from_address(out))[0] ^= 1
            return k

    assert rans._self_check(rans._lib())
    assert not rans._self_check(Broken(rans._lib()))


@pytest.mark.parametrize("V", [2, 1000, 50257, 70001])
def test_intervals_in_torch_are_the_definition(V):
    """intervals_torch (a GPU encoder's path, int64 only) gives `interval`'s integers, also for rows at
    the largest total (every frequency 2^24) and symbols at both ends."""
    import torch

    f = rows(40, V, seed=V)
    f[0] = M
    sym = np.random.default_rng(V).integers(0, V, 40)
    sym[:2] = [V - 1, 0]
    got = [t.numpy() for t in rans.intervals_torch(torch.from_numpy(f), torch.from_numpy(sym))]
    want = np.array([rans.interval(f[r], int(sym[r])) for r in range(40)])
    for k in range(4):
        np.testing.assert_array_equal(got[k], want[:, k])


def test_muldiv_exact_at_the_limits():
    import torch

    T = torch.tensor([(1 << 48) - 1, (1 << 48) - 1, 12345, 1 << 24], dtype=torch.int64)
    C = torch.tensor([(1 << 48) - 2, 1, 12345, 3], dtype=torch.int64)
    for W in (1, (1 << 24) - 2, (1 << 24) - 50257, 4097):
        got = rans._muldiv(C, W, T).tolist()
        assert got == [c * W // t for c, t in zip(C.tolist(), T.tolist())]


def device_decode(payloads, f, blocks, streams_per_row):
    """DeviceDecoder over CPU tensors: rows in blocks, each block cut into per-stream pieces."""
    import torch

    dd = rans.DeviceDecoder(payloads, "cpu")
    out = []
    for a, b in blocks:
        ks = streams_per_row[a:b]
        cuts = [0] + [i for i in range(1, b - a) if ks[i] != ks[i - 1]] + [b - a]
        parts = [(int(ks[c0]), c0, c1) for c0, c1 in zip(cuts, cuts[1:])]
        out.append(dd.decode(torch.from_numpy(f[a:b]), parts).numpy())
    return dd, np.concatenate(out)


def test_device_decoder_is_the_definition():
    """Three streams (one empty) in blocks as the codec walks them (each block holds at most one run of
    rows per stream, a stream continuing across blocks): the symbols of the per-stream decoders, every stream finished; a cdf row as defined."""
    import torch

    V, per = 3000, [40, 25, 0]
    f = rows(sum(per) * 1, V, seed=1)
    rng = np.random.default_rng(2)
    sym = rng.integers(0, V, len(f)).astype(np.int32)
    owner = np.repeat(np.arange(3), per)
    # the codec's row order: blocks of a step hold each stream's rows in stream order
    order = np.concatenate([np.flatnonzero(owner == k)[i : i + 10] for i in range(0, 40, 10) for k in range(3)])
    f, sym, owner = f[order], sym[order], owner[order]
    payloads = []
    for k in range(3):
        enc = rans.Encoder()
        enc.add(f[owner == k], sym[owner == k])
        payloads.append(enc.payload())
    dd, got = device_decode(payloads, f, [(0, 15), (15, 20), (20, 40), (40, 55), (55, len(f))], owner)
    np.testing.assert_array_equal(got, sym)
    assert all(dd.finished(k) for k in range(3))
    c = rans.cdf_torch(torch.from_numpy(f[:3])).numpy()
    assert c.dtype == np.int32 and c.shape == (3, V + 1)
    for r in range(3):
        assert [c[r, i] for i in (0, 7, V)] == [0, rans.interval(f[r], 7)[0], M]
        assert c[r, 8] - c[r, 7] == rans.interval(f[r], 7)[1]


def test_device_decoder_refuses_corrupt_streams():
    V = 500
    f = rows(30, V, seed=4)
    sym = np.random.default_rng(5).integers(0, V, 30).astype(np.int32)
    enc = rans.Encoder()
    enc.add(f, sym)
    p = enc.payload()
    own = np.zeros(30, int)
    for bad in (p[:8], bytes(8) + p[8:], b"\xff" * 8 + p[8:], b""):
        with pytest.raises(rans.CorruptStream):
            device_decode([bad], f, [(0, 30)], own)
    with pytest.raises(rans.CorruptStream):
        rans.DeviceDecoder([p[:-1]], "cpu")
    dd, got = device_decode([p + bytes(4)], f, [(0, 30)], own)  # a word too many
    np.testing.assert_array_equal(got, sym)
    assert not dd.finished(0)


@pytest.mark.parametrize("nat", [False, True])
def test_decoding_from_table_indices(nat):
    """Rows as int16 indices into the frequency table (what a GPU sends the host): the same symbols."""
    if nat and not native():
        pytest.skip("no C kernels")
    V, n = 4000, 50
    table = np.array([round(M * np.exp(-u / 1024)) for u in range(3000)] + [0], dtype=np.int32)
    rng = np.random.default_rng(6)
    idx = rng.integers(0, len(table), (n, V)).astype(np.int16)
    idx[:, 5] = 0  # the largest frequency, 2^24
    f = table[idx].astype(np.float32)
    sym = rng.integers(0, V, n).astype(np.int32)
    enc = rans.Encoder()
    enc.add(f, sym)
    p = enc.payload()
    dec = rans.Decoder(p, native=nat)
    got = np.concatenate([dec.decode_indices(idx[:20], table), dec.decode(f[20:30]), dec.decode_indices(idx[30:], table)])
    np.testing.assert_array_equal(got, sym)
    assert dec.finished()
