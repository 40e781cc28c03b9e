"""The .ddc container (codec/container.py, docs/FORMAT.md, format versions 2 to 5): framing, headers,
tables and checksums, damaged and crafted files, concatenated frames. Known-answer values pin the format:
if one of these changes, files written by earlier versions no longer decode (the PRNG's and the reveal
counts' known answers are in test_prng.py and test_reveal.py)."""
from __future__ import annotations

import gzip
import json
import lzma
import random
import struct
import zlib

import numpy as np
import pytest

from ddcompress.codec.container import FORMAT_VERSION, MAGIC, NUMERICS, Container, Header, is_ddc, parse, parse_frames
from ddcompress.errors import FormatError, IntegrityError
from ddcompress.codec.layout import MAX_GROUP_SIZE, layout_counts

MDM = {"method": "mdm", "original_bytes": 300, "original_crc32": 0x12345678, "numerics": "int8-exact-1",
       "model_id": "f513e2f185caa3f2", "tokenizer_id": "0123abcd", "seq_len": 8, "steps": 4, "grid": "sine",
       "level": 2, "transform": None, "seed": 5, "group_size": 2, "tokens": 20, "ideal_bits": 1.5}


def H(**fields) -> Header:
    return Header(**fields)


def sample() -> Container:
    """20 tokens, L = 8, 2 chunks per group: chunks [0,8) [8,16) in group 0, the tail [12,20) alone;
    a token CRC per group."""
    return Container(H(**MDM), [4, 2], [1, 0xDEADBEEF], [b"abcd", b"xy"])


def store(data: bytes) -> Container:
    return Container(Header("store", len(data), zlib.crc32(data)), [len(data)], [], [data])


def xz(data: bytes) -> Container:
    packed = lzma.compress(data)
    return Container(Header("xz", len(data), zlib.crc32(data)), [len(packed)], [], [packed])


def uv(n: int) -> bytes:
    """LEB128, written out independently of the container module."""
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n >= 0x80 else 0)])
        n >>= 7
        if not n:
            return out


def frame(body: bytes, version: int = 5, payloads: bytes = b"") -> bytes:
    """A frame around raw header+table bytes, with a valid CRC: for crafting headers."""
    head = bytes([version]) + uv(len(body)) + body
    return MAGIC + head + struct.pack("<I", zlib.crc32(head)) + payloads


def mdm_body(table: bytes | None = None, version: int = 5, **f) -> bytes:
    """Header + table of an mdm frame field by field; a field given as bytes is written raw."""
    v = {"method": 2, "original_bytes": 300, "numerics": 1, "seq_len": 8, "steps": 4, "grid": 0, "level": 2,
         "transform": 0, "seed": 5, "group_size": 2, "tokens": 20, "ideal_bits": 1.5, "mixer": 0,
         "denoiser_bits": 1.5} | f

    def enc(name, how):
        x = v[name]
        return x if isinstance(x, bytes) else how(x)

    u8 = lambda x: bytes([x])  # noqa: E731
    body = (enc("method", u8) + enc("original_bytes", uv) + struct.pack("<I", 0x12345678) + enc("numerics", u8)
            + bytes.fromhex("f513e2f185caa3f2" "0123abcd") + enc("seq_len", uv) + enc("steps", uv) + enc("grid", u8)
            + enc("level", u8) + enc("transform", u8) + enc("seed", uv) + enc("group_size", uv) + enc("tokens", uv)
            + struct.pack("<f", v["ideal_bits"]))
    if version >= 5:
        body += enc("mixer", u8) + struct.pack("<f", v["denoiser_bits"])
    if table is None:  # empty payloads, zero token CRCs (one per group)
        chunks, groups = layout_counts(v["tokens"], v["seq_len"], v["group_size"])
        table = (b"\x00" + struct.pack("<I", zlib.crc32(b""))) * groups + bytes(4 * groups)
    return body + table


# -- the byte layout ----------------------------------------------------------------------------------


