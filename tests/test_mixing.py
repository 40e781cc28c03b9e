"""Format 5's context mixing (mixing.py): the mixed quantized cdf, the decoder's search (C kernel and
numpy definition), the count models' bookkeeping, and what the mixing buys on a file with repeats."""
from __future__ import annotations

import random

import numpy as np
import pytest

import ddcompress
from ddcompress.codec import mixing
from ddcompress.codec.container import parse

from samples import words

V = 3000


def random_row(rng, V=V):
    """A denoiser-like row of integer frequencies, a mixture's sparse increments and a unigram."""
    f = np.where(rng.random(V) < 0.3, rng.integers(0, 1 << 24, V), 0).astype(np.float32)
    f[rng.integers(V)] = 1 << 24
    row = mixing.Row()
    toks = sorted(set(rng.integers(0, V, rng.integers(0, 40)).tolist()))
    row.toks, row.incs = toks, rng.integers(0, 200_000, len(toks)).tolist()
    Nu = int(rng.integers(1, 10**6))
    ucum = np.concatenate([[0], np.cumsum(rng.multinomial(Nu, np.ones(V) / V))]).astype(np.int64)
    row.Bu = int(rng.integers(0, 1 << 20)) if rng.random() < 0.7 else 0
    row.B0 = mixing.M - V - sum(row.incs) - row.Bu
    return f, row, ucum, Nu


@pytest.mark.parametrize("native", [True, False], ids=["C", "numpy"])
def test_find_gives_the_interval_that_holds_the_quantile(native, monkeypatch):
    """The decoder's search (native/coder.c mix_find, or its numpy definition) finds the symbol whose
    interval under the encoder's definition (Row.interval) holds q, for any q, edges included."""
    if not native:
        monkeypatch.setattr(mixing, "_lib", lambda: None)
    elif mixing._lib() is None:
        pytest.skip("no C kernels here")
    rng = np.random.default_rng(1)
    for _ in range(12):
        f, row, ucum, Nu = random_row(rng)
        T, fmax, bsum, _ = mixing.row_stats(f[None])
        assert T[0] == int(f.astype(np.int64).sum()) and fmax[0] == 1 << 24
        seen = set()
        for q in rng.integers(0, mixing.M, 40).tolist() + [0, mixing.M - 1]:
            s, lo, w, fs = mixing.find(f, int(T[0]), bsum[0], row, ucum, Nu, q)
            C = int(f[:s].astype(np.int64).sum())
            assert (lo, w) == row.interval(s, C, int(f[s]), int(T[0]), ucum, Nu) and lo <= q < lo + w
            assert fs == int(f[s]) and w >= 1
            seen.add(s)
        # every symbol keeps a width of at least 1 and the intervals tile [0, 2^24)
        C = np.concatenate([[0], np.cumsum(f.astype(np.int64))])
        bounds = [row.interval(s, int(C[s]), int(f[s]), int(T[0]), ucum, Nu) for s in (0, V - 1)]
        assert bounds[0][0] == 0 and sum(bounds[1]) == mixing.M
    with pytest.raises(ValueError):
        mixing.find(f, int(T[0]), bsum[0], row, ucum, Nu, mixing.M)


def brute_counts(tok: np.ndarray, known: np.ndarray, shape) -> dict:
    """Every fully known instance (context at `shape`'s offsets, target) counted once."""
    out: dict = {}
    n = len(tok)
    for t in range(n):
        qs = [t + o for o in shape]
        if known[t] and all(0 <= q < n and known[q] for q in qs):
            slot = out.setdefault(tuple(int(tok[q]) for q in qs), {})
            slot[int(tok[t])] = slot.get(int(tok[t]), 0) + 1
    return out


