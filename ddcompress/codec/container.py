"""The .ddc container, format version 5 (docs/FORMAT.md). A file is one or more frames back to back:

    frame  = magic 89 44 44 43 | u8 version (5; 2-4 read) | varint N | N bytes: header, table
             | u32 CRC32(version byte .. end of table) | group payloads, back to back
    header = u8 method (0 store, 1 xz, 2 mdm) | varint original_bytes | u32 original_crc32
      mdm += u8 numerics | model_id (8) | tokenizer_id (4) | varint seq_len | varint steps | u8 grid
             | u8 level (0 = none) | u8 transform (0 none, 1 crlf) | varint seed | varint group_size
             | varint tokens | f32 ideal_bits
       v5 += u8 mixer (0 none, 1 cm1) | f32 denoiser_bits
    table  = store: nothing (one group of original_bytes bytes, checked against original_crc32)
             xz:    varint size | u32 CRC32(payload)
             mdm:   per group (varint size | u32 CRC32(payload)), then per chunk u32 CRC32(its tokens);
                    the counts are not stored: layout_counts(tokens, seq_len, group_size)

Little-endian; varints are LEB128 (minimal, at most 10 bytes, < 2^64). Every version >= 2 keeps magic,
version, N and the CRC where they are, so the CRC is checked before the version byte is believed.
"""
from __future__ import annotations

import math
import numbers
import struct
import zlib
from dataclasses import asdict, dataclass, field

from ..errors import FormatError, IntegrityError
from .layout import MAX_GROUP_SIZE, layout_counts
from .plan import Plan, plan_for

MAGIC = b"\x89DDC"
MAGIC_V1 = b"\x89DDC\r\n\x1a\n"  # format 1 (JSON header, float numerics), ddc 0.1.x
FORMAT_VERSION = 5  # what this ddc writes
READS = (2, 3, 4, 5)  # what it reads: 5 mixes file-adaptive count models into the denoiser's frequencies
# (mixing.py), 4 codes the denoiser's alone, both with ddc's rANS (rans.py); 2 and 3 with constriction's
# range coder (decode only); format 2 also has a token CRC per chunk
METHODS = {"store": 0, "xz": 1, "mdm": 2}
NUMERICS = {"int8-exact-1": 1}
GRIDS = {"sine": 0, "uniform": 1}
TRANSFORMS = {None: 0, "crlf": 1}
MIXERS = {None: 0, "cm1": 1}  # format 5: the context mixing rule (mixing.py); None: the denoiser alone
# inclusive upper bounds; group_size: a decoder holds a whole group in one batch (layout.MAX_GROUP_SIZE)
LIMITS = {"seq_len": 1 << 20, "group_size": MAX_GROUP_SIZE, "tokens": 1 << 40}
MAX_ORIGINAL = 1 << 48  # original_bytes < 2^48
MDM = ("numerics", "model_id", "tokenizer_id", "seq_len", "steps", "grid", "level", "transform", "seed",
       "group_size", "tokens", "ideal_bits", "mixer", "denoiser_bits", "chunks")  # None unless method "mdm"
OPTIONAL = ("level", "transform", "mixer", "denoiser_bits", "chunks")  # may be None in an mdm header too


@dataclass
class Header:
    """A frame's header (docs/FORMAT.md), typed: what every method has, then what an mdm frame adds (None
    for "store" and "xz"). The reader fills `format_version` (a writer writes FORMAT_VERSION only) and
    `chunks` (from tokens, seq_len and group_size; a writer accepts it when it agrees). Formats 2-4 read
    back with mixer None and denoiser_bits = ideal_bits; a writer given denoiser_bits None writes ideal_bits."""
    method: str
    original_bytes: int
    original_crc32: int
    numerics: str | None = None  # the exact numerics that define mu_theta's integers
    model_id: str | None = None  # 16 hex digits
    tokenizer_id: str | None = None  # 8 hex digits
    seq_len: int | None = None  # L, the chunk length (the model's)
    steps: int | None = None  # reverse steps per chunk ...
    grid: str | None = None  # ... on this time grid (`plan`)
    level: int | None = None  # the level that named them (None: an explicit step count)
    transform: str | None = None  # None or "crlf"
    seed: int | None = None  # of the reveal orders
    group_size: int | None = None  # chunks per rANS stream
    tokens: int | None = None
    ideal_bits: float | None = None  # sum of -log2 p of the coded tokens under what was coded
    mixer: str | None = None  # format 5's context mixing rule (None: the denoiser alone)
    denoiser_bits: float | None = None  # the same under the denoiser's frequencies alone
    format_version: int = FORMAT_VERSION
    chunks: int | None = None

    @property
    def plan(self) -> Plan:
        """How the file's chunks were coded: steps and grid (and the level that named them)."""
        return Plan(self.steps, self.grid, self.level)

    def as_dict(self) -> dict:
        """Every field (None where the method has none): `info` and `ddc info --json`."""
        return asdict(self)


