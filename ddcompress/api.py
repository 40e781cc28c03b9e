"""Library API: bytes in, bytes out.

    >>> import ddcompress
    >>> blob = ddcompress.compress(b"hello world")
    >>> ddcompress.decompress(blob)
    b'hello world'
"""
from __future__ import annotations

import lzma
import math
import numbers
import os
import secrets
import zlib
from typing import Callable, Iterator

from .model import registry
from .model.checkpoint import LoadedModel
from .codec.container import Container, Header, info, parse_frames  # noqa: F401 (info: part of the API)
from .errors import DDCError, FormatError, IntegrityError, ModelError
from .codec.layout import MAX_GROUP_SIZE, Chunk, Layout, layout_counts
from .codec.plan import DEFAULT_LEVEL, LEVELS, default_batch_chunks, default_group_size, plan_for  # noqa: F401 (LEVELS: part of the API)
from .codec.tokenizer import VOCAB_SIZE, get_tokenizer

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


def _base_header(data: bytes, method: str) -> Header:
    return Header(method, len(data), zlib.crc32(data))


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


XZ_MEMLIMIT = 256 << 20  # xz's own memory (its dictionary): ddc writes preset 9e (64 MiB); a crafted frame asking more fails
XZ_PIECE = 1 << 20  # bytes of xz output held at once by `iter_decompress` (besides lzma's own dictionary)


def _unxz_pieces(payload: bytes, original_bytes: int, piece: int = XZ_PIECE) -> Iterator[bytes]:
    """xz payload -> its output in pieces of at most `piece` bytes, never more in all than the header
    promised (checked as it goes: a crafted frame could otherwise expand a few KB into gigabytes before
    the length check), ending exactly at original_bytes with the stream's end."""
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
    done, data = 0, payload
    try:
        while not d.eof:
            out = d.decompress(data, max_length=min(piece, original_bytes - done + 1))
            data = b""
            done += len(out)
            if done > original_bytes:
                break
            if out:
                yield out
            elif d.needs_input:  # the payload ended before the stream did
                break
    except lzma.LZMAError as err:
        raise IntegrityError(f"corrupt ddc file: {err}") from None
    if done != original_bytes or not d.eof or d.unused_data:
        raise IntegrityError("corrupt ddc file: xz payload does not match the recorded size")


def _unxz(payload: bytes, original_bytes: int) -> bytes:
    """xz payload -> bytes (all of it: `_unxz_pieces` streams it)."""
    return b"".join(_unxz_pieces(payload, original_bytes))


# -- arguments: every one checked before any work, with a DDCError that names it ------------------------


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _got(v) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _check_int(name: str, v, lo: int, hi: int | None = None, none_ok: bool = True) -> int | None:
    if v is None and none_ok:
        return None
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise DDCError(f"{name} must be {'None or ' if none_ok else ''}an integer {span}, got {_got(v)}")
    return int(v)


def _check_bytes(name: str, v) -> None:
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise DDCError(f"{name} must be bytes (or bytearray, memoryview), got {type(v).__name__}")


def _check_callable(name: str, v) -> None:
    if v is not None and not callable(v):
        raise DDCError(f"{name} must be None or a callable, got {_got(v)}")


def _check_timings(v) -> None:
    if v is not None and not isinstance(v, dict):
        raise DDCError(f"timings must be None or a dict, got {_got(v)}")


def _add_timings(timings: dict | None, coder) -> None:
    """Add a coder's wall seconds ("model": the denoiser, "coder": the entropy coder and the mixer) to timings."""
    if timings is not None:
        for k, v in coder.seconds.items():
            timings[k] = timings.get(k, 0.0) + v


def _check_model_arg(model) -> None:
    if model is not None and not isinstance(model, (str, os.PathLike, LoadedModel)):
        raise DDCError(f"model must be None, a model name, a checkpoint directory or a LoadedModel, got {_got(model)}")


