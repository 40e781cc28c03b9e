"""The fuzzing library shared by tests/test_fuzz.py and benchmarks/fuzz.py (and the attack files of
tests/test_limits.py and benchmarks/decoder_limits.py): an independent field-level codec of the
container's headers, mutations of its fields, the checks a hostile file must pass (a right result or a
one-line DDCError within a time and memory bound), and random round trips. Everything here is plain
functions of a `random.Random`; tests/test_fuzz.py drives them with hypothesis, benchmarks/fuzz.py at
scale. Import it with tests/ on sys.path: `from support import fuzz`."""
from __future__ import annotations

import copy
import json
import lzma
import math
import random
import signal
import struct
import time
import traceback
import tracemalloc
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

from ddcompress.errors import DDCError
from samples import leb128, read_leb128


MAGIC = b"\x89DDC"

# -- an independent field-level codec of format 2 (docs/FORMAT.md) ----------------------------------------

COMMON_FIELDS = (("method", "u8"), ("original_bytes", "varint"), ("original_crc32", "u32"))
MDM_FIELDS = (("numerics", "u8"), ("model_id", "bytes"), ("tokenizer_id", "bytes"), ("seq_len", "varint"),
              ("steps", "varint"), ("grid", "u8"), ("level", "u8"), ("transform", "u8"), ("seed", "varint"),
              ("group_size", "varint"), ("tokens", "varint"), ("ideal_bits", "f32"))
V5_FIELDS = (("mixer", "u8"), ("denoiser_bits", "f32"))  # format 5 adds them after ideal_bits
STORE, XZ, MDM = 0, 1, 2


@dataclass
class Field:
    name: str
    kind: str  # u8, u32, varint, f32, bytes
    value: object  # int, float or bytes
    raw: bytes | None = None  # written instead of the encoding of value (overlong varints, odd floats)

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.kind == "u8":
            return bytes([self.value])
        if self.kind == "u32":
            return struct.pack("<I", self.value & 0xFFFFFFFF)
        if self.kind == "varint":
            return leb128(self.value)
        if self.kind == "f32":
            return struct.pack("<f", self.value)
        return bytes(self.value)