class _Bad(Exception):
    """A header value out of range: FormatError when reading, ValueError when writing."""


@dataclass
class Container:
    header: Header
    group_sizes: list[int] = field(default_factory=list)  # payload bytes per group
    token_crcs: list[int] = field(default_factory=list)  # CRC32 of each group's coded tokens (mdm; format 2: each chunk's)
    payloads: list[bytes] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        try:
            h = self.header
            if isinstance(h, Header) and h.format_version != FORMAT_VERSION:
                raise _Bad(f"this ddc writes format {FORMAT_VERSION} only, not {h.format_version!r}")
            groups, chunks = _check(h)
            _check_tables(self, groups, chunks)
        except _Bad as e:
            raise ValueError(f"cannot write ddc file: {e}") from None
        out = bytearray([METHODS[h.method]]) + leb128(h.original_bytes) + struct.pack("<I", h.original_crc32)
        if h.method == "mdm":
            out += bytes([NUMERICS[h.numerics]]) + bytes.fromhex(h.model_id) + bytes.fromhex(h.tokenizer_id)
            out += leb128(h.seq_len) + leb128(h.steps)
            out += bytes([GRIDS[h.grid], h.level or 0, TRANSFORMS[h.transform]])
            out += leb128(h.seed) + leb128(h.group_size) + leb128(h.tokens)
            out += struct.pack("<f", float(h.ideal_bits))
            bits = h.ideal_bits if h.denoiser_bits is None else h.denoiser_bits
            out += bytes([MIXERS[h.mixer]]) + struct.pack("<f", float(bits))
        if h.method != "store":
            for p in self.payloads:
                out += leb128(len(p)) + struct.pack("<I", zlib.crc32(p))
            out += struct.pack(f"<{len(self.token_crcs)}I", *self.token_crcs)
        head = bytes([FORMAT_VERSION]) + leb128(len(out)) + out
        return b"".join([MAGIC, head, struct.pack("<I", zlib.crc32(head)), *self.payloads])


def info(blob: bytes) -> dict:
    """Header fields plus sizes, from the framing alone (checks magic, checksums, lengths; decodes
    nothing, needs no model or torch). Keys absent for a method (model_id, tokens, ...) are None;
    `frames` counts the frames, `methods` lists their methods.

    Concatenated frames (`cat a.ddc b.ddc`): original_bytes, compressed_bytes, tokens, chunks and
    ideal_bits are sums (tokens, chunks, ideal_bits over the mdm frames; None where there is none); a
    field the frames do not share is None (method: "mixed"), as is original_crc32 (each frame's CRC is
    of its own part); `per_frame` holds each frame's own info, with its `offset` in the file."""
    frames, pos = [], 0
    for c in parse_frames(blob):  # every frame checked; then where each starts and ends (headers only)
        _, end = _frame(bytes(blob), pos, True)
        h = c.header.as_dict()
        n = h["original_bytes"]
        h.update(offset=pos, compressed_bytes=end - pos, bits_per_byte=8 * (end - pos) / n if n else None)
        frames.append(h)
        pos = end
    if len(frames) == 1:
        h = frames[0]
        del h["offset"]
        h.update(frames=1, methods=[h["method"]])
        return h
    keys = list(dict.fromkeys(k for f in frames for k in f if k != "offset"))
    mdm = [f for f in frames if f["method"] == "mdm"]
    h = {}
    for k in keys:  # what every frame shares (model fields: every mdm frame; an xz frame has no model)
        among = mdm if mdm and all(f.get(k) is None for f in frames if f["method"] != "mdm") else frames
        h[k] = among[0].get(k) if all(f.get(k) == among[0].get(k) for f in among) else None
    for k in ("tokens", "chunks", "ideal_bits", "denoiser_bits"):
        if k in h:
            h[k] = sum(f[k] for f in mdm) if mdm and all(f.get(k) is not None for f in mdm) else None
    n = sum(f["original_bytes"] for f in frames)
    h.update(method=h["method"] or "mixed", methods=[f["method"] for f in frames], frames=len(frames),
             original_bytes=n, original_crc32=None, compressed_bytes=len(blob),
             bits_per_byte=8 * len(blob) / n if n else None, per_frame=frames)
    return h