def test_exact_layout():
    blob = sample().to_bytes()
    expect = bytes.fromhex(
        "89444443"  # magic
        "05"  # format version
        "37"  # N = 55 bytes of header and table follow
        "02" "ac02" "78563412"  # method mdm, original_bytes 300, original_crc32
        "01" "f513e2f185caa3f2" "0123abcd"  # numerics int8-exact-1, model id, tokenizer id
        "08" "04" "00" "02" "00"  # seq_len 8, steps 4, grid sine, level 2, transform none
        "05" "02" "14" "0000c03f"  # seed 5, group_size 2, tokens 20, ideal_bits 1.5 (f32)
        "00" "0000c03f"  # mixer none, denoiser_bits 1.5 (f32): format 5
        "04" "11cd82ed" "02" "9928e68f"  # group 0: 4 bytes, CRC32(b"abcd"); group 1: 2 bytes, CRC32(b"xy")
        "01000000" "efbeadde"  # token CRCs, one per group
    ) + struct.pack("<I", zlib.crc32(blob[4:-10])) + b"abcdxy"  # CRC32 of version .. end of table; payloads
    assert blob == expect
    assert MAGIC == b"\x89DDC" and FORMAT_VERSION == 5 and NUMERICS == {"int8-exact-1": 1}


def test_format_2_is_still_read():
    """Format 2 (ddc 0.2.0) is format 3 with one token CRC per chunk instead of per group."""
    blob = bytes.fromhex(
        "89444443" "02" "36"  # magic, format version 2, N = 54
        "02" "ac02" "78563412" "01" "f513e2f185caa3f2" "0123abcd" "08" "04" "00" "02" "00" "05" "02" "14" "0000c03f"
        "04" "11cd82ed" "02" "9928e68f"  # the groups
        "01000000" "02000000" "efbeadde"  # token CRCs, one per chunk
        "5ffcfe54"  # CRC32 of version .. end of table
        "616263647879"  # payloads
    )
    c = parse(blob)
    assert c.header == H(**MDM, format_version=2, chunks=3, mixer=None, denoiser_bits=1.5)
    assert c.token_crcs == [1, 2, 0xDEADBEEF] and c.payloads == [b"abcd", b"xy"]
    with pytest.raises(ValueError, match="writes format 5 only"):  # read, never written
        c.to_bytes()
    with pytest.raises(FormatError, match="table is too short for 2 groups and 3 token CRCs"):
        parse(frame(mdm_body(bytes(21), version=2), version=2))


def test_exact_layout_store():
    # empty input: one empty group whose size and CRC are original_bytes and original_crc32 (not stored)
    head = bytes.fromhex("05" "06" "00" "00" "00000000")  # version 5, N = 6, store, 0 bytes, CRC32 of nothing
    assert store(b"").to_bytes() == b"\x89DDC" + head + struct.pack("<I", zlib.crc32(head))
    blob = store(b"abc").to_bytes()
    assert blob[:12] == bytes.fromhex("89444443" "05" "06" "00" "03") + struct.pack("<I", zlib.crc32(b"abc"))
    assert blob[12:16] == struct.pack("<I", zlib.crc32(blob[4:12])) and blob[16:] == b"abc"


