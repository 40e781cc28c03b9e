"""Exactly defined fixed-point tables for the integer denoiser (numerics "int8-exact-1").

Every entry is an integer computed with Python's exact integer arithmetic, starting from a handful of
constants that `decimal` computes correctly rounded (exp, ln at 50 digits). No libm call is involved,
so every machine, Python build and library version builds the same tables; `tables_digest` pins them
and the tests compare it against the value recorded for the format.

    exp_table()[u]      = round(2^EXP_BITS * exp(-u / 2^EXP_FRAC))         u = 0 .. until it rounds to 0
    att_exp_table()[u]  = round(ATT_EXP_MAX * exp(-u / 2^EXP_FRAC))        (attention weights: two 7-bit digits)
    sigmoid_table()[i]  = round(2^SIG_BITS * sigmoid((i - SIG_HALF) / 2^SIG_FRAC))
    rope_tables(L, D)   = round(2^ROPE_BITS * cos/sin(p * theta^(-2i/D)))  p < L, i < D/2

`sin_pi_ratio` gives the coder's reveal counts (codec/reveal.py) their sine grid from the same series.
"""
from __future__ import annotations

import functools
import hashlib
from decimal import Context, Decimal

EXP_FRAC = 10  # softmax arguments are rounded to 1/1024 nat
EXP_BITS = 24  # exp values in Q.24: the largest logit of a row maps to exactly 2^24
ATT_EXP_MAX = 127 * 128 + 127  # attention weights: the largest maps to 16383, two int8 digits hi * 128 + lo
SIG_FRAC = 8  # SiLU gate rounded to 1/256
SIG_RANGE = 16  # beyond +-16 the sigmoid is taken as its end value (error < 1.2e-7)
SIG_HALF = SIG_RANGE << SIG_FRAC
SIG_BITS = 30
ROPE_BITS = 30

_P = 160  # working precision (bits) of the big-integer recurrences: their rounding stays far below 2^-60
_CTX = Context(prec=60)  # every Decimal operation names it: the caller's thread context must not matter
PI = Decimal("3.1415926535897932384626433832795028841971693993751058209749445923078164062862089986280348253421170679")


def _fixed(x: Decimal, bits: int) -> int:
    """x * 2^bits rounded to the nearest integer (ties to even), exactly."""
    return int(_CTX.multiply(x, Decimal(1 << bits)).to_integral_value(context=_CTX))


def _round_shift(x: int, bits: int) -> int:
    """x / 2^bits rounded half up: floor(x / 2^bits + 1/2), also for x < 0."""
    return (x + (1 << (bits - 1))) >> bits


def _powers(base: int, n: int) -> list[int]:
    """base^k for k = 0..n-1 in Q._P (base in Q._P, 0 < base <= 1): exact integer recurrence."""
    out, v = [], 1 << _P
    for _ in range(n):
        out.append(v)
        v = (v * base) >> _P
    return out


@functools.lru_cache(maxsize=None)
def exp_table() -> tuple[int, ...]:
    r = _fixed(_CTX.exp(_CTX.divide(Decimal(-1), 1 << EXP_FRAC)), _P)  # exp(-1/1024)
    out = []
    for v in _powers(r, 40 << EXP_FRAC):
        e = _round_shift(v, _P - EXP_BITS)
        if e == 0:
            break
        out.append(e)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def att_exp_table() -> tuple[int, ...]:
    r = _fixed(_CTX.exp(_CTX.divide(Decimal(-1), 1 << EXP_FRAC)), _P)
    out = []
    for v in _powers(r, 40 << EXP_FRAC):
        e = _round_shift(v * ATT_EXP_MAX, _P)
        if e == 0:
            break
        out.append(e)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def sigmoid_table() -> tuple[int, ...]:
    r = _fixed(_CTX.exp(_CTX.divide(Decimal(-1), 1 << SIG_FRAC)), _P)  # exp(-1/256)
    e = _powers(r, SIG_HALF + 1)  # exp(-x) for x = k/256 >= 0
    one = 1 << _P
    pos = [((one << (SIG_BITS + 1)) // (one + ek) + 1) >> 1 for ek in e]  # round(2^SIG_BITS / (1 + exp(-x)))
    neg = [(1 << SIG_BITS) - p for p in pos[:0:-1]]  # sigmoid(-x) = 1 - sigmoid(x)
    return tuple(neg + pos)


def _cos_sin(w: Decimal) -> tuple[int, int]:
    """cos(w), sin(w) in Q._P by their Taylor series at 80 digits (w is small: |w| <= 2)."""
    c, s = Decimal(0), Decimal(0)
    term, k = Decimal(1), 0
    ctx = Context(prec=80)
    while True:
        if k % 4 == 0:
            c = ctx.add(c, term)
        elif k % 4 == 1:
            s = ctx.add(s, term)
        elif k % 4 == 2:
            c = ctx.subtract(c, term)
        else:
            s = ctx.subtract(s, term)
        k += 1
        term = ctx.divide(ctx.multiply(term, w), k)
        if term.is_zero() or term.adjusted() < -75:
            break
    return _fixed(c, _P), _fixed(s, _P)


def sin_pi_ratio(num: int, den: int, bits: int) -> int:
    """round(2^bits sin(pi num / den)), half up, for 0 <= num / den <= 1/2: w = pi num / den at 60 digits
    (PI to 100), then `_cos_sin`'s series in Q._P."""
    w = _CTX.divide(_CTX.multiply(PI, Decimal(num)), Decimal(den))
    return _round_shift(_cos_sin(w)[1], _P - bits)


@functools.lru_cache(maxsize=None)
def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Flattened (seq_len, head_dim // 2) cos and sin tables in Q.ROPE_BITS.

    Frequencies w_i = theta^(-2i/D) = exp(-(2i/D) ln theta) (theta taken as its exact binary value); the
    rotation by p*w_i comes from the angle-addition recurrence in Q._P integers."""
    half = head_dim // 2
    ln_theta = _CTX.ln(Decimal(theta))
    cos_t, sin_t = [0] * (seq_len * half), [0] * (seq_len * half)
    for i in range(half):
        w = _CTX.exp(_CTX.multiply(_CTX.minus(_CTX.divide(Decimal(2 * i), Decimal(head_dim))), ln_theta))
        cw, sw = _cos_sin(w)
        c, s = 1 << _P, 0
        for p in range(seq_len):
            cos_t[p * half + i] = _round_shift(c, _P - ROPE_BITS)
            sin_t[p * half + i] = _round_shift(s, _P - ROPE_BITS)
            c, s = (c * cw - s * sw) >> _P, (s * cw + c * sw) >> _P
    return tuple(cos_t), tuple(sin_t)


def tables_digest(seq_len: int, head_dim: int, theta: float) -> str:
    """SHA-256 (16 hex digits) of every table a model of this shape uses."""
    h = hashlib.sha256()
    cos_t, sin_t = rope_tables(seq_len, head_dim, theta)
    tables = (("exp", exp_table()), ("att_exp", att_exp_table()), ("sigmoid", sigmoid_table()), ("cos", cos_t), ("sin", sin_t))
    for name, t in tables:
        h.update(name.encode() + b":" + ",".join(map(str, t)).encode() + b";")
    return h.hexdigest()[:16]
