"""The .ddc file format (described in docs/FORMAT.md).

    magic (8) | u16 format version | u32 header length | header (raw-deflated JSON) | u32 CRC32(header)
    | u32 group count | u32 payload bytes per group | u32 CRC32 per group payload
    | u32 chunk count | u32 CRC32 per chunk (of its tokens)
    | u32 CRC32(table) | group payloads, back to back

All integers little-endian. The header JSON is self-describing: model id, tokenizer id, chunk length,
steps, grid, seed, group size, sizes, checksums, and the numeric profile of the encoder.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

from .errors import FormatError, IntegrityError

MAGIC = b"\x89DDC\r\n\x1a\n"  # PNG-style: catches text-mode and 7-bit transfers
FORMAT_VERSION = 1
_MAX_HEADER = 1 << 24


@dataclass
class Container:
    header: dict
    group_sizes: list[int] = field(default_factory=list)  # payload bytes per group
    chunk_crcs: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        head = deflate(json.dumps(self.header, sort_keys=True, separators=(",", ":")).encode())
        n = len(self.group_sizes)
        pcrcs = [zlib.crc32(p) for p in self.payloads] + [0] * (n - len(self.payloads))
        table = struct.pack(f"<I{2 * n}I", n, *self.group_sizes, *pcrcs)
        table += struct.pack(f"<I{len(self.chunk_crcs)}I", len(self.chunk_crcs), *self.chunk_crcs)
        parts = [MAGIC, struct.pack("<HI", FORMAT_VERSION, len(head)), head, struct.pack("<I", zlib.crc32(head)),
                 table, struct.pack("<I", zlib.crc32(table))]
        return b"".join(parts + list(self.payloads))


def is_ddc(blob: bytes) -> bool:
    return blob[: len(MAGIC)] == MAGIC


def deflate(raw: bytes) -> bytes:
    """Raw deflate (no zlib wrapper: the CRC32 after the header covers it): the JSON header shrinks by
    about 40%, which matters for small files."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(raw) + c.flush()


def inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15)
    out = d.decompress(data, _MAX_HEADER)
    if d.unconsumed_tail or not d.eof or d.unused_data:
        raise FormatError("corrupt ddc file: bad header encoding")
    return out


def parse(blob: bytes, header_only: bool = False) -> Container:
    """Parse and check the framing; raise FormatError with a one-line reason."""
    if not is_ddc(blob):
        raise FormatError("not a ddc file (bad magic)")
    pos = len(MAGIC)
    if len(blob) < pos + 6:
        raise FormatError("truncated ddc file (header)")
    version, hlen = struct.unpack_from("<HI", blob, pos)
    pos += 6
    if version > FORMAT_VERSION:
        raise FormatError(f"ddc format version {version} is newer than this ddc supports ({FORMAT_VERSION}); upgrade ddc")
    if version < 1:
        raise FormatError(f"corrupt ddc file: unknown format version {version}")
    if hlen > _MAX_HEADER or len(blob) < pos + hlen + 4:
        raise FormatError("truncated or corrupt ddc file (header)")
    head = blob[pos : pos + hlen]
    pos += hlen
    (crc,) = struct.unpack_from("<I", blob, pos)
    pos += 4
    if zlib.crc32(head) != crc:
        raise FormatError("corrupt ddc file: header checksum mismatch")
    try:
        header = json.loads(inflate(head))
    except (ValueError, zlib.error):  # includes UnicodeDecodeError
        header = None
    if not isinstance(header, dict):
        raise FormatError("corrupt ddc file: header is not a JSON object")
    if header_only:
        return Container(header)
    table_start = pos

    def u32s(count_pos: int, per_item: int = 1) -> tuple[list[int], int]:
        if len(blob) < count_pos + 4:
            raise FormatError("truncated ddc file (chunk table)")
        (n,) = struct.unpack_from("<I", blob, count_pos)
        end = count_pos + 4 + 4 * n * per_item
        if len(blob) < end:
            raise FormatError("truncated ddc file (chunk table)")
        return list(struct.unpack_from(f"<{n * per_item}I", blob, count_pos + 4)), end

    group_table, pos = u32s(pos, 2)
    group_sizes, payload_crcs = group_table[: len(group_table) // 2], group_table[len(group_table) // 2 :]
    chunk_crcs, pos = u32s(pos)
    if len(blob) < pos + 4:
        raise FormatError("truncated ddc file (chunk table)")
    (tcrc,) = struct.unpack_from("<I", blob, pos)
    if zlib.crc32(blob[table_start:pos]) != tcrc:
        raise FormatError("corrupt ddc file: chunk table checksum mismatch")
    pos += 4
    total = pos + sum(group_sizes)
    if len(blob) < total:
        raise FormatError(f"truncated ddc file: {len(blob)} bytes, expected {total}")
    if len(blob) > total:
        raise FormatError(f"corrupt ddc file: {len(blob) - total} unexpected trailing bytes")
    payloads = []
    for i, (size, crc) in enumerate(zip(group_sizes, payload_crcs)):
        payloads.append(blob[pos : pos + size])
        pos += size
        if zlib.crc32(payloads[-1]) != crc:
            raise IntegrityError(f"corrupt ddc file: payload checksum mismatch in group {i}")
    return Container(header, group_sizes, chunk_crcs, payloads)