def check_device(device, label: str | None = None) -> str:
    """The device as a string, or a DDCError naming it when torch cannot use it here (torch is
    imported only for a device other than "cpu"). label: how the message names it (the command line
    says `--device X`)."""
    if isinstance(device, str) and device == "cpu":
        return device
    if not isinstance(device, str):
        if type(device).__module__.split(".")[0] != "torch":
            raise DDCError(f"device must be a string such as 'cpu' or 'cuda', got {_got(device)}")
        device = str(device)
    import torch

    name = label or f"device {device!r}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        how = f"{label}: not" if label else f"{name} is not"
        raise DDCError(f"{how} a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "CUDA is not available in this torch build" if torch.version.cuda is None else "no CUDA device found"
            raise DDCError(f"{name}: {why}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DDCError(f"{name}: no such device ({torch.cuda.device_count()} CUDA devices)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DDCError(f"{name}: MPS is not available")
    elif dev.type != "cpu":
        raise DDCError(f"{name}: unsupported device type (use cpu or cuda)")
    return device


def check_compress_args(level=None, steps=None, model=None, device="cpu", seed=0, group_size=None, method="auto",
                        progress=None, on_start=None, batch_chunks=None) -> dict:
    """Every argument of `compress` but the data, checked (types and ranges: a DDCError naming the first
    bad one) before any work; returns them normalized (Python ints, the device as a string)."""
    if not isinstance(method, str) or method not in METHODS:
        raise DDCError(f"method must be one of {', '.join(METHODS)}, got {_got(method)}")
    level = _check_int("level", level, min(LEVELS), max(LEVELS))
    steps = _check_int("steps", steps, 1)
    seed = _check_int("seed", seed, 0, (1 << 64) - 1, none_ok=False)
    group_size = _check_int("group_size", group_size, 1, MAX_GROUP_SIZE)
    batch_chunks = _check_int("batch_chunks", batch_chunks, 1)
    _check_model_arg(model)
    _check_callable("progress", progress)
    _check_callable("on_start", on_start)
    device = check_device(device)
    plan_for(level, steps, 1 << 30)
    return dict(level=level, steps=steps, model=model, device=device, seed=seed, group_size=group_size, method=method,
                progress=progress, on_start=on_start, batch_chunks=batch_chunks)


# -- the size a model-coded frame can have at the least (no model needed) --------------------------------
# An rANS interval is at most 2^24 - V + 1 wide (every other symbol keeps at least 1), so each coded token
# multiplies the encoder's state (in [2^31, 2^63)) by at least 1 + (V - 1)(1/w - 2^-31): at least
# RANS_MIN_BITS bits a token, and a stream of k words holds at most (k - 1) * 32 bits of them (its final
# state's 64 bits less the 31 it starts with, 32 per word before it; each push of a word loses at most
# 2^-7 of the state: 32.0113 bits). The decoder checks a group's payload against this before any model
# work (a crafted header cannot make it decode 2^30 tokens from a few empty streams), and "auto" uses it to
# skip the model when even its best case cannot beat xz. Formats 2 and 3 (constriction's range coder,
# the same 24-bit quantization) hold about one word less; they are given 4 words of slack.
RANS_MIN_BITS = math.log2(1 + (VOCAB_SIZE - 1) * (1 / ((1 << 24) - VOCAB_SIZE + 1) - 2.0 ** -31))
TOKENS_PER_WORD = 32.02 / RANS_MIN_BITS  # (a little more than the bound allows: about 7456)


def max_coded_tokens(payload_bytes: int, format_version: int) -> int:
    """The most tokens a group's payload of this size can code (formats >= 4: ddc's rANS; 2, 3: constriction)."""
    words = payload_bytes // 4
    return max(0, int((words - 1 if format_version >= 4 else words + 3) * TOKENS_PER_WORD))


def _mdm_overhead(n_tokens: int, seq_len: int, group_size: int) -> int:
    """Bytes of any mdm frame of n tokens besides what its tokens cost: the framing at its smallest
    (one-byte varints) and each group's final rANS state (two words)."""
    _, groups = layout_counts(n_tokens, seq_len, group_size)
    framing = 4 + 1 + 1 + 1 + 1 + 4 + 1 + 8 + 4 + 5 + 1 + 1 + 1 + 1 + 1 + 1 + 4 + 4 + groups * (1 + 4 + 4)
    return framing + 8 * groups


def _min_mdm_bytes(n_tokens: int, seq_len: int, group_size: int) -> int:
    """A lower bound on any mdm frame of n tokens: the overhead and RANS_MIN_BITS a token."""
    return _mdm_overhead(n_tokens, seq_len, group_size) + int(n_tokens * RANS_MIN_BITS / 32) * 4


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
    mixer: str | None = "cm1",
    timings: dict | None = None,
) -> bytes:
    """Compress bytes with a masked diffusion model.

    mixer "cm1" (format 5's default) mixes the denoiser's probabilities with count models of the file
    itself, learned as it is coded (docs/FORMAT.md, "Context mixing"); None codes with the denoiser's
    alone (for comparisons: the file is still format 5).

    method "auto" sends binary-looking input straight to xz, and keeps the model's output only when it
    is smaller than xz's (or a stored copy); "mdm" always uses the model; "xz" / "store" skip it.
    group_size (chunks per rANS stream) is recorded in the file; batch_chunks (chunks per forward
    pass, whole groups) is not: it changes speed and memory, never the output. timings: a dict to which
    the wall seconds spent in the denoiser ("model") and in the entropy coder ("coder") are added ("auto"'s
    sample chunk included: its time is part of the call's).

    Every argument is checked first (a DDCError naming it), before any work. In "auto" mode xz runs
    first; the model runs on the whole input only when it can plausibly win: not when its best case
    (the coder's framing and least cost per token) already loses to xz, nor, for inputs of 4 chunks or
    more, when a sample chunk coded by the model (in the middle of the input) predicts a frame more
    than AUTO_MARGIN times xz's."""
    _check_bytes("data", data)
    if mixer not in (None, "cm1"):
        raise DDCError(f"mixer must be 'cm1' or None, got {mixer!r}")
    _check_timings(timings)
    args = check_compress_args(level, steps, model, device, seed, group_size, method, progress, on_start, batch_chunks)
    level, steps, device, seed, group_size, batch_chunks = (args[k] for k in ("level", "steps", "device", "seed",
                                                                           "group_size", "batch_chunks"))
    data = bytes(data)
    if method != "store" and not isinstance(model, LoadedModel):
        registry.locate(model)  # a missing model is an error even when the input ends up stored
    if method in ("xz", "store"):
        return _fallback(data, method)
    if not data:  # no tokens to code: an empty stored frame (16 bytes)
        return _fallback(data, "store")
    if method == "auto" and (len(data) < MIN_MODEL_BYTES or looks_binary(data)):
        return _fallback(data, "xz")
    alt = _fallback(data, "xz") if method == "auto" else None  # xz first: the model has to beat it
    from .codec.coder import Coder, encode_all  # torch: only where the model runs (stored/xz frames need none)
    from .numerics.exact import NUMERICS

    lm = registry.resolve(model)
    tok = get_tokenizer()
    L = lm.cfg.seq_len
    plan = plan_for(level, steps, L)
    group_size = group_size or default_group_size(device)
    transform = "crlf" if crlf_transform_applies(data) else None
    tokens = tok.encode(data.replace(b"\r\n", b"\n") if transform else data)
    groups = Layout(len(tokens), L, group_size)
    if alt is not None and _min_mdm_bytes(len(tokens), L, group_size) >= len(alt):
        return alt  # even the model's best case loses to xz
    coder = Coder(lm.exact(device), plan, seed, mixer=mixer)
    if alt is not None and _sample_says_xz(coder, tokens, L, group_size, len(alt)):
        return alt
    if on_start:
        on_start(len(tokens))
    results = encode_all(coder, tokens, groups, batch_chunks or default_batch_chunks(device), progress)
    _add_timings(timings, coder)
    header = Header(
        "mdm", len(data), zlib.crc32(data),
        numerics=NUMERICS,
        model_id=lm.id,
        tokenizer_id=tok.id[:8],
        seq_len=L,
        steps=plan.steps,
        grid=plan.grid,
        level=plan.level,
        transform=transform,
        seed=seed,
        group_size=group_size,
        tokens=int(len(tokens)),
        ideal_bits=sum(r.ideal_bits for r in results),
        mixer=coder.mixer,
        denoiser_bits=sum(r.ideal_bits if r.denoiser_bits is None else r.denoiser_bits for r in results),
    )
    blob = Container(header, [len(r.payload) for r in results], [c for r in results for c in r.token_crcs],
                     [r.payload for r in results]).to_bytes()
    if alt is not None and len(alt) < len(blob):  # never worse than xz (or a stored copy)
        return alt
    return blob


AUTO_MARGIN = 1.25  # "auto" skips the model when a sample predicts a frame this many times xz's or more
AUTO_SAMPLE_MIN_CHUNKS = 4  # below this many chunks the whole input is coded: a sample would cost too much of it


def _sample_says_xz(coder, tokens, L: int, group_size: int, xz_bytes: int) -> bool:
    """Code one full chunk from the middle of the tokens with the model (its own stream, its own
    progress-free walk) and predict the whole frame from its ideal bits: True when the prediction is
    at least AUTO_MARGIN times the xz frame. Costs one chunk of model work (1/n of the whole for n
    chunks; inputs under AUTO_SAMPLE_MIN_CHUNKS chunks are not sampled)."""
    n = len(tokens)
    full = n // L
    if full < AUTO_SAMPLE_MIN_CHUNKS:
        return False
    mid = full // 2
    res = coder.encode_groups(tokens, [[Chunk(mid, mid * L, L, 0)]])[0]
    predicted = _mdm_overhead(n, L, group_size) + res.ideal_bits / L * n / 8
    return predicted >= AUTO_MARGIN * xz_bytes


def _check_model(header: Header, model: str | LoadedModel | None) -> LoadedModel:
    want = header.model_id
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
    max_output: int | None = None,
    timings: dict | None = None,
    device_decode: bool = False,
) -> bytes:
    """The original bytes of a ddc file (or of concatenated ddc files). batch_chunks: chunks per
    forward pass at most (default by device), whatever group size the file was made with. max_output:
    refuse (a DDCError, before decoding anything) a file whose frames claim more bytes than this in all;
    the result is held in memory whole (`iter_decompress` streams it). timings: as for `compress`.
    device_decode (a GPU experiment; files without a mixer): the rANS streams decode on the device, one
    batched step per symbol, instead of on host threads."""
    return b"".join(iter_decompress(blob, model, device, progress, on_start, batch_chunks, max_output, timings,
                                    device_decode))


