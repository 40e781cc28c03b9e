"""The unmasking orders (codec/prng.py): SplitMix64 and the permutations pinned by known answers and the
plain-integer definition of docs/FORMAT.md; format 5's spread order (prng.spread): a permutation of the
chunk, the same steps' sizes, one step's positions more than the gap apart wherever the counts allow, the
seed's order otherwise."""
from __future__ import annotations

import numpy as np
import pytest

from ddcompress.codec import prng
from ddcompress.codec.reveal import reveal_counts


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


# -- pinned known answers ------------------------------------------------------------------------------


def test_splitmix64_known_answers():
    # SplitMix64 seeded with 0: first output (Vigna's reference implementation)
    assert int(prng.splitmix64(np.array([0], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF
    assert int(prng.stream_key(0, 0)) == 0xA706DD2F4D197E6F
    assert int(prng.stream_key(12345, 7)) == 0xFBDF4C68FA8AFDEC


def _splitmix64_int(x: int) -> int:
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_prng_matches_plain_integer_definition():
    """The definition in docs/FORMAT.md, in plain Python integers, gives the same orders."""
    m = (1 << 64) - 1
    for seed, chunk, n in ((0, 0, 10), (2**63 - 1, 5, 33), (123456789, 1000, 64)):
        key = _splitmix64_int(_splitmix64_int(seed & m) ^ chunk)
        assert int(prng.stream_key(seed, chunk)) == key
        keys = [_splitmix64_int((key + i * 0x9E3779B97F4A7C15) & m) for i in range(n)]
        assert prng.permutation(seed, chunk, n).tolist() == sorted(range(n), key=lambda i: keys[i])
        u = prng.uniforms(seed, chunk, n)
        assert u.tolist() == [(k >> 11) / 2**53 for k in keys]


def test_permutation_known_answers():
    assert prng.permutation(0, 0, 10).tolist() == [0, 7, 8, 2, 5, 9, 4, 6, 3, 1]
    assert prng.permutation(1, 3, 10).tolist() == [5, 3, 9, 6, 7, 4, 1, 0, 2, 8]
    p = prng.permutation(42, 0, 1024)
    assert sorted(p.tolist()) == list(range(1024))
