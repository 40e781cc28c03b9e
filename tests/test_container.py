"""The .ddc byte layout (docs/FORMAT.md) and everything a decoder must reproduce bit for bit: framing,
checksums, the PRNG that draws unmasking orders, and the reveal counts. Known-answer values pin the
format: if one of these changes, files written by earlier versions no longer decode."""
from __future__ import annotations

import gzip
import json
import random
import struct
import zlib

import numpy as np
import pytest

from ddcompress import prng
from ddcompress.container import FORMAT_VERSION, MAGIC, Container, is_ddc, parse
from ddcompress.errors import FormatError
from ddcompress.schedule import reveal_counts, time_grid

HEADER = {"format_version": 1, "method": "store", "original_bytes": 3, "original_crc32": zlib.crc32(b"abc")}


def sample() -> Container:
    return Container({"method": "mdm", "n": 1, "z": [1, 2]}, [5, 0, 3], [0xDEADBEEF, 7], [b"hello", b"", b"xyz"])


def test_exact_layout():
    blob = sample().to_bytes()
    head = b'{"method":"mdm","n":1,"z":[1,2]}'  # sorted keys, no spaces, then raw deflate
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(b'{"method":"mdm","n":1,"z":[1,2]}') + c.flush()
    pcrcs = [zlib.crc32(b"hello"), zlib.crc32(b""), zlib.crc32(b"xyz")]
    table = struct.pack("<7I", 3, 5, 0, 3, *pcrcs) + struct.pack("<3I", 2, 0xDEADBEEF, 7)
    expect = (MAGIC + struct.pack("<HI", 1, len(head)) + head + struct.pack("<I", zlib.crc32(head))
              + table + struct.pack("<I", zlib.crc32(table)) + b"helloxyz")
    assert blob == expect
    assert MAGIC == b"\x89DDC\r\n\x1a\n" and FORMAT_VERSION == 1


def test_parse_roundtrip():
    c = parse(sample().to_bytes())
    assert c.header == {"method": "mdm", "n": 1, "z": [1, 2]}
    assert c.group_sizes == [5, 0, 3] and c.chunk_crcs == [0xDEADBEEF, 7]
    assert c.payloads == [b"hello", b"", b"xyz"]
    assert parse(sample().to_bytes(), header_only=True).header == c.header
    empty = Container(dict(HEADER), [], [], [])
    assert parse(empty.to_bytes()).payloads == []


def test_is_ddc():
    assert is_ddc(sample().to_bytes())
    assert not is_ddc(b"") and not is_ddc(MAGIC[:-1]) and not is_ddc(gzip.compress(b"x"))


@pytest.mark.parametrize("cut", ["0", "4", "8", "10", "14", "mid_header", "header_crc", "table_count", "mid_table",
                                 "table_crc", "mid_payload", "minus1"])
def test_truncated(cut):
    blob = sample().to_bytes()
    hlen = struct.unpack_from("<I", blob, 10)[0]
    table_at = 14 + hlen + 4
    at = {"0": 0, "4": 4, "8": 8, "10": 10, "14": 14, "mid_header": 14 + hlen // 2, "header_crc": 14 + hlen + 2,
          "table_count": table_at + 2, "mid_table": table_at + 10, "table_crc": table_at + 4 * 10 + 2,
          "mid_payload": len(blob) - 4, "minus1": len(blob) - 1}[cut]
    with pytest.raises(FormatError):
        parse(blob[:at])


def test_trailing_garbage():
    with pytest.raises(FormatError, match="trailing"):
        parse(sample().to_bytes() + b"\0")


def test_every_framing_byte_is_checked():
    """A flip anywhere before the payloads (magic, version, length, header, CRCs, table) is caught."""
    blob = sample().to_bytes()
    framing = len(blob) - 8
    for i in range(framing):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            with pytest.raises(FormatError):
                parse(bytes(bad))


def test_newer_version_refused():
    blob = bytearray(sample().to_bytes())
    blob[8:10] = struct.pack("<H", FORMAT_VERSION + 1)
    with pytest.raises(FormatError, match="newer"):
        parse(bytes(blob))


def test_header_must_be_a_json_object():
    for head in (b"[1, 2]", b"not json", b"\xff\xfe"):
        table = struct.pack("<II", 0, 0)
        blob = (MAGIC + struct.pack("<HI", 1, len(head)) + head + struct.pack("<I", zlib.crc32(head))
                + table + struct.pack("<I", zlib.crc32(table)))
        with pytest.raises(FormatError):
            parse(blob)


def test_foreign_files():
    rng = random.Random(0)
    for blob in (b"", b"\x89", gzip.compress(b"hello world"), rng.randbytes(1000), b"\x89PNG\r\n\x1a\n" + bytes(20),
                 json.dumps(HEADER).encode()):
        with pytest.raises(FormatError):
            parse(blob)


# -- the PRNG and reveal counts: pinned known answers ---------------------------------------------


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


def test_reveal_counts_known_answers():
    assert reveal_counts(64, 2, "cosine").tolist() == [19, 45]
    assert reveal_counts(64, 3, "cosine").tolist() == [9, 23, 32]
    assert reveal_counts(64, 16, "cosine").tolist() == [1, 2, 2, 3, 3, 4, 4, 4, 5, 6, 6, 5, 7, 6, 6]
    assert reveal_counts(1024, 16, "cosine").tolist() == [5, 15, 24, 34, 43, 52, 59, 68, 74, 81, 86, 91, 95, 97, 100, 100]
    assert reveal_counts(5, 16, "cosine").tolist() == [1, 1, 1, 2]  # steps capped at n
    assert reveal_counts(10, 4, "uniform").tolist() == [2, 3, 3, 2]  # np.rint: half to even
    assert reveal_counts(64, 64, "uniform").tolist() == [1] * 64
    assert reveal_counts(0, 5, "cosine").tolist() == []
    for n in (1, 7, 64, 1000):
        for steps in (1, 2, 5, 16, 64, 2000):
            for grid in ("cosine", "uniform"):
                c = reveal_counts(n, steps, grid)
                assert c.sum() == n and (c > 0).all() and len(c) <= min(n, steps)
    t = time_grid(4, "cosine")
    assert t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) > 0)


def test_payload_flips_are_caught_by_the_payload_crc():
    from ddcompress.errors import IntegrityError

    blob = sample().to_bytes()
    for i in range(len(blob) - 8, len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError, match="payload checksum"):
            parse(bytes(bad))