def iter_decompress(
    blob: bytes,
    model: str | LoadedModel | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    batch_chunks: int | None = None,
    max_output: int | None = None,
    timings: dict | None = None,
    device_decode: bool = False,
) -> Iterator[bytes]:
    """`decompress` in pieces: a stored frame's data, an xz frame's output XZ_PIECE bytes at a time (so
    a small xz frame that expands to gigabytes is never held whole), an mdm frame whole. Every argument
    and the framing of every frame are checked before the first piece; a frame's length and CRC32 are
    checked as its pieces go, and its last piece comes only after they match (a caller that writes
    pieces as they come must discard its output on an error, as with gzip)."""
    _check_bytes("blob", blob)
    _check_model_arg(model)
    device = check_device(device)
    _check_callable("progress", progress)
    _check_callable("on_start", on_start)
    batch_chunks = _check_int("batch_chunks", batch_chunks, 1)
    max_output = _check_int("max_output", max_output, 0)
    _check_timings(timings)
    frames = parse_frames(blob)  # concatenated frames decode to the concatenation, as gzip/xz/zstd do
    claimed = sum(c.header.original_bytes for c in frames)
    if max_output is not None and claimed > max_output:
        raise DDCError(f"the file decodes to {claimed} bytes, over max_output {max_output} (--max-output)")
    if on_start:
        on_start(sum(c.header.tokens or 0 for c in frames))
    for c in frames:
        yield from _decode_frame_pieces(c, model, device, progress, batch_chunks, timings, bool(device_decode))


