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