def is_ddc(blob: bytes) -> bool:
    """True for anything that starts like a .ddc file, of any format version."""
    return bytes(blob[: len(MAGIC)]) == MAGIC


def parse(blob: bytes, header_only: bool = False) -> Container:
    """Parse and check exactly one frame; raise FormatError / IntegrityError with a one-line reason.

    header_only: check magic, header and table (and their CRC) only; the payloads are neither read
    nor checked, and blob may be just a prefix of the file. The Container then has payloads == []."""
    blob = bytes(blob)
    c, end = _frame(blob, 0, header_only)
    if not header_only and end != len(blob):
        more = " (another ddc frame)" if blob[end : end + len(MAGIC)] == MAGIC else ""
        raise FormatError(f"corrupt ddc file: {len(blob) - end} unexpected trailing bytes{more}")
    return c


def parse_frames(blob: bytes) -> list[Container]:
    """Parse one or more frames back to back (like `cat a.ddc b.ddc`); each is fully checked."""
    blob, frames, pos = bytes(blob), [], 0
    while True:
        head = blob[pos : pos + len(MAGIC)]
        if frames and head != MAGIC and not (len(blob) - pos < len(MAGIC) and MAGIC.startswith(head)):
            raise FormatError(f"corrupt ddc file: {len(blob) - pos} bytes after frame {len(frames)} are not a ddc frame")
        c, pos = _frame(blob, pos, False)
        frames.append(c)
        if pos == len(blob):
            return frames


# -- reading ------------------------------------------------------------------------------------------


