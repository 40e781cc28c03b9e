"""Per-file structures grow linearly with the file: layout and container at 10^5-10^6 chunks, without
the model (a 1 GB text is about 230k chunks of 1024 tokens)."""
from __future__ import annotations

import time
import zlib

import pytest

from ddcompress.codec.container import Container, Header, parse
from ddcompress.codec.layout import chunk_layout, group_layout, layout_counts

pytestmark = pytest.mark.slow  # a system test (setup.cfg: markers)


def timed(f, *args):
    t = time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - t


def test_layout_is_linear_up_to_a_million_chunks():
    L, gs = 1024, 64
    sizes = (100_000, 1_000_000)
    secs = []
    # the small size at its best of 3: a stall of a loaded machine there would fake a steep growth
    for n_chunks, reps in zip(sizes, (3, 1)):
        n = n_chunks * L + 17  # a tail chunk too
        best = float("inf")
        for _ in range(reps):
            chunks, t1 = timed(chunk_layout, n, L)
            groups, t2 = timed(group_layout, chunks, gs)
            best = min(best, t1 + t2)
        assert (len(chunks), len(groups)) == layout_counts(n, L, gs)
        secs.append(best)
    assert secs[1] < 30.0, secs  # linear: ~1 s for a million chunks (more on a loaded machine); quadratic: hours


def test_container_is_linear_at_a_hundred_thousand_chunks():
    L, gs, n_chunks = 1024, 8, 100_000
    tokens = n_chunks * L
    n_chunks_, n_groups = layout_counts(tokens, L, gs)
    payloads = [bytes([g % 251]) * 4 for g in range(n_groups)]
    header = Header("mdm", 5 * tokens, 0, numerics="int8-exact-1", model_id="f513e2f185caa3f2",
                    tokenizer_id="e8796d36", seq_len=L, steps=16, grid="sine", level=5, transform=None, seed=0,
                    group_size=gs, tokens=tokens, ideal_bits=1.0)
    crcs = [zlib.crc32(i.to_bytes(4, "little")) for i in range(n_groups)]  # a token CRC per group
    blob, t_write = timed(Container(header, [4] * n_groups, crcs, payloads).to_bytes)
    c, t_read = timed(parse, blob)
    assert c.token_crcs == crcs and len(c.payloads) == n_groups and c.header.chunks == n_chunks
    assert t_write + t_read < 10.0, (t_write, t_read)  # ~0.5 s alone; generous for loaded CI machines