def _decode_frame_pieces(c: Container, model, device, progress, batch_chunks=None, timings=None,
                         device_decode=False) -> Iterator[bytes]:
    h = c.header
    method = h.method
    if method == "store":
        pieces = iter([c.payloads[0]])
    elif method == "xz":
        pieces = _unxz_pieces(c.payloads[0], h.original_bytes)
    else:
        pieces = iter([_decode_mdm(c, model, device, progress, batch_chunks or default_batch_chunks(device), timings,
                                   device_decode)])
    size, crc, held = 0, 0, None
    for piece in pieces:  # one piece held back, so that the last comes out only once the frame checks out
        if held is not None:
            yield held
        size, crc, held = size + len(piece), zlib.crc32(piece, crc), piece
    if size != h.original_bytes or crc != h.original_crc32:
        raise IntegrityError("checksum mismatch: decoded data differs from the original")
    if held:
        yield held


def _decode_mdm(c: Container, model, device, progress, batch_chunks: int, timings=None, device_decode=False) -> bytes:
    from .codec.coder import Coder, decode_all

    h = c.header
    tok = get_tokenizer()
    if h.tokenizer_id != tok.id[:8]:
        raise ModelError(f"file uses tokenizer {h.tokenizer_id}, this ddc has {tok.id[:8]}")
    # the layout is built a group at a time, and before any model is loaded each group's payload must be
    # able to code the tokens the header gives it: a header's claim sizes nothing the data does not prove
    most = h.tokens * _max_token_bytes(tok) * (2 if h.transform == "crlf" else 1)
    if h.original_bytes > most:  # (else the whole decode would run before the length check)
        raise IntegrityError(f"corrupt ddc file: {h.tokens} tokens cannot make {h.original_bytes} bytes")
    groups = Layout(h.tokens, h.seq_len, h.group_size)
    for k, size in enumerate(c.group_sizes):
        if groups.coded_in(k) > max_coded_tokens(size, h.format_version):
            raise IntegrityError(f"corrupt ddc file: group {k}'s payload ({size} bytes) is too short for its "
                                 f"{groups.coded_in(k)} tokens")
    lm = _check_model(h, model)
    if h.seq_len != lm.cfg.seq_len:  # the encoder always chunks at the model's length
        raise FormatError(f"corrupt ddc file: chunk length {h.seq_len} is not model "
                          f"{lm.id}'s {lm.cfg.seq_len}")
    coder = Coder(lm.exact(device), h.plan, h.seed, h.format_version, h.mixer, device_decode)
    if h.format_version == 2:  # a token CRC per chunk (the table holds them: no more than the file proves)
        crcs = [c.token_crcs[groups.first_chunk(k) : groups.first_chunk(k) + groups.chunks_in(k)]
                for k in range(len(groups))]
    else:  # one per group
        crcs = [[crc] for crc in c.token_crcs]
    tokens = decode_all(coder, None, groups, list(c.payloads), crcs, batch_chunks, progress)  # grows as it decodes
    _add_timings(timings, coder)
    data = tok.decode(tokens)
    return data.replace(b"\n", b"\r\n") if h.transform == "crlf" else data


def _max_token_bytes(tok) -> int:
    """The longest token's bytes (GPT-2: 128): n tokens decode to at most n times this."""
    if not hasattr(tok, "_ddc_max_bytes"):
        ids = getattr(tok, "_id_bytes", None)  # (the tokenizer's table of each token's bytes)
        tok._ddc_max_bytes = max(map(len, ids)) if ids else max(len(tok.decode([i])) for i in range(VOCAB_SIZE))
    return tok._ddc_max_bytes


def random_seed() -> int:
    return secrets.randbits(63)
