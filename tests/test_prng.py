"""Format 5's spread reveal order (prng.spread): a permutation of the chunk, the same steps' sizes,
one step's positions more than the gap apart wherever the counts allow, the seed's order otherwise."""
from __future__ import annotations

import numpy as np
import pytest

from ddcompress import prng
from ddcompress.schedule import reveal_counts


@pytest.mark.parametrize("n,steps,grid", [(1024, 16, "sine"), (1024, 2, "sine"), (300, 7, "sine"), (50, 50, "uniform")])
def test_spread_is_a_permutation_with_far_apart_steps(n, steps, grid):
    perm = prng.permutation(9, 4, n)
    counts = reveal_counts(n, steps, grid)
    order = prng.spread(perm, counts, 2)
    assert sorted(order.tolist()) == list(range(n))
    ends = np.cumsum(counts)
    taken = 0
    for k, end in zip(counts.tolist(), ends.tolist()):
        step = np.sort(order[end - k : end])
        close = int((np.diff(step) <= 2).sum())
        if 5 * k <= n - taken:  # room for every position with its 2 neighbours each side: none close
            assert close == 0, (k, close)
        taken += k
    assert np.array_equal(prng.spread(perm, counts, 2), order)  # deterministic


def test_spread_keeps_the_seed_order_when_nothing_conflicts():
    perm = prng.permutation(1, 0, 64)
    assert np.array_equal(prng.spread(perm, np.ones(64, dtype=np.int64), 2), perm)  # one token a step: the ELBO order
    one = prng.spread(perm, np.array([64]), 2)  # one step: everything at once (far ones first)
    assert sorted(one.tolist()) == list(range(64)) and not np.array_equal(one, perm)


def test_spread_takes_far_positions_first_then_fills():
    perm = np.array([0, 1, 2, 5, 3, 4])
    # step 1 (3 tokens): 0 then 5 (1, 2, 3 and 4 are within 2 of a taken one), then the first left: 1
    order = prng.spread(perm, np.array([3, 3]), 2)
    assert order.tolist() == [0, 5, 1, 2, 3, 4]
