"""Library API: bytes in, bytes out.

    >>> import ddcompress
    >>> blob = ddcompress.compress(b"hello world")
    >>> ddcompress.decompress(blob)
    b'hello world'
"""
from __future__ import annotations

import lzma
import secrets
import zlib
from typing import Callable

import numpy as np

from . import registry
from .checkpoint import LoadedModel
from .container import Container, info, parse_frames  # noqa: F401 (info: part of the API)
from .errors import DDCError, FormatError, IntegrityError, ModelError
from .layout import chunk_layout, group_layout
from .plan import DEFAULT_LEVEL, LEVELS, default_batch_chunks, default_group_size, steps_for  # noqa: F401 (LEVELS: part of the API)
from .tokenizer import get_tokenizer

METHODS = ("auto", "mdm", "xz", "store")


def looks_binary(data: bytes) -> bool:
    """True when the model would surely lose: many invalid UTF-8 bytes or control characters."""
    if not data:
        return False
    sample = data[: 1 << 20]
    text = sample.decode("utf-8", errors="surrogateescape")
    bad = sum(1 for ch in text if ("\udc80" <= ch <= "\udcff") or (ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b"))
    return bad > 0.05 * len(text)


def crlf_transform_applies(data: bytes) -> bool:
    """True when every LF is part of a CRLF: then CRLF -> LF is exactly invertible (LF -> CRLF).

    The models are trained on LF text, where a CR is nearly impossible; DOS/Windows text would pay tens
    of bits for every line end. Lone CRs are left alone, so the inverse restores them too."""
    n = data.count(b"\n")
    return n > 0 and n == data.count(b"\r\n")


def _base_header(data: bytes, method: str) -> dict:
    return {"method": method, "original_bytes": len(data), "original_crc32": zlib.crc32(data)}


def _fallback(data: bytes, method: str) -> bytes:
    """A stored frame, or for "xz" the smaller of the xz frame and the stored one (whole frames are
    compared: their headers differ in size too)."""
    stored = Container(_base_header(data, "store"), [len(data)], [], [data]).to_bytes()
    if method == "xz":
        packed = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
        framed = Container(_base_header(data, "xz"), [len(packed)], [], [packed]).to_bytes()
        if len(framed) < len(stored):
            return framed
    return stored


def _unxz(payload: bytes, original_bytes: int) -> bytes:
    """xz payload -> bytes, never producing more than the header promised (a crafted frame could
    otherwise expand a few KB into gigabytes before the length check)."""
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        data = d.decompress(payload, max_length=original_bytes + 1)
    except lzma.LZMAError as err:
        raise IntegrityError(f"corrupt ddc file: {err}") from None
    if len(data) > original_bytes or not d.eof or d.unused_data:
        raise IntegrityError("corrupt ddc file: xz payload does not match the recorded size")
    return data


# Below this size the model cannot pay for its framing (an mdm frame carries ~40 bytes more than a
# stored one), so "auto" does not run it.
MIN_MODEL_BYTES = 48


def compress(
    data: bytes,
    level: int | None = None,
    steps: int | None = None,
    model: str | LoadedModel | None = None,
    device: str = "cpu",
    seed: int = 0,
    group_size: int | None = None,
    method: str = "auto",
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    batch_chunks: int | None = None,
) -> bytes:
    """Compress bytes with a masked diffusion model.

    method "auto" sends binary-looking input straight to xz, and keeps the model's output only when it
    is smaller than xz's (or a stored copy); "mdm" always uses the model; "xz" / "store" skip it.
    group_size (chunks per rANS stream) is recorded in the file; batch_chunks (chunks per forward
    pass, whole groups) is not: it changes speed and memory, never the output."""
    if method not in METHODS:
        raise DDCError(f"unknown method {method!r}")
    steps_for(level, steps, 1 << 30)  # argument errors first, whatever the input
    if method != "store" and not isinstance(model, LoadedModel):
        registry.locate(model)  # a missing model is an error even when the input ends up stored
    if method in ("xz", "store"):
        return _fallback(data, method)
    if not data:  # no tokens to code: an empty stored frame (16 bytes)
        return _fallback(data, "store")
    if method == "auto" and (len(data) < MIN_MODEL_BYTES or looks_binary(data)):
        return _fallback(data, "xz")
    from .codec import Coder, encode_all  # torch: only where the model runs (stored/xz frames need none)
    from .exact import NUMERICS

    lm = registry.resolve(model)
    tok = get_tokenizer()
    L = lm.cfg.seq_len
    n_steps, grid = steps_for(level, steps, L)
    group_size = group_size or default_group_size(device)
    transform = "crlf" if crlf_transform_applies(data) else None
    tokens = tok.encode(data.replace(b"\r\n", b"\n") if transform else data)
    chunks = chunk_layout(len(tokens), L)
    groups = group_layout(chunks, group_size)
    if on_start:
        on_start(len(tokens))
    coder = Coder(lm, n_steps, grid, seed, device)
    results = encode_all(coder, tokens, groups, batch_chunks or default_batch_chunks(device), progress)
    header = _base_header(data, "mdm") | {
        "numerics": NUMERICS,
        "model_id": lm.id,
        "tokenizer_id": tok.id[:8],
        "seq_len": L,
        "steps": n_steps,
        "grid": grid,
        "level": None if steps is not None else (level or DEFAULT_LEVEL),
        "transform": transform,
        "seed": seed,
        "group_size": group_size,
        "tokens": int(len(tokens)),
        "ideal_bits": sum(r.ideal_bits for r in results),
    }
    blob = Container(header, [len(r.payload) for r in results], [c for r in results for c in r.token_crcs],
                     [r.payload for r in results]).to_bytes()
    if method == "auto":  # never worse than xz (or a stored copy): costs one xz pass, negligible here
        alt = _fallback(data, "xz")
        if len(alt) < len(blob):
            return alt
    return blob


def _check_model(header: dict, model: str | LoadedModel | None) -> LoadedModel:
    want = header["model_id"]
    if model is None:
        lm = registry.find_by_id(want)
        if lm is None:
            raise ModelError(f"file needs model {want}, which is not installed (installed: "
                             f"{', '.join(registry.available_models()) or 'none'}); pass --model PATH")
        return lm
    lm = registry.resolve(model)
    if lm.id != want:
        name = lm.path.name if lm.path else "the given model"
        raise ModelError(f"wrong model: file was made with model {want}, {name} is {lm.id}")
    return lm


def decompress(
    blob: bytes,
    model: str | LoadedModel | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    batch_chunks: int | None = None,
) -> bytes:
    """The original bytes of a ddc file (or of concatenated ddc files). batch_chunks: chunks per
    forward pass at most (default by device), whatever group size the file was made with."""
    frames = parse_frames(blob)  # concatenated frames decode to the concatenation, as gzip/xz/zstd do
    if on_start:
        on_start(sum(c.header.get("tokens", 0) for c in frames))
    return b"".join(_decode_frame(c, model, device, progress, batch_chunks) for c in frames)


def _decode_frame(c: Container, model, device, progress, batch_chunks=None) -> bytes:
    h = c.header
    method = h["method"]
    if method == "store":
        data = c.payloads[0]
    elif method == "xz":
        data = _unxz(c.payloads[0], h["original_bytes"])
    else:
        data = _decode_mdm(c, model, device, progress, batch_chunks or default_batch_chunks(device))
    if len(data) != h["original_bytes"] or zlib.crc32(data) != h["original_crc32"]:
        raise IntegrityError("checksum mismatch: decoded data differs from the original")
    return data


def _decode_mdm(c: Container, model, device, progress, batch_chunks: int) -> bytes:
    from .codec import Coder, decode_all

    h = c.header
    tok = get_tokenizer()
    if h["tokenizer_id"] != tok.id[:8]:
        raise ModelError(f"file uses tokenizer {h['tokenizer_id']}, this ddc has {tok.id[:8]}")
    lm = _check_model(h, model)
    if h["seq_len"] != lm.cfg.seq_len:  # the encoder always chunks at the model's length
        raise FormatError(f"corrupt ddc file: chunk length {h['seq_len']} is not model "
                          f"{lm.id}'s {lm.cfg.seq_len}")
    groups = group_layout(chunk_layout(h["tokens"], h["seq_len"]), h["group_size"])
    tokens = np.zeros(h["tokens"], dtype=np.int64)
    coder = Coder(lm, h["steps"], h["grid"], h["seed"], device, h["format_version"])
    if h["format_version"] == 2:  # a token CRC per chunk
        ends = np.cumsum([len(g) for g in groups])
        crcs = [c.token_crcs[e - len(g) : e] for g, e in zip(groups, ends)]
    else:  # one per group
        crcs = [[crc] for crc in c.token_crcs]
    decode_all(coder, tokens, groups, list(c.payloads), crcs, batch_chunks, progress)
    data = tok.decode(tokens)
    return data.replace(b"\n", b"\r\n") if h["transform"] == "crlf" else data


def random_seed() -> int:
    return secrets.randbits(63)