class _Reader:
    """Bytes [pos, end) of blob; running past end raises FormatError(short)."""

    def __init__(self, blob: bytes, pos: int, end: int, short: str):
        self.blob, self.pos, self.end, self.short = blob, pos, end, short

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise FormatError(self.short)
        self.pos += n
        return self.blob[self.pos - n : self.pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def varint(self, name: str) -> int:
        value = 0
        for i in range(10):
            b = self.u8()
            value |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                if (b == 0 and i > 0) or value >= 1 << 64:
                    raise FormatError(f"corrupt ddc file: bad varint for {name}")
                return value
        raise FormatError(f"corrupt ddc file: varint for {name} longer than 10 bytes")


def _enum(table: dict, code: int, name: str):
    for key, c in table.items():
        if c == code:
            return key
    if name == "numerics":
        known = ", ".join(NUMERICS)
        raise FormatError(f"file uses numerics code {code}, unknown to this ddc (knows: {known}); upgrade ddc")
    raise FormatError(f"corrupt ddc file: unknown {name} code {code}")


def _frame(blob: bytes, pos: int, header_only: bool) -> tuple[Container, int]:
    """Parse the frame at blob[pos:]; return it and the offset just past it."""
    if blob[pos : pos + len(MAGIC)] != MAGIC:
        rest = blob[pos:]
        if 0 < len(rest) < len(MAGIC) and MAGIC.startswith(rest):
            raise FormatError("truncated ddc file (magic)")
        raise FormatError("not a ddc file (bad magic)")
    if blob[pos : pos + len(MAGIC_V1)] == MAGIC_V1:
        raise FormatError("ddc format version 1 (float numerics, written by ddc 0.1.x): this ddc reads formats 2 to 5; "
                          "decompress it with ddc 0.1.x")
    # 1. locate the header by the framing every version >= 2 shares, and check its CRC ...
    r = _Reader(blob, pos + len(MAGIC), len(blob), "truncated ddc file (header)")
    version = r.u8()
    n = r.varint("header length")
    end = r.pos + n
    if end + 4 > len(blob):
        raise FormatError("truncated ddc file (header)")
    (crc,) = struct.unpack_from("<I", blob, end)
    if zlib.crc32(memoryview(blob)[pos + len(MAGIC) : end]) != crc:
        raise FormatError("corrupt ddc file: header checksum mismatch")
    # 2. ... and only then believe the version byte
    if version > FORMAT_VERSION:
        raise FormatError(f"ddc format version {version} is newer than this ddc (reads up to {FORMAT_VERSION}); upgrade ddc")
    if version not in READS:
        raise FormatError(f"corrupt ddc file: invalid format version {version}")
    # 3. header fields: constant work, then every value is bounded before it sizes anything
    r = _Reader(blob, r.pos, end, "corrupt ddc file: header fields run past the header length")
    h = Header(_enum(METHODS, r.u8(), "method"), r.varint("original_bytes"), r.u32(), format_version=version)
    if h.method == "mdm":
        h.numerics = _enum(NUMERICS, r.u8(), "numerics")
        h.model_id = r.take(8).hex()
        h.tokenizer_id = r.take(4).hex()
        h.seq_len = r.varint("seq_len")
        h.steps = r.varint("steps")
        h.grid = _enum(GRIDS, r.u8(), "grid")
        h.level = r.u8() or None
        h.transform = _enum(TRANSFORMS, r.u8(), "transform")
        h.seed = r.varint("seed")
        h.group_size = r.varint("group_size")
        h.tokens = r.varint("tokens")
        h.ideal_bits = struct.unpack("<f", r.take(4))[0]
        if version >= 5:
            h.mixer = _enum(MIXERS, r.u8(), "mixer")
            h.denoiser_bits = struct.unpack("<f", r.take(4))[0]
        else:  # the denoiser alone
            h.mixer, h.denoiser_bits = None, h.ideal_bits
    try:
        groups, chunks = _check(h)
    except _Bad as e:
        raise FormatError(f"corrupt ddc file: {e}") from None
    if h.method == "mdm":
        h.chunks = chunks
    # 4. the table: its smallest size must fit in what is left before reading a single entry
    left = end - r.pos
    n_tok = token_crc_count(h.method, version, groups, chunks)
    if h.method != "store" and 5 * groups + 4 * n_tok > left:
        raise FormatError(f"corrupt ddc file: {left}-byte table is too short for {groups} groups and {n_tok} token CRCs")
    if h.method == "store":
        sizes, crcs = [h.original_bytes], [h.original_crc32]
    else:
        sizes, crcs = [], []
        for _ in range(groups):
            sizes.append(r.varint("payload size"))
            crcs.append(r.u32())
    token_crcs = list(struct.unpack(f"<{n_tok}I", r.take(4 * n_tok)))
    if r.pos != end:
        raise FormatError(f"corrupt ddc file: {end - r.pos} unexpected bytes after the table")
    start = end + 4
    if header_only:
        return Container(h, sizes, token_crcs, []), start + sum(sizes)
    # 5. payloads
    total = start + sum(sizes)
    if total > len(blob):
        raise FormatError(f"truncated ddc file: {len(blob) - pos} bytes, expected {total - pos}")
    payloads = []
    for i, (size, want) in enumerate(zip(sizes, crcs)):
        payloads.append(blob[start : start + size])
        start += size
        if zlib.crc32(payloads[-1]) != want:
            raise IntegrityError(f"corrupt ddc file: payload checksum mismatch in group {i}")
    return Container(h, sizes, token_crcs, payloads), total


# -- checks shared by reader and writer ---------------------------------------------------------------


def _int(h: Header, name: str, lo: int, hi: int) -> int:
    """h.name must be an int with lo <= value <= hi."""
    v = getattr(h, name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise _Bad(f"{name} must be a Python int, got {type(v).__name__} {v!r}")
    if not lo <= v <= hi:
        raise _Bad(f"{name} {v} out of range {lo}..{hi}")
    return v


def _hex(h: Header, name: str, digits: int) -> None:
    v = getattr(h, name)
    if not isinstance(v, str) or len(v) != digits or v.strip("0123456789abcdef"):
        raise _Bad(f"{name} {v!r} is not {digits} lowercase hex digits")


def _check(h: Header) -> tuple[int, int]:
    """Check a header (types, ranges, cross-checks); return (groups, chunks) of its layout."""
    if not isinstance(h, Header):
        raise _Bad(f"the header must be a Header, got {type(h).__name__}")
    if h.method not in METHODS:
        raise _Bad(f"unknown method {h.method!r}")
    mdm = h.method == "mdm"
    if mdm:
        missing = [k for k in MDM if k not in OPTIONAL and getattr(h, k) is None]
        if missing:
            raise _Bad(f"header for method 'mdm': missing {missing}")
    else:
        extra = [k for k in MDM if getattr(h, k) is not None]
        if extra:
            raise _Bad(f"header for method {h.method!r}: not in the format: {extra}")
    if h.format_version not in READS:
        raise _Bad(f"format_version {h.format_version!r} is not one of {READS}")
    _int(h, "original_bytes", 0, MAX_ORIGINAL - 1)
    _int(h, "original_crc32", 0, 0xFFFFFFFF)
    if not mdm:
        return 1, 0
    if h.numerics not in NUMERICS:
        raise _Bad(f"unknown numerics {h.numerics!r} (knows: {', '.join(NUMERICS)})")
    _hex(h, "model_id", 16)
    _hex(h, "tokenizer_id", 8)
    L = _int(h, "seq_len", 1, LIMITS["seq_len"])
    _int(h, "steps", 1, L)
    if h.grid not in GRIDS:
        raise _Bad(f"unknown grid {h.grid!r}")
    if h.level is not None:
        _int(h, "level", 1, 9)
        want = plan_for(h.level, None, L)
        if (h.steps, h.grid) != (want.steps, want.grid):  # a level names its steps and grid: ddc never writes others
            raise _Bad(f"level {h.level} means {want.steps} steps on the {want.grid} grid, not {h.steps} on the {h.grid}")
    if h.transform not in TRANSFORMS:
        raise _Bad(f"unknown transform {h.transform!r}")
    _int(h, "seed", 0, (1 << 64) - 1)
    gs = h.group_size
    if isinstance(gs, int) and gs > LIMITS["group_size"]:  # (a decoder would hold them all in one batch)
        raise _Bad(f"group_size {gs} is over the limit of {LIMITS['group_size']} chunks per group")
    gs = _int(h, "group_size", 1, LIMITS["group_size"])
    n = _int(h, "tokens", 1, LIMITS["tokens"])
    if n > h.original_bytes:
        raise _Bad(f"tokens {n} > original_bytes {h.original_bytes} (every token is at least one byte)")
    for name in ("ideal_bits", "denoiser_bits"):
        bits = getattr(h, name)
        if name == "denoiser_bits" and bits is None:
            continue  # (written as ideal_bits)
        if not isinstance(bits, numbers.Real) or isinstance(bits, bool) or not 0 <= _f32(bits) < math.inf:
            raise _Bad(f"{name} {bits!r} is not a finite float32 >= 0")
    if h.mixer not in MIXERS:
        raise _Bad(f"unknown mixer {h.mixer!r} (knows: {', '.join(m for m in MIXERS if m)})")
    if h.mixer is not None and h.format_version < 5:
        raise _Bad(f"format {h.format_version} has no mixer")
    chunks, groups = layout_counts(n, L, gs)
    if h.chunks is not None and h.chunks != chunks:
        raise _Bad(f"chunks {h.chunks!r} does not match the layout ({chunks})")
    return groups, chunks


def _check_tables(c: Container, groups: int, chunks: int) -> None:
    """Writer side: tables consistent with the header and the payloads."""
    h = c.header
    if len(c.group_sizes) != groups or len(c.payloads) != groups:
        raise _Bad(f"{len(c.group_sizes)} group sizes and {len(c.payloads)} payloads, the layout has {groups} groups")
    if list(c.group_sizes) != [len(p) for p in c.payloads]:
        raise _Bad("group_sizes do not match the payload lengths")
    n_tok = token_crc_count(h.method, FORMAT_VERSION, groups, chunks)
    if len(c.token_crcs) != n_tok:
        raise _Bad(f"{len(c.token_crcs)} token CRCs, the layout has {n_tok} (one per group)")
    if any(not isinstance(x, int) or not 0 <= x <= 0xFFFFFFFF for x in c.token_crcs):
        raise _Bad("token CRCs must be u32")
    if h.method == "store":
        data = c.payloads[0]
        if len(data) != h.original_bytes or zlib.crc32(data) != h.original_crc32:
            raise _Bad("a store payload must be the original data (original_bytes, original_crc32)")


def token_crc_count(method: str, version: int, groups: int, chunks: int) -> int:
    """How many token CRCs the table holds: one per group of an mdm file (format 2: one per chunk)."""
    if method != "mdm":
        return 0
    return chunks if version == 2 else groups


def _f32(x: float) -> float:
    """x rounded to float32 (inf when out of range, nan stays nan)."""
    try:
        return struct.unpack("<f", struct.pack("<f", float(x)))[0]
    except OverflowError:
        return math.inf


def leb128(n: int) -> bytes:
    """Minimal unsigned LEB128 of n >= 0 (the header's varints; the tests also write ones past 2^64,
    for the reader to refuse)."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
