"""Chunks and groups (codec/layout.py): every token coded once, the tail chunk's known context, groups in order."""
from __future__ import annotations

import numpy as np
import pytest

from ddcompress.codec.layout import Chunk, chunk_layout, group_layout

L = 64


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 127, 128, 197, 5 * 64 + 7])
def test_chunk_layout_codes_every_token_once(n):
    chunks = chunk_layout(n, L)
    coded = np.zeros(n, dtype=int)
    for i, c in enumerate(chunks):
        assert c.index == i
        assert 0 <= c.start and c.start + c.width <= n
        assert c.width == min(n, L)
        coded[c.start + c.known : c.start + c.width] += 1
    assert (coded == 1).all()
    rest = n % L
    if n > L and rest:  # the tail: the last L tokens, the earlier ones known context
        tail = chunks[-1]
        assert (tail.start, tail.width, tail.known, tail.coded) == (n - L, L, L - rest, rest)
    assert len(chunks) == -(-n // L)


def test_group_layout():
    chunks = chunk_layout(5 * L + 7, L)
    groups = group_layout(chunks, 2)
    assert [[c.index for c in g] for g in groups] == [[0, 1], [2, 3], [4], [5]]
    assert groups[-1][0].known == L - 7
    assert group_layout(chunk_layout(30, L), 8) == [[Chunk(0, 0, 30, 0)]]
    assert group_layout([], 8) == []
