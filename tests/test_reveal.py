"""The reveal counts per step (codec/reveal.py): pinned known answers, every token revealed once."""
from __future__ import annotations

import numpy as np

from ddcompress.codec.reveal import reveal_counts, time_grid


def test_reveal_counts_known_answers():
    assert reveal_counts(64, 2, "sine").tolist() == [19, 45]
    assert reveal_counts(64, 3, "sine").tolist() == [9, 23, 32]
    assert reveal_counts(64, 16, "sine").tolist() == [1, 2, 2, 3, 3, 4, 4, 4, 5, 6, 6, 5, 7, 6, 6]
    assert reveal_counts(1024, 16, "sine").tolist() == [5, 15, 24, 34, 43, 52, 59, 68, 74, 81, 86, 91, 95, 97, 100, 100]
    assert reveal_counts(5, 16, "sine").tolist() == [1, 1, 1, 2]  # steps capped at n
    assert reveal_counts(10, 4, "uniform").tolist() == [2, 3, 3, 2]  # np.rint: half to even
    assert reveal_counts(64, 64, "uniform").tolist() == [1] * 64
    assert reveal_counts(0, 5, "sine").tolist() == []
    for n in (1, 7, 64, 1000):
        for steps in (1, 2, 5, 16, 64, 2000):
            for grid in ("sine", "uniform"):
                c = reveal_counts(n, steps, grid)
                assert c.sum() == n and (c > 0).all() and len(c) <= min(n, steps)
    t = time_grid(4, "sine")
    assert t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) > 0)


def test_reveal_counts_do_not_depend_on_the_machines_cos():
    """The counts decide a file's bytes, so they must not depend on the last bit of np.cos (numpy's SIMD
    cos and other libms differ by an ulp or more): n t_i is never within 1e-10 of a half-integer for
    chunk sizes n <= 1024 and every step count <= 256, except at the grid's one rational point
    t = sin(pi/6) = 1/2 (steps divisible by 3), which is pinned to n // 2."""
    import numpy as np

    from ddcompress.codec.reveal import reveal_counts, time_grid

    n = np.arange(1, 1025, dtype=np.float64)[:, None]
    for steps in range(2, 257):
        t = time_grid(steps, "sine")
        inner = [i for i in range(1, steps) if not (steps % 3 == 0 and i == steps // 3)]
        x = n * t[inner][None, :]
        assert np.abs(x - np.floor(x) - 0.5).min() > 1e-10, steps
    # the tie: a cos a hair above 1/2 would round n t up for odd n; the counts stay those of n // 2
    for steps in (3, 12, 24):
        for m in (25, 101, 1023):  # (odd, and at least the steps: reveal_counts caps the steps at n)
            t = time_grid(steps, "sine")
            want = np.rint(m * t).astype(np.int64)
            want[0], want[-1], want[steps // 3] = 0, m, m // 2
            counts = (want[1:] - want[:-1])[::-1]
            assert reveal_counts(m, steps, "sine").tolist() == counts[counts > 0].tolist()
            assert abs(t[steps // 3] - 0.5) < 1e-15