@dataclass
class Frame:
    fields: list[Field]  # header, then table: payload_size[i], payload_crc[i], token_crc[j]
    payloads: list[bytes]
    version: int = 2
    length: int | bytes | None = None  # N as an int or raw varint bytes; None: the true length
    crc_xor: int = 0  # XORed into the header CRC; 0 leaves it valid

    def get(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def to_bytes(self) -> bytes:
        body = b"".join(f.encode() for f in self.fields)
        n = leb128(len(body)) if self.length is None else self.length
        head = bytes([self.version]) + (leb128(n) if isinstance(n, int) else n) + body
        return MAGIC + head + struct.pack("<I", zlib.crc32(head) ^ self.crc_xor) + b"".join(self.payloads)


def layout(tokens: int, seq_len: int, group_size: int) -> tuple[int, int]:
    """(chunks, groups), from FORMAT.md's *Chunks and groups*: full chunks in groups, the tail alone."""
    full, tail = (tokens // seq_len, int(tokens % seq_len > 0)) if tokens >= seq_len else (1, 0)
    return full + tail, -(-full // group_size) + tail


def read_frames(blob: bytes) -> list[Frame]:
    """Split a valid file into frames and fields (asserts validity: only for the files we make)."""
    frames, pos = [], 0
    while pos < len(blob):
        assert blob[pos : pos + 4] == MAGIC
        version = blob[pos + 4]
        n, at = read_leb128(blob, pos + 5)
        end = at + n
        assert struct.unpack_from("<I", blob, end)[0] == zlib.crc32(blob[pos + 4 : end])
        fields = []

        def take(name, kind, size=None):
            nonlocal at
            if kind == "varint":
                value, nxt = read_leb128(blob, at)
            else:
                size = {"u8": 1, "u32": 4, "f32": 4}.get(kind, size)
                raw = blob[at : at + size]
                value = {"u8": lambda: raw[0], "u32": lambda: struct.unpack("<I", raw)[0],
                         "f32": lambda: struct.unpack("<f", raw)[0]}.get(kind, lambda: raw)()
                nxt = at + size
            fields.append(Field(name, kind, value))
            at = nxt
            return value

        for name, kind in COMMON_FIELDS:
            take(name, kind)
        method, sizes = fields[0].value, [fields[1].value]
        if method == MDM:
            for name, kind in MDM_FIELDS:
                take(name, kind, {"model_id": 8, "tokenizer_id": 4}.get(name))
            for name, kind in V5_FIELDS if version >= 5 else ():
                take(name, kind)
            v = {f.name: f.value for f in fields}
            chunks, groups = layout(v["tokens"], v["seq_len"], v["group_size"])
        else:
            chunks, groups = 0, int(method == XZ)
        if method != STORE:
            sizes = []
            for i in range(groups):
                sizes.append(take(f"payload_size[{i}]", "varint"))
                take(f"payload_crc[{i}]", "u32")
        for j in range(groups if method == MDM and version >= 3 else chunks):  # format 2: one per chunk
            take(f"token_crc[{j}]", "u32")
        assert at == end, (at, end)
        pos = end + 4
        payloads = []
        for s in sizes:
            payloads.append(blob[pos : pos + s])
            pos += s
        frames.append(Frame(fields, payloads, version))
    return frames


def write_frames(frames: list[Frame]) -> bytes:
    return b"".join(f.to_bytes() for f in frames)


EMPTY_STREAM = bytes.fromhex("0000008000000000")  # a format-4 rANS stream of no symbols (x = L)


def craft_mdm(model_id: str, tokenizer_id: str, seq_len: int, group_size: int, tokens: int, steps: int = 2,
              payload=lambda k: EMPTY_STREAM, version: int = 4, table_groups: int | None = None) -> bytes:
    """An mdm frame made from scratch whose every header check passes (valid CRCs, consistent fields, the
    table the layout implies; `table_groups`: only that many groups' entries) but whose payloads
    (`payload(k)` for group k) are whatever the attack wants: the chunk-count and group-size attacks of
    issue 22."""
    chunks, groups = layout(tokens, seq_len, group_size)
    if table_groups is not None:
        chunks = groups = table_groups
    fields = [Field("method", "u8", MDM), Field("original_bytes", "varint", tokens), Field("original_crc32", "u32", 0),
              Field("numerics", "u8", 1), Field("model_id", "bytes", bytes.fromhex(model_id)),
              Field("tokenizer_id", "bytes", bytes.fromhex(tokenizer_id)), Field("seq_len", "varint", seq_len),
              Field("steps", "varint", steps), Field("grid", "u8", 0), Field("level", "u8", 0), Field("transform", "u8", 0),
              Field("seed", "varint", 0), Field("group_size", "varint", group_size), Field("tokens", "varint", tokens),
              Field("ideal_bits", "f32", 0.0)]
    payloads = [payload(k) for k in range(groups)]
    for k, p in enumerate(payloads):
        fields += [Field(f"payload_size[{k}]", "varint", len(p)), Field(f"payload_crc[{k}]", "u32", zlib.crc32(p))]
    fields += [Field(f"token_crc[{j}]", "u32", 0) for j in range(chunks if version == 2 else groups)]
    return Frame(fields, payloads, version).to_bytes()


def random_stream(rng: random.Random, words: int) -> bytes:
    """`words` random u32 words whose first state is a valid one ([2^31, 2^63)): a format-4 decoder runs
    on them until the tokens' CRC (or a word that runs out) stops it."""
    body = rng.getrandbits(32 * words).to_bytes(4 * words, "little")
    return body[:4] + (0x40000000 | rng.getrandbits(30)).to_bytes(4, "little") + body[8:]


# -- the valid files the mutations start from -------------------------------------------------------------


def words(n: int, seed: int = 0) -> bytes:
    """Text of exactly n GPT-2 tokens (as tests/samples.py)."""
    rng = random.Random(seed)
    vocab = [" the", " of", " and", " to", " in", " is", " it", " that", " was", " for", " on", " with"]
    return "".join(rng.choice(vocab) for _ in range(n)).encode()


def make_bases(lm) -> dict[str, tuple[bytes, bytes]]:
    """name -> (valid file, its original data). Low levels keep the decodes fast."""
    import ddcompress

    def mdm(data, **kw):
        return ddcompress.compress(data, model=lm, method="mdm", **kw)

    text = b"Fuzzing a header, one field at a time.\n" * 30
    one = words(40, seed=1)  # < L = 64 tokens: one short chunk, one group
    multi = words(3 * 64 + 5, seed=2)  # 3 full chunks in groups of 2, and a tail chunk: 3 groups, 4 chunks
    crlf = b"line one\r\nline two\r\n" * 6
    bases = {
        "store": (ddcompress.compress(text[:100], method="store"), text[:100]),
        "store_empty": (ddcompress.compress(b"", method="store"), b""),
        "xz": (ddcompress.compress(text, method="xz"), text),
        "mdm_one": (mdm(one, level=2, seed=7), one),
        "mdm_multi": (mdm(multi, level=1, group_size=2, seed=2**63 + 5), multi),
        "mdm_crlf": (mdm(crlf, steps=3, seed=1), crlf),
    }
    bases["concat"] = (bases["mdm_one"][0] + bases["xz"][0] + bases["store"][0], one + text + text[:100])
    for name, (blob, data) in bases.items():  # the independent codec reads and rewrites every one exactly
        assert write_frames(read_frames(blob)) == blob, name
    assert read_frames(bases["mdm_multi"][0])[0].get("token_crc[2]") is not None  # one per group
    return bases


# -- mutations ----------------------------------------------------------------------------------------------
# A mutation is a JSON-able list, so a failure prints (and the benchmark records) a reproducer:
#   ["set", frame, field, value]     field := value (int / float); the header CRC stays valid
#   ["raw", frame, field, hex]       field written as these bytes (overlong varint, odd float, ...)
#   ["drop", frame, field] / ["dup", frame, field]        a field removed / written twice
#   ["length", frame, int-or-hex]    N (the header length) replaced
#   ["crc", frame, xor] / ["version", frame, v]
#   ["flip", frame, group, offset, xor, fix]   payload byte flipped; fix: its CRC entry recomputed
#   ["resize", frame, group, delta, fix]       payload grown (zeros) / cut; fix: size and CRC entry too
#   ["bomb", frame, size]            payload 0 replaced by an xz stream of `size` zero bytes (size, CRC fixed)
#   ["consistent", frame, field, v]  a size claim := v, with the fields it is cross-checked with made to agree
#   ["cut", nbytes] / ["append", hex]          the whole file cut to a length / bytes appended

VARINTS = (0, 1, 2, 3, 7, 63, 64, 65, 127, 128, 255, 4096, 65535, 2**20, 2**20 + 1, 2**31 - 1, 2**31, 2**32 - 1,
           2**32, 2**40, 2**40 + 1, 10**12, 2**48 - 1, 2**48, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1,
           2**64, 2**70, 2**77 - 1)
RAW_VARINTS = ("80" * 10 + "01", "ff" * 10 + "7f", "80" * 40 + "00", "8000", "8100", "ff00", "ffffffffffffffffff01",
               "ffffffffffffffffff7f", "80808080808080808080", "80", "ff")
U8S = (0, 1, 2, 3, 4, 9, 10, 13, 127, 128, 254, 255)
U32S = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
F32S = (0.0, -0.0, 1.0, -1.0, 1e-45, 3.4e38, math.inf, -math.inf, math.nan)
RAW_F32S = ("ffffffff", "0000807f", "000080ff", "0100807f", "00000080")
# changes the decoder may not notice (it uses steps/grid, not level; ideal_bits is informational; a seed,
# steps, grid, seq_len, group_size or transform can leave the coded stream's meaning unchanged for a short
# file; a payload's last word has don't-care bits, and an extra word is never read): such a mutation may
# decode, but only to the right data.
MAY_PASS_FIELDS = {"level", "ideal_bits", "denoiser_bits", "steps", "grid", "seed", "seq_len", "group_size", "transform"}


def random_value(rng: random.Random, f: Field) -> object:
    """An extreme, nearby or random value for a field of this kind."""
    if f.kind == "u8":
        return rng.choice(U8S + (f.value ^ 1, rng.randrange(256)))
    if f.kind == "u32":
        return rng.choice(U32S + (f.value ^ 1, f.value ^ 0x80000000, rng.getrandbits(32)))
    if f.kind == "f32":
        return rng.choice(F32S + (-f.value, f.value * 2 ** 64))
    if f.kind == "bytes":
        return bytes(len(f.value)).hex() if rng.random() < 0.3 else rng.getrandbits(8 * len(f.value)).to_bytes(len(f.value), "little").hex()
    v = f.value
    near = (v + 1, max(v - 1, 0), v * 2, v // 2, v * 64 + 1, rng.getrandbits(rng.choice((8, 16, 32, 48, 64))))
    return rng.choice(VARINTS + near)


def random_raw(rng: random.Random, f: Field) -> str:
    if f.kind == "varint":
        return rng.choice(RAW_VARINTS)
    if f.kind == "f32":
        return rng.choice(RAW_F32S)
    return ""  # a fixed-size field written empty: everything after it shifts


def random_mutation(rng: random.Random, frames: list[Frame]) -> list:
    i = rng.randrange(len(frames))
    fr = frames[i]
    f = rng.choice(fr.fields)
    op = rng.choices(["set", "raw", "drop", "dup", "length", "crc", "version", "flip", "resize", "bomb", "cut",
                      "append", "consistent"], weights=[40, 8, 3, 3, 4, 2, 3, 10, 4, 1, 3, 2, 8])[0]
    g = rng.randrange(len(fr.payloads))
    if op == "set":
        value = random_value(rng, f)
        return ["raw" if f.kind == "bytes" else "set", i, f.name, value]
    if op == "raw":
        return ["raw", i, f.name, random_raw(rng, f)]
    if op in ("drop", "dup"):
        return [op, i, f.name]
    if op == "length":
        n = len(b"".join(x.encode() for x in fr.fields))
        return ["length", i, rng.choice((0, 1, n - 1, n + 1, n + 4, 2**32, 2**63, rng.randrange(4 * n)))]
    if op == "crc":
        return ["crc", i, 1 << rng.randrange(32)]
    if op == "version":
        return ["version", i, rng.choice((0, 1, 2, 3, 5, 13, 127, 255))]
    if op == "flip":
        size = len(fr.payloads[g])
        return ["flip", i, g, rng.randrange(max(size, 1)), 1 << rng.randrange(8), rng.random() < 0.8]
    if op == "resize":
        return ["resize", i, g, rng.choice((-4, -1, 1, 3, 4, 8)), rng.random() < 0.8]
    if op == "bomb":
        return ["bomb", i, rng.choice((1 << 20, 1 << 24))]
    if op == "cut":
        return ["cut", rng.randrange(len(write_frames(frames)))]
    if op == "append":
        return ["append", rng.choice(("00", "89", "894444", "89444443", "8944444302", "8944444302060000000000"))]
    # "consistent": a claim made to agree with the fields the reader cross-checks, so that a later check
    # (the table size, the model) has to catch it
    big = rng.choice((65, 100, 1000, 2**20, 2**32, 10**12, 2**40))
    pick = rng.choice(("tokens", "seq_len", "group_size", "original_bytes"))
    return ["consistent", i, pick, big]


def consistent(frame: Frame, name: str, value: int) -> None:
    """Set a size claim and adjust the fields it is cross-checked with (tokens <= original_bytes; a
    chunk of the claimed tokens fits seq_len), leaving the table as it is."""
    def put(n, v):
        if frame.get(n) is not None:
            frame.get(n).value, frame.get(n).raw = v, None

    def cur(n):  # the field's value (0 where an earlier mutation dropped it)
        return frame.get(n).value if frame.get(n) is not None else 0

    if frame.get("tokens") is None:  # store / xz: only original_bytes
        put("original_bytes", value)
        return
    put(name, value)
    if name == "tokens":
        put("original_bytes", max(value, cur("original_bytes")))
        put("seq_len", max(min(value, 2**20), cur("seq_len")))
    if name == "seq_len":
        put("tokens", min(value, 2**40))
        put("original_bytes", max(min(value, 2**40), cur("original_bytes")))


def apply(frames: list[Frame], mutations: list[list]) -> bytes:
    """The file after the mutations (each header CRC recomputed unless a "crc" mutation says otherwise)."""
    frames = copy.deepcopy(frames)
    tail: list[list] = []
    for m in mutations:
        op = m[0]
        if op in ("cut", "append"):
            tail.append(m)
            continue
        fr = frames[m[1]]
        if op in ("set", "raw", "drop", "dup"):
            f = fr.get(m[2])
            if f is None:
                continue
            if op == "set":
                f.value, f.raw = m[3], None
            elif op == "raw":
                f.raw = bytes.fromhex(m[3])
            elif op == "drop":
                fr.fields.remove(f)
            else:
                fr.fields.insert(fr.fields.index(f), copy.copy(f))
        elif op == "length":
            fr.length = m[2] if isinstance(m[2], int) else bytes.fromhex(m[2])
        elif op == "crc":
            fr.crc_xor ^= m[2]
        elif op == "version":
            fr.version = m[2]
        elif op == "consistent":
            consistent(fr, m[2], m[3])
        elif op in ("flip", "resize", "bomb"):
            g = 0 if op == "bomb" else m[2]
            p = bytearray(fr.payloads[g])
            if op == "flip" and p:
                p[m[3] % len(p)] ^= m[4]
            elif op == "resize":
                p = p + bytes(m[3]) if m[3] > 0 else p[: m[3]]
            elif op == "bomb":
                p = bytearray(lzma.compress(bytes(m[2]), preset=9))
            fr.payloads[g] = bytes(p)
            fix = op == "bomb" or m[-1]
            size, crc = fr.get(f"payload_size[{g}]"), fr.get(f"payload_crc[{g}]")
            if fix and crc is not None:  # store has no CRC entry of its own (original_crc32 is the data's)
                crc.value, crc.raw = zlib.crc32(p), None
                if op != "flip" and size is not None:
                    size.value, size.raw = len(p), None
    blob = write_frames(frames)
    for m in tail:
        blob = blob[: m[1]] if m[0] == "cut" else blob + bytes.fromhex(m[1])
    return blob


def _rewritten_later(m: list, later: list[list]) -> bool:
    """Whether a later flip/resize with its table entries fixed recomputes the field that `m` set
    (a resize rewrites its group's size and CRC, a flip its CRC): then `m` leaves no trace."""
    for n in later:
        if n[0] in ("flip", "resize") and n[-1] and n[1] == m[1]:
            fixed = {f"payload_crc[{n[2]}]"} | ({f"payload_size[{n[2]}]"} if n[0] == "resize" else set())
            if m[2] in fixed:
                return True
    return False


def must_fail(frames: list[Frame], mutations: list[list]) -> bool:
    """True when some mutation changes what the decoder must check exactly (sizes, checksums, framing,
    ids, the stored data); False when every one may be harmless (see MAY_PASS_FIELDS)."""
    for i, m in enumerate(mutations):
        op = m[0]
        if op in ("set", "raw") and (m[2] in MAY_PASS_FIELDS or frames[m[1]].get(m[2]) is None):
            continue
        if op in ("set", "raw") and _rewritten_later(m, mutations[i + 1 :]):
            continue
        if op == "consistent" and m[2] == "group_size":
            continue  # nothing else to agree with: a plain set
        method = frames[m[1]].fields[0].value if op not in ("cut", "append") else None
        if op == "flip" and not frames[m[1]].payloads[m[2]]:
            continue  # an empty payload has no byte to flip
        if op in ("flip", "resize") and method in (MDM, XZ) and m[-1]:
            continue  # with its CRC entry fixed: don't-care bits of the final word, words the decoder never
            # reads; xz stream padding (zeros) or bits that lzma does not check
        if op == "bomb" and method != XZ:
            continue
        if op == "version" and m[2] in (2, 3) and method != MDM:
            continue  # formats 2 and 3 store and xz frames exactly like format 4 (their mdm frames differ)
        return True
    return False


# -- running one hostile case --------------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the time limit (a BaseException, so no `except Exception` in the library hides it)."""


@contextmanager
def time_limit(cpu_s: float):
    """Raise Hang after cpu_s seconds of this process's CPU time (so that a loaded machine does not
    fail a case), or after 10 times as long on the clock."""
    def fire(signum, frame):
        raise Hang(f"still running after {cpu_s} CPU s" if signum == signal.SIGPROF else f"still running after {10 * cpu_s} s")

    old = {sig: signal.signal(sig, fire) for sig in (signal.SIGPROF, signal.SIGALRM)}
    signal.setitimer(signal.ITIMER_PROF, cpu_s)
    signal.setitimer(signal.ITIMER_REAL, 10 * cpu_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1]) / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's resident set (Linux >= 4.0); False where
    that is not possible (then peak_rss_growth_mb is None)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def guarded(fn, *args, limit_s: float, **kw) -> tuple[object, BaseException | None, float, int, float | None]:
    """fn(*args, **kw) under a time limit: (result, exception, CPU seconds, tracemalloc peak bytes,
    growth of the resident set's peak in MiB). tracemalloc sees Python and numpy allocations; the resident
    set also torch's. The exception comes without its traceback (which would keep the decoder's
    arrays alive); one that is not a DDCError keeps its text in `.traceback_text`."""
    rss = reset_peak_rss() and _status_mb("VmRSS:")
    tracemalloc.start()
    t0 = time.process_time()
    result = err = None
    try:
        with time_limit(limit_s):
            result = fn(*args, **kw)
    except BaseException as e:  # noqa: BLE001 (judged by the caller)
        if not isinstance(e, DDCError):
            e.traceback_text = "".join(traceback.format_exception(e))
        err, x = e, e
        while x is not None:
            x.__traceback__ = None
            x = x.__cause__ or x.__context__
    secs = time.process_time() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, err, secs, peak, (_status_mb("VmHWM:") - rss if rss else None)


def judge_error(err: BaseException, what: str) -> str:
    if isinstance(err, Hang):
        raise AssertionError(f"{what}: hang ({err})")
    if not isinstance(err, DDCError):
        where = getattr(err, "traceback_text", "").strip().splitlines()[-3:-1]
        raise AssertionError(f"{what}: {type(err).__name__} is not a DDCError: {err} (at {' / '.join(x.strip() for x in where)})")
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg, f"{what}: not a one-line message: {msg!r}"
    return type(err).__name__


PEAKS = {"cpu_s": 0.0, "tracemalloc_mib": 0.0, "tracemalloc_mib_xz": 0.0, "rss_growth_mib": 0.0}  # the largest seen
XZ_MAGIC, XZ_DICT = b"\xfd7zXZ\x00", 66 << 20


def check_hostile(blob: bytes, want: bytes, fail: bool, lm, limit_s: float = 2.0, max_alloc: int = 32 << 20,
                  max_rss_mb: float = 128) -> str:
    """Decode and `info` a mutated file; return the outcomes as "decompress|info" ("ok" or the error
    class), or raise AssertionError when the rules are broken. fail: a success (even with the right
    data) is a bug."""
    import ddcompress

    xz = XZ_MAGIC in blob
    if xz:  # lzma allocates the stream's dictionary (64 MiB at preset 9) up front
        max_alloc += XZ_DICT
    outcome = []
    for what, fn, kw in (("decompress", ddcompress.decompress, {"model": lm}), ("info", ddcompress.info, {})):
        result, err, secs, peak, rss = guarded(fn, blob, limit_s=limit_s, **kw)
        for key, v in (("cpu_s", secs), ("tracemalloc_mib_xz" if xz else "tracemalloc_mib", peak / 2**20),
                       ("rss_growth_mib", rss or 0.0)):
            PEAKS[key] = max(PEAKS[key], v)
        assert secs < limit_s, f"{what}: {secs:.2f} CPU s (limit {limit_s} s)"
        assert rss is None or rss < max_rss_mb, f"{what}: the resident set grew by {rss:.0f} MiB (limit {max_rss_mb:.0f})"
        assert peak < max_alloc, f"{what}: allocated {peak / 2**20:.1f} MiB (limit {max_alloc / 2**20:.0f} MiB)"
        if err is not None:
            outcome.append(judge_error(err, what))
        elif what == "decompress":
            assert result == want, f"decompress: wrong output ({len(result)} bytes, want {len(want)})"
            assert not fail, "decompress: a mutation that must be caught decoded without an error"
            outcome.append("ok")
        else:
            assert isinstance(result, dict) and result["frames"] >= 1, f"info: {result!r}"
            outcome.append("ok")
    return "|".join(outcome)


def draw_hostile(rng: random.Random, frames: dict[str, list[Frame]]) -> tuple[str, list]:
    """A random file (by name) and 1-3 random mutations of it."""
    name = rng.choice(sorted(frames))
    return name, [random_mutation(rng, frames[name]) for _ in range(rng.choice((1, 1, 1, 2, 3)))]


def hostile_case(rng: random.Random, bases: dict[str, tuple[bytes, bytes]], frames: dict[str, list[Frame]],
                 lm, **kw) -> tuple[str, list, str]:
    """One random case: (base name, mutations, outcome); raises AssertionError (with the reproducer)."""
    name, muts = draw_hostile(rng, frames)
    return name, muts, run_mutation(name, muts, bases, frames, lm, **kw)


def run_mutation(name: str, muts: list, bases, frames, lm, **kw) -> str:
    blob, want = bases[name]
    bad = apply(frames[name], muts)
    fail = bad != blob and must_fail(frames[name], muts)  # an unchanged file must decode
    try:
        return check_hostile(bad, want, fail, lm, **kw)
    except AssertionError as e:
        raise AssertionError(f"{e} -- base {name!r}, mutations {json.dumps(muts)}") from None


# -- the chunk-count and group-size attacks (issue 22) ------------------------------------------------------
# Files whose every header check passes, built to make a decoder size its work by the header's claims:
# 2^30 chunks in 1,024 empty streams of 2^20 chunks each (the 17 KB file at L = 1024), a group size
# over the cap, 2^40 tokens over a short table, thousands of groups at the cap with empty streams, with the
# shortest payloads a decoder's size check lets through, and with a first group whose random stream is long
# enough to decode it whole. The decoder must end each in a one-line DDCError, in bounded time and memory.

MAX_GROUP = 64  # FORMAT.md's cap on chunks per group (the harness's own copy)
TOKENS_PER_WORD_LOW = 7454  # FORMAT.md: a payload word holds at most ~7456 tokens of rANS; fewer is safe


def min_words(coded: int) -> int:
    """Words enough for a decoder's payload-size check to let `coded` tokens through."""
    return -(-coded // TOKENS_PER_WORD_LOW) + 1


def attack_files(model_id: str, tokenizer_id: str, L: int, n_groups: int = 1024, seed: int = 0) -> dict[str, tuple[bytes, str]]:
    """name -> (file, the DDCError class its decoding must end in)."""
    rng = random.Random(seed)
    ids = (model_id, tokenizer_id)
    at_cap = n_groups * MAX_GROUP * L  # tokens of n_groups full groups at the cap
    full = MAX_GROUP * L  # tokens of one group at the cap
    return {
        "group_size_2^20_empty_streams": (craft_mdm(*ids, L, 2**20, 1024 * 2**20 * L), "FormatError"),
        "group_size_cap+1": (craft_mdm(*ids, L, MAX_GROUP + 1, (MAX_GROUP + 1) * L,
                                       payload=lambda k: random_stream(rng, 64)), "FormatError"),
        "tokens_2^40_short_table": (craft_mdm(*ids, L, MAX_GROUP, 2**40, table_groups=n_groups), "FormatError"),
        "chunks_at_cap_empty_streams": (craft_mdm(*ids, L, MAX_GROUP, at_cap), "IntegrityError"),
        "chunks_at_cap_shortest_payloads": (craft_mdm(*ids, L, MAX_GROUP, at_cap,
                                                      payload=lambda k: random_stream(rng, min_words(full))), "IntegrityError"),
        "chunks_at_cap_first_group_whole": (craft_mdm(*ids, L, MAX_GROUP, at_cap, payload=lambda k: random_stream(
            rng, full * 17 // 32 + 2 if k == 0 else min_words(full))), "IntegrityError"),
    }


def probe(blob_path: str, model: str, address_space_mib: float | None = None) -> dict:
    """Decode one file in this (fresh) process, the model loaded first, under an optional limit of the
    address space (RLIMIT_AS: what is mapped now plus this much): the outcome, wall and CPU seconds,
    and the resident set's peak and growth (VmHWM, reset first). For `python tests/test_fuzz.py probe`."""
    import resource

    import torch

    import ddcompress
    from ddcompress.model import registry

    torch.set_num_threads(1)
    lm = registry.resolve(model)
    blob = open(blob_path, "rb").read()
    if address_space_mib is not None:
        limit = int((_status_mb("VmSize:") + address_space_mib) * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    reset_peak_rss()
    rss0 = _status_mb("VmRSS:")
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        ddcompress.decompress(blob, model=lm)
        outcome, message = "ok", ""
    except DDCError as e:
        outcome, message = type(e).__name__, str(e)
    except MemoryError as e:
        outcome, message = "MemoryError", str(e)
    except Exception as e:  # noqa: BLE001 (reported: not a DDCError)
        outcome, message = f"internal: {type(e).__name__}", str(e)
    return {"outcome": outcome, "message": message[:300], "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "peak_rss_mib": _status_mb("VmHWM:"),
            "rss_growth_mib": _status_mb("VmHWM:") - rss0, "file_bytes": len(blob)}


# -- random inputs for round trips ----------------------------------------------------------------------------

INVALID_UTF8 = (b"\xff", b"\xfe", b"\x80", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf",
                b"\xf0\x9f\x98", b"\xc3")
UNICODE_RANGES = ((0x20, 0x7E), (0xA0, 0xFF), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x300, 0x36F),
                  (0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0xE000, 0xE0FF),
                  (0xFFF0, 0xFFFF), (0x10FF00, 0x10FFFF), (0x2000, 0x206F), (0x0, 0x1F))


def rbytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def random_piece(rng: random.Random) -> bytes:
    kind = rng.choice(("binary", "invalid_utf8", "crlf", "run", "unicode", "words", "ascii"))
    if kind == "binary":
        return rbytes(rng, rng.randrange(1, 200))
    if kind == "invalid_utf8":
        return b"".join(rng.choice(INVALID_UTF8 + (b" ok ", b"text", b"\n", "é".encode())) for _ in range(rng.randrange(1, 30)))
    if kind == "crlf":
        ends = (b"\r\n",) if rng.random() < 0.5 else (b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r")
        return b"".join(rng.choice((b"a line", b"", b"  x", b"text here")) + rng.choice(ends) for _ in range(rng.randrange(1, 25)))
    if kind == "run":
        unit = rng.choice((b"a", b" ", b"\0", b"\n", b"ab", b"\xff", "é".encode(), b"\r\n", b"=-"))
        return unit * rng.randrange(1, 400 // len(unit))
    if kind == "unicode":
        chars = []
        for _ in range(rng.randrange(1, 60)):
            lo, hi = rng.choice(UNICODE_RANGES)
            chars.append(chr(rng.randint(lo, hi)))
        return "".join(chars).encode("utf-8", "surrogatepass")
    if kind == "words":
        return words(rng.randrange(1, 200), seed=rng.randrange(1000))
    return bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 200)))


def random_input(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.04:
        return b""
    if r < 0.08:
        return bytes([rng.randrange(256)])
    return b"".join(random_piece(rng) for _ in range(rng.choice((1, 1, 2, 3))))[:800]


def random_params(rng: random.Random) -> dict:
    p = {"method": rng.choice(("mdm", "mdm", "mdm", "auto")),
         "seed": rng.choice((0, 1, 2**63 - 1, 2**64 - 1, rng.getrandbits(64))),
         "group_size": rng.choice((None, 1, 2, 3, 5, 64))}
    if rng.random() < 0.75:
        p["level"] = rng.choice((None, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9))
    else:
        p["steps"] = rng.choice((1, 2, 3, 5, 17, 63, 64, 65, 1000))
    return p


def check_roundtrip(data: bytes, params: dict, lm) -> str:
    """compress -> decompress must give the data back; `info` must describe it. Returns the method."""
    import ddcompress

    blob = ddcompress.compress(data, model=lm, **params)
    out = ddcompress.decompress(blob, model=lm)
    assert out == data, f"round trip changed the data ({len(data)} -> {len(out)} bytes)"
    h = ddcompress.info(blob)
    assert h["original_bytes"] == len(data) and h["frames"] == 1 and h["compressed_bytes"] == len(blob), h
    if params["method"] == "mdm" and data:
        assert h["method"] == "mdm", h["method"]
    if params["method"] == "auto":  # never worse than a stored copy
        stored = len(ddcompress.compress(data, method="store"))
        assert len(blob) <= stored, f"auto wrote {len(blob)} bytes, a stored copy is {stored}"
    return h["method"]


def roundtrip_case(rng: random.Random, lm) -> tuple[bytes, dict, str]:
    data, params = random_input(rng), random_params(rng)
    try:
        return data, params, check_roundtrip(data, params, lm)
    except Exception as e:
        raise AssertionError(f"{type(e).__name__}: {e} -- data {data!r}, params {params}") from e