def test_roundtrip_all_methods():
    c = parse(sample().to_bytes())
    assert c.header == H(**MDM, format_version=5, chunks=3, mixer=None, denoiser_bits=1.5)
    assert c.group_sizes == [4, 2] and c.token_crcs == [1, 0xDEADBEEF] and c.payloads == [b"abcd", b"xy"]
    assert parse(Container(c.header, c.group_sizes, c.token_crcs, c.payloads).to_bytes()) == c  # derived keys accepted
    for data in (b"", b"abc", bytes(range(256)) * 10):
        for make in (store, xz):
            want = make(data)
            got = parse(want.to_bytes())
            assert got.header == want.header and got.header.format_version == 5
            assert got.group_sizes == want.group_sizes and got.payloads == want.payloads and got.token_crcs == []
    odd = MDM | {"level": None, "transform": "crlf", "grid": "uniform", "seed": 2**64 - 1, "seq_len": 2**20,
                 "steps": 2**20, "group_size": MAX_GROUP_SIZE, "tokens": 2**40, "original_bytes": 2**48 - 1,
                 "original_crc32": 2**32 - 1, "ideal_bits": 0.1}
    chunks, groups = layout_counts(2**40, 2**20, MAX_GROUP_SIZE)
    assert (chunks, groups) == (2**20, 2**20 // MAX_GROUP_SIZE)
    c = parse(Container(H(**odd), [3] * groups, [7] * groups, [b"xyz"] * groups).to_bytes())
    assert c.header == H(**odd | {"format_version": 5, "chunks": chunks, "ideal_bits": float(np.float32(0.1)),
                                  "mixer": None, "denoiser_bits": float(np.float32(0.1))})
    assert c.token_crcs == [7] * groups and c.payloads == [b"xyz"] * groups  # a million chunks: a token CRC a group
    assert parse(Container(H(**MDM | {"ideal_bits": np.float32(2.5)}), [4, 2], [1, 3], [b"abcd", b"xy"]).to_bytes()).header.ideal_bits == 2.5
    c = parse(Container(H(**MDM | {"mixer": "cm1", "denoiser_bits": 2.0}), [4, 2], [1, 3], [b"abcd", b"xy"]).to_bytes())
    assert (c.header.mixer, c.header.denoiser_bits) == ("cm1", 2.0)
    assert c.header.plan.steps == 4 and c.header.plan.grid == "sine" and c.header.plan.level == 2


def test_header_only_reads_a_prefix():
    blob = sample().to_bytes()
    c = parse(blob[:-6], header_only=True)  # payloads missing
    assert c.header == parse(blob).header and c.group_sizes == [4, 2] and c.token_crcs == [1, 0xDEADBEEF]
    assert c.payloads == []
    with pytest.raises(FormatError, match="truncated"):
        parse(blob[:-7], header_only=True)  # the header CRC is missing a byte


def test_is_ddc():
    assert is_ddc(sample().to_bytes()) and is_ddc(b"\x89DDC\r\n\x1a\n\x01\x00")  # any version
    assert not is_ddc(b"") and not is_ddc(MAGIC[:-1]) and not is_ddc(gzip.compress(b"x"))


def test_framing_sizes():
    assert len(store(b"").to_bytes()) == 16
    assert len(store(b"x" * 100).to_bytes()) == 116
    # one group, one chunk: 1000 tokens of a 4000-byte text, L = 1024, a 1500-byte payload
    h = MDM | {"original_bytes": 4000, "seq_len": 1024, "steps": 16, "level": 5, "group_size": 8, "tokens": 1000,
               "ideal_bits": 12000.0}
    for seed, most in ((0, 61), (2**63 - 1, 69)):  # (format 5's mixer and denoiser_bits: 5 bytes)
        blob = Container(H(**h | {"seed": seed}), [1500], [0], [bytes(1500)]).to_bytes()
        assert len(blob) - 1500 <= most


# -- damaged files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [sample, lambda: store(b"hello"), lambda: xz(b"hello")], ids=["mdm", "store", "xz"])
def test_truncated_at_every_offset(make):
    blob = make().to_bytes()
    with pytest.raises(FormatError, match=r"^not a ddc file \(bad magic\)$"):
        parse(b"")
    for cut in range(1, len(blob)):
        with pytest.raises(FormatError, match="^truncated ddc file"):
            parse(blob[:cut])


@pytest.mark.parametrize("make", [sample, lambda: store(b"hello"), lambda: xz(b"hello")], ids=["mdm", "store", "xz"])
def test_every_bit_flip_is_caught(make):
    """A flip in the framing is a FormatError, a flip in a payload an IntegrityError; nothing else, ever."""
    blob = make().to_bytes()
    payload_at = len(blob) - sum(len(p) for p in make().payloads)
    for i in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            want = FormatError if i < payload_at else IntegrityError
            with pytest.raises(want) as err:
                parse(bytes(bad))
            assert type(err.value) is want and "\n" not in str(err.value)
            if i >= payload_at:
                assert "payload checksum mismatch" in str(err.value)


def test_flipped_version_says_corrupt_not_newer():
    blob = sample().to_bytes()
    for bit in range(8):
        bad = bytearray(blob)
        bad[4] ^= 1 << bit
        with pytest.raises(FormatError, match="^corrupt ddc file: header checksum mismatch$"):
            parse(bytes(bad))


def test_trailing_garbage():
    with pytest.raises(FormatError, match="^corrupt ddc file: 1 unexpected trailing bytes$"):
        parse(sample().to_bytes() + b"\0")


def test_format_1_refused():
    v1 = b"\x89DDC\r\n\x1a\n" + struct.pack("<HI", 1, 5) + b"hello" + bytes(30)
    for blob in (v1, v1[:8]):
        with pytest.raises(FormatError) as err:
            parse(blob)
        assert str(err.value) == ("ddc format version 1 (float numerics, written by ddc 0.1.x): this ddc reads "
                                  "formats 2 to 5; decompress it with ddc 0.1.x")


def test_foreign_files():
    rng = random.Random(0)
    for blob in (b"", b"\x89", gzip.compress(b"hello world"), rng.randbytes(1000), b"\x89PNG\r\n\x1a\n" + bytes(20),
                 json.dumps(MDM).encode()):
        with pytest.raises(FormatError):
            parse(blob)


BIG = 10**12
CRAFTED = {  # frames with a valid CRC whose header is nonsense -> (FormatError message, regex)
    "tokens 10^12": (frame(mdm_body(b"", tokens=BIG, original_bytes=10 * BIG)),
                     r"^corrupt ddc file: 0-byte table is too short for \d+ groups and \d+ token CRCs$"),
    "tokens 10^12, L=1": (frame(mdm_body(b"\x00" * 100, tokens=BIG, original_bytes=BIG, seq_len=1, steps=1, level=0)),
                          r"^corrupt ddc file: 100-byte table is too short"),
    "tokens 2^41": (frame(mdm_body(b"", tokens=2**41, original_bytes=2**44)), r"^corrupt ddc file: tokens \d+ out of range"),
    "level vs steps": (frame(mdm_body(steps=5)), r"^corrupt ddc file: level 2 means 4 steps on the sine grid, not 5 on the sine$"),
    "level vs grid": (frame(mdm_body(grid=1)), r"^corrupt ddc file: level 2 means 4 steps on the sine grid, not 4 on the uniform$"),
    "tokens 0": (frame(mdm_body(b"", tokens=0)), r"^corrupt ddc file: tokens 0 out of range 1\.\."),
    "tokens > bytes": (frame(mdm_body(tokens=20, original_bytes=19)), r"^corrupt ddc file: tokens 20 > original_bytes 19"),
    "seq_len 0": (frame(mdm_body(b"", seq_len=0)), r"^corrupt ddc file: seq_len 0 out of range 1\.\.1048576$"),
    "seq_len 2^21": (frame(mdm_body(b"", seq_len=2**21)), r"^corrupt ddc file: seq_len 2097152 out of range"),
    "steps 0": (frame(mdm_body(steps=0)), r"^corrupt ddc file: steps 0 out of range 1\.\.8$"),
    "steps > seq_len": (frame(mdm_body(steps=9)), r"^corrupt ddc file: steps 9 out of range 1\.\.8$"),
    "group_size 0": (frame(mdm_body(b"", group_size=0)), r"^corrupt ddc file: group_size 0 out of range"),
    "group_size 65": (frame(mdm_body(b"", group_size=MAX_GROUP_SIZE + 1)),
                      r"^corrupt ddc file: group_size 65 is over the limit of 64 chunks per group$"),
    "group_size 2^20": (frame(mdm_body(b"", group_size=2**20)), r"^corrupt ddc file: group_size 1048576 is over the limit"),
    "original_bytes 2^48": (frame(mdm_body(original_bytes=2**48)), r"^corrupt ddc file: original_bytes \d+ out of range"),
    "level 10": (frame(mdm_body(level=10)), r"^corrupt ddc file: level 10 out of range 1\.\.9$"),
    "ideal_bits nan": (frame(mdm_body(ideal_bits=float("nan"))), r"^corrupt ddc file: ideal_bits nan is not"),
    "ideal_bits < 0": (frame(mdm_body(ideal_bits=-1.0)), r"^corrupt ddc file: ideal_bits -1\.0 is not"),
    "11-byte varint": (frame(mdm_body(seed=b"\xff" * 10 + b"\x01")), r"^corrupt ddc file: varint for seed longer than 10 bytes$"),
    "varint >= 2^64": (frame(mdm_body(seed=b"\xff" * 9 + b"\x02")), r"^corrupt ddc file: bad varint for seed$"),
    "non-minimal varint": (frame(mdm_body(seed=b"\x85\x00")), r"^corrupt ddc file: bad varint for seed$"),
    "huge header length": (MAGIC + b"\x02" + b"\xff" * 9 + b"\x01", r"^truncated ddc file \(header\)$"),
    "method 7": (frame(mdm_body(method=7)), r"^corrupt ddc file: unknown method code 7$"),
    "grid 2": (frame(mdm_body(grid=2)), r"^corrupt ddc file: unknown grid code 2$"),
    "transform 2": (frame(mdm_body(transform=2)), r"^corrupt ddc file: unknown transform code 2$"),
    "numerics 9": (frame(mdm_body(numerics=9)),
                   r"^file uses numerics code 9, unknown to this ddc \(knows: int8-exact-1\); upgrade ddc$"),
    "numerics 0": (frame(mdm_body(numerics=0)), r"^file uses numerics code 0, unknown"),
    "version 6": (frame(mdm_body(), version=6),
                  r"^ddc format version 6 is newer than this ddc \(reads up to 5\); upgrade ddc$"),
    "mixer 2": (frame(mdm_body(mixer=2)), r"^corrupt ddc file: unknown mixer code 2$"),
    "denoiser_bits nan": (frame(mdm_body(denoiser_bits=float("nan"))), r"^corrupt ddc file: denoiser_bits nan is not"),
    "version 255": (frame(b"anything at all", version=255), r"^ddc format version 255 is newer"),
    "version 0": (frame(mdm_body(), version=0), r"^corrupt ddc file: invalid format version 0$"),
    "version 1, new framing": (frame(mdm_body(), version=1), r"^corrupt ddc file: invalid format version 1$"),
    "header past N": (frame(mdm_body()[:30]), r"^corrupt ddc file: header fields run past the header length$"),
    "bytes after table": (frame(mdm_body() + b"\0"), r"^corrupt ddc file: 1 unexpected bytes after the table$"),
    "table too short": (frame(mdm_body(bytes(17))), r"^corrupt ddc file: 17-byte table is too short for 2 groups"),
    "table entry past N": (frame(mdm_body(b"\x80\x01" + bytes(16))), r"^corrupt ddc file: header fields run past"),
    "store 2^47 bytes": (frame(b"\x00" + uv(2**47) + bytes(4)), r"^truncated ddc file: 22 bytes, expected 140737488355350$"),
    "xz size 2^63": (frame(b"\x01\x05" + bytes(4) + uv(2**63) + bytes(4)), r"^truncated ddc file: "),
    "xz no table": (frame(b"\x01\x05" + bytes(4)), r"^corrupt ddc file: 0-byte table is too short for 1 groups"),
    "store with a table": (frame(b"\x00\x00" + bytes(4) + b"\x01"), r"^corrupt ddc file: 1 unexpected bytes"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_headers(name):
    """Valid CRC, nonsense inside: the right one-line FormatError, before any work sized by the header."""
    blob, message = CRAFTED[name]
    with pytest.raises(FormatError, match=message) as err:
        parse(blob)
    assert type(err.value) is FormatError and "\n" not in str(err.value)


def test_writer_refuses_group_size_over_the_limit():
    """The cap on chunks per group holds for writers too (docs/FORMAT.md): no ddc writes what it refuses."""
    with pytest.raises(ValueError, match="group_size 65 is over the limit of 64"):
        Container(H(**MDM | {"group_size": MAX_GROUP_SIZE + 1}), [0], [0], [b""]).to_bytes()


def test_crafted_builder_matches_writer():
    """The test's own field-by-field builder writes what Container.to_bytes writes (so CRAFTED is real)."""
    c = Container(H(**MDM), [0, 0], [0, 0], [b"", b""])
    assert frame(mdm_body()) == c.to_bytes()


# -- concatenated frames ------------------------------------------------------------------------------


def test_parse_frames():
    a, b, c = sample(), store(b"second"), xz(b"third" * 50)
    blob = a.to_bytes() + b.to_bytes() + c.to_bytes()
    frames = parse_frames(blob)
    assert [f.header.method for f in frames] == ["mdm", "store", "xz"]
    assert [f.payloads for f in frames] == [a.payloads, b.payloads, c.payloads]
    assert parse_frames(a.to_bytes()) == [parse(a.to_bytes())]
    assert len(parse_frames(store(b"").to_bytes() * 2)) == 2
    with pytest.raises(FormatError, match=r"unexpected trailing bytes \(another ddc frame\)$"):
        parse(blob)  # parse wants exactly one
    with pytest.raises(FormatError, match="^corrupt ddc file: 3 bytes after frame 3 are not a ddc frame$"):
        parse_frames(blob + b"\0\0\0")
    with pytest.raises(FormatError, match="^truncated ddc file"):
        parse_frames(blob[:-1])
    with pytest.raises(FormatError, match="^truncated ddc file"):
        parse_frames(blob + MAGIC[:2])
    with pytest.raises(FormatError, match="^not a ddc file"):
        parse_frames(b"")
    many = store(b"").to_bytes() * 10_000  # linear in the number of frames
    assert len(parse_frames(many)) == 10_000
    bad = bytearray(blob)
    bad[len(a.to_bytes()) + 12] ^= 1  # in the second frame's header
    with pytest.raises(FormatError, match="checksum mismatch"):
        parse_frames(bytes(bad))


# -- the writer refuses what the reader would refuse ------------------------------------------------------


@pytest.mark.parametrize("change", [
    {"seq_len": 0}, {"steps": 9}, {"steps": 0}, {"group_size": 0}, {"tokens": 0}, {"tokens": 301}, {"seed": -1},
    {"seed": 2**64}, {"level": 0}, {"level": 10}, {"grid": "linear"}, {"transform": "lf"}, {"numerics": "float32"},
    {"model_id": "F513E2F185CAA3F2"}, {"model_id": "f513e2f1"}, {"tokenizer_id": "0123abcd0123abcd"},
    {"ideal_bits": float("nan")}, {"ideal_bits": 1e39}, {"ideal_bits": -1.0}, {"ideal_bits": True},
    {"seq_len": 8.0}, {"tokens": np.int64(20)}, {"format_version": 1}, {"chunks": 4}, {"method": "zstd"},
    {"original_crc32": 2**32}, {"original_bytes": 2**48}, {"seed": None}, {"ideal_bits": None}, {"mixer": "cm9"},
    {"denoiser_bits": -2.0},
])
def test_writer_rejects_nonsense_header(change):
    with pytest.raises(ValueError, match="^cannot write ddc file: "):
        Container(H(**MDM | change), [4, 2], [1, 3], [b"abcd", b"xy"]).to_bytes()


def test_the_header_is_typed():
    with pytest.raises(TypeError):
        Header(**MDM, model_name="ddc-small")  # a field the format does not have
    with pytest.raises(ValueError, match="^cannot write ddc file: the header must be a Header, got dict$"):
        Container(dict(MDM), [4, 2], [1, 3], [b"abcd", b"xy"]).to_bytes()
    h = parse(sample().to_bytes()).header
    assert h.as_dict()["chunks"] == 3 and set(h.as_dict()) == set(Header.__dataclass_fields__)


def test_writer_rejects_inconsistent_tables():
    for groups, crcs, payloads in (([4], [1, 3], [b"abcd"]), ([4, 2], [1, 2, 3], [b"abcd", b"xy"]), ([4, 2], [1], [b"abcd", b"xy"]),
                                   ([4, 3], [1, 3], [b"abcd", b"xy"]), ([4, 2], [1, 2**32], [b"abcd", b"xy"])):
        with pytest.raises(ValueError):
            Container(H(**MDM), groups, crcs, payloads).to_bytes()
    h = store(b"abc").header
    for groups, crcs, payloads in (([3], [], [b"abd"]), ([2], [], [b"ab"]), ([], [], []), ([3], [1], [b"abc"])):
        with pytest.raises(ValueError):
            Container(h, groups, crcs, payloads).to_bytes()
    with pytest.raises(ValueError):
        Container(Header("store", 0, 0, seed=1), [0], [], [b""]).to_bytes()
    with pytest.raises(ValueError):
        Container(Header("store", 0, None), [0], [], [b""]).to_bytes()
