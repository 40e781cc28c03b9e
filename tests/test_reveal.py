"""The reveal counts per step (codec/reveal.py): integers only, pinned known answers, every token revealed
once, and the same counts as the float64 grid that formats 2-5 were written with."""
from __future__ import annotations

import math

import numpy as np

from ddcompress.codec.reveal import FRAC, _masked, reveal_counts, sine_table


def test_reveal_counts_known_answers():
    assert reveal_counts(64, 2, "sine").tolist() == [19, 45]
    assert reveal_counts(64, 3, "sine").tolist() == [9, 23, 32]
    assert reveal_counts(64, 16, "sine").tolist() == [1, 2, 2, 3, 3, 4, 4, 4, 5, 6, 6, 5, 7, 6, 6]
    assert reveal_counts(1024, 16, "sine").tolist() == [5, 15, 24, 34, 43, 52, 59, 68, 74, 81, 86, 91, 95, 97, 100, 100]
    assert reveal_counts(5, 16, "sine").tolist() == [1, 1, 1, 2]  # steps capped at n
    assert reveal_counts(10, 4, "uniform").tolist() == [2, 3, 3, 2]  # half to even: 2.5 -> 2, 7.5 -> 8
    assert _masked(45, 10, "uniform")[7] == 32  # 31.5 -> 32 exactly (float64 0.7 * 45 lies below it)
    assert reveal_counts(64, 64, "uniform").tolist() == [1] * 64
    assert reveal_counts(0, 5, "sine").tolist() == []
    for n in (1, 7, 64, 1000):
        for steps in (1, 2, 5, 16, 64, 2000):
            for grid in ("sine", "uniform"):
                c = reveal_counts(n, steps, grid)
                assert c.sum() == n and (c > 0).all() and len(c) <= min(n, steps)
    t = np.array([float(s) for s in sine_table(4)]) / 2**FRAC  # the sine grid rises from 0 to 1
    assert t[0] == 0.0 and abs(t[-1] - 1.0) < 1e-30 and np.all(np.diff(t) > 0)


def test_the_fixed_point_sine_is_pinned_and_accurate():
    from ddcompress.numerics.fixedpoint import PI

    assert str(PI)[:52] == "3.14159265358979323846264338327950288419716939937510"  # a typo changes files
    assert sine_table(7)[0] == 0 and sine_table(5)[-1] == 1 << FRAC and sine_table(3)[1] == 1 << (FRAC - 1)
    assert sine_table(2)[1] == 0xB504F333F9DE6484597D89B3754ABE9F  # round(2^128 sqrt(2)/2): the series is pinned
    for steps in (2, 3, 16, 24, 256, 1023):
        for i, s in enumerate(sine_table(steps)):
            assert abs(s / 2**FRAC - math.sin(math.pi * i / (2 * steps))) < 1e-15


def _float_counts(n: int, steps: int) -> tuple[int, ...]:
    """M_i as formats 2-5 computed them until the integer table: np.rint(n cos(pi/2 (1 - i/T)))."""
    i = np.arange(steps + 1, dtype=np.float64)
    m = np.rint(n * np.cos(0.5 * np.pi * (1.0 - i / steps))).astype(np.int64)
    m[0], m[-1] = 0, n
    if steps % 3 == 0:
        m[steps // 3] = n // 2
    return tuple(m.tolist())


def test_integer_counts_are_those_files_were_written_with():
    """Every level's step count and every chunk size of the shipped model (n t_i stays more than 1e-10 from
    a half-integer there, so float64 and the integer table agree; the one tie is pinned in both)."""
    for steps in (2, 3, 4, 5, 8, 12, 16, 24, 64, 256):
        for n in range(steps, 1025):
            assert _masked(n, steps, "sine") == _float_counts(n, steps), (n, steps)
    for n in range(1, 1025):  # the uniform grid ddc writes: T = n, one token per step
        assert _masked(n, n, "uniform") == tuple(range(n + 1))