def test_reveal_counts_every_instance_once(monkeypatch):
    """Whatever the reveal order (any-order steps of several positions), each table ends up holding
    exactly the counts of the fully known instances: none missed, none counted twice."""
    monkeypatch.setattr(mixing, "SLOT", 10**6)
    monkeypatch.setattr(mixing, "COUNT_HALVE", 10**9)
    rng = random.Random(3)
    n = 300
    tok = np.array([rng.randrange(6) for _ in range(n)], dtype=np.int64)  # a small alphabet: many repeats
    order = list(range(n))
    rng.shuffle(order)
    mix = mixing.Mixer(n // 3, 50)  # (grows)
    at = 0
    while at < n - 40:
        k = rng.randrange(1, 12)
        pos = np.array(order[at : at + k])
        mix.reveal(pos, tok[pos])
        at += k
        if rng.random() < 0.3:  # the state part way through
            known = np.zeros(n, dtype=bool)
            known[order[:at]] = True
            for shape, table in zip(mixing.SHAPES, mix.tables):
                assert table == brute_counts(tok, known, shape), shape
    # the unigram: every revealed token, plus RECENT_K x the last RECENT revealed (steps in order, a
    # step's positions ascending)
    revealed = [tok[q] for i in range(0, at, 1) for q in [order[i]]]
    assert mix.seen.sum() == at and np.array_equal(mix.seen[:6], np.bincount(revealed, minlength=6))
    assert mix.recent.sum() == min(at, mixing.RECENT) and mix.Nu == int(mix.uni.sum())
    assert np.array_equal(mix.uni, mix.seen + mixing.RECENT_K * mix.recent)


def test_recent_window_keeps_the_last_tokens_in_reveal_order(monkeypatch):
    monkeypatch.setattr(mixing, "RECENT", 5)
    mix = mixing.Mixer(20, 10)
    mix.reveal(np.array([7, 3, 5]), np.array([1, 2, 3]))  # in position order: 2 (at 3), 3 (at 5), 1 (at 7)
    mix.reveal(np.array([9, 1, 0]), np.array([4, 5, 6]))  # 6 (at 0), 5 (at 1), 4 (at 9)
    assert mix.fifo == [3, 1, 6, 5, 4] and mix.recent.tolist() == [0, 1, 0, 1, 1, 1, 1, 0, 0, 0]
    assert mix.Nu == 6 + mixing.RECENT_K * 5


def test_slot_keeps_the_most_counted_tokens(monkeypatch):
    monkeypatch.setattr(mixing, "SLOT", 2)
    monkeypatch.setattr(mixing, "COUNT_HALVE", 4)
    table: dict = {}
    for t in (5, 5, 7, 9):  # 9 replaces 7 (the least counted)
        mixing._add(table, ("k",), t)
    assert table == {("k",): {5: 2, 9: 1}}
    for t in (5, 5):  # 5 reaches 4: every count halves, zeros leave
        mixing._add(table, ("k",), t)
    assert table == {("k",): {5: 2}}


def test_a_mixer_that_grows_predicts_as_one_made_to_size():
    """The decoder's mixer grows with the tokens it decodes; the encoder's knows the file's length:
    the same predictions and weights either way."""
    rng = random.Random(5)
    n = 400
    tok = np.array([rng.randrange(20) for _ in range(n)], dtype=np.int64)
    freq = np.arange(1, 51, dtype=np.float32) * 1000
    a, b = mixing.Mixer(n, 50), mixing.Mixer(1, 50)
    order = list(range(n))
    rng.shuffle(order)
    for i in range(0, n, 16):
        step = order[i : i + 16]
        for p in step:
            ra, rb = a.predict(p, int(freq.sum()), 50_000, freq), b.predict(p, int(freq.sum()), 50_000, freq)
            assert (ra.B0, ra.Bu, ra.toks, ra.incs) == (rb.B0, rb.Bu, rb.toks, rb.incs)
            for m in (a, b):
                m.learn(ra if m is a else rb, int(tok[p]), int(freq[tok[p]]), int(freq.sum()))
        for m in (a, b):
            m.reveal(np.array(step), tok[step])
    assert a.w == b.w and a.v == b.v and a.w0 == b.w0


def test_budget_is_spent_exactly():
    """A row's budgets and increments add up to 2^24 - V: the mixed cdf ends at 2^24."""
    rng = random.Random(2)
    n = 200
    tok = np.array([rng.randrange(30) for _ in range(n)], dtype=np.int64)
    mix = mixing.Mixer(n, 64)
    freq = np.array([rng.randrange(0, 1 << 24) for _ in range(64)], dtype=np.float32)
    mix.reveal(np.arange(0, n, 2), tok[::2])
    for p in range(1, n, 2):
        row = mix.predict(p, int(freq.sum()), int(freq.max()), freq)
        assert row.B0 + row.Bu + sum(row.incs) == mixing.M - 64 and row.B0 > 0
        assert row.toks == sorted(row.toks) and all(i > 0 for i in row.incs)


def test_mixing_learns_a_files_repeats(tiny_lm):
    """On a text of 12 words that repeats itself, the mixture codes far below the (random, useless)
    denoiser alone,
    and the file says so (ideal_bits against denoiser_bits)."""
    line = words(90, seed=4)
    data = line * 8
    blob = ddcompress.compress(data, model=tiny_lm, method="mdm", level=1)
    h = parse(blob).header
    assert h.mixer == "cm1" and h.ideal_bits < 0.6 * h.denoiser_bits
    assert 8 * len(blob) < h.denoiser_bits * 0.6
    assert ddcompress.decompress(blob, model=tiny_lm) == data


def test_mixed_files_decode_with_the_numpy_definitions(tiny_lm, monkeypatch):
    """A file made with the C kernels decodes with the numpy definitions of the mixed rows and the
    Python rANS, and the other way round."""
    from ddcompress.codec import rans

    data = words(150, seed=9) * 2
    blob = ddcompress.compress(data, model=tiny_lm, method="mdm", level=2)
    with monkeypatch.context() as m:
        m.setattr(mixing, "_lib", lambda: None)
        m.setattr(rans, "_lib", lambda: None)
        assert ddcompress.decompress(blob, model=tiny_lm) == data
        slow = ddcompress.compress(data, model=tiny_lm, method="mdm", level=2)
    assert slow == blob


def test_shapes_see_both_sides():
    """The count models' contexts: distinct offsets around p (never p itself), and left-only, right-only
    and both-sides shapes (the last two only an any-order coder can use)."""
    for shape in mixing.SHAPES:
        assert 0 not in shape and len(set(shape)) == len(shape) and list(shape) == sorted(shape)
    kinds = {(min(s) < 0, max(s) > 0) for s in mixing.SHAPES}
    assert kinds == {(True, False), (False, True), (True, True)}
