"""The coder (codec/coder.py) through the library API: lossless round trips, coded size vs the
ideal code length, determinism. Everything uses the tiny random model (L = 64), so multi-chunk and
multi-group inputs cost a few hundred tokens."""
from __future__ import annotations

import dataclasses
import lzma
import random
import zlib

import numpy as np
import pytest
import torch

import ddcompress
from ddcompress.codec import coder as codec
from ddcompress.codec.coder import Coder
from ddcompress.codec.layout import chunk_layout, group_layout
from ddcompress.codec.plan import Plan
from ddcompress.codec.container import FORMAT_VERSION, Container, parse
from ddcompress.errors import DDCError, IntegrityError, ModelError
from ddcompress.model.denoiser import Denoiser, DenoiserConfig
from ddcompress.model.checkpoint import from_module
from ddcompress.codec.tokenizer import get_tokenizer
from samples import CONTENT, leb128, read_leb128, words

L = 64


pytestmark = pytest.mark.usefixtures("one_thread")


def roundtrip(data: bytes, lm, **kw) -> bytes:
    blob = ddcompress.compress(data, model=lm, **kw)
    assert ddcompress.decompress(blob, model=lm) == data
    return blob


# -- round trips through the API ---------------------------------------------------------------------

LEVEL_KW = {"level1": {"level": 1}, "level5": {"level": 5}, "level9": {"level": 9}, "steps3": {"steps": 3},
            "steps_ge_L": {"steps": 10 * L}}


@pytest.mark.parametrize("kw", sorted(LEVEL_KW))
@pytest.mark.parametrize("n", [1, 63, L, L + 1, 2 * L - 1, 3 * L + 5])
def test_roundtrip_chunk_boundaries(tiny_lm, n, kw):
    data = words(n, seed=n)
    assert len(get_tokenizer().encode(data)) == n
    blob = roundtrip(data, tiny_lm, method="mdm", **LEVEL_KW[kw])
    h = ddcompress.info(blob)
    assert h["method"] == "mdm" and h["tokens"] == n and h["chunks"] == -(-n // L)


@pytest.mark.parametrize("kw", sorted(LEVEL_KW))
def test_roundtrip_several_groups(tiny_lm, kw):
    """More than group_size*L tokens: three groups of full chunks plus the context-filled tail."""
    n = 5 * L + 7
    data = words(n, seed=99)
    blob = roundtrip(data, tiny_lm, method="mdm", group_size=2, **LEVEL_KW[kw])
    c = parse(blob)
    assert len(c.payloads) == 4 and len(c.token_crcs) == 4  # a token CRC per group (format 3)
    assert c.header.group_size == 2


@pytest.mark.parametrize("n", [3 * L + 5, 2 * L + 40, L + 1])
def test_encoder_batches_the_tail_with_the_full_chunks_and_writes_the_same_file(tiny_lm, monkeypatch, n):
    """The encoder walks a tail (its context known from the start) in one batch with the full chunks,
    with its own reveal schedule (a tail of 5 tokens ends after a few steps and sits the rest out): the
    same file as walking it alone after them, as the decoder does."""
    data = words(n, seed=n + 1)
    for kw in ({"level": 5}, {"level": 2}):
        together = ddcompress.compress(data, model=tiny_lm, method="mdm", seed=3, group_size=2, **kw)
        calls = []
        real = codec.batches

        def one_shape(groups, batch_chunks, encoding=False):
            calls.append(encoding)
            return real(groups, batch_chunks)

        monkeypatch.setattr(codec, "batches", one_shape)
        apart = ddcompress.compress(data, model=tiny_lm, method="mdm", seed=3, group_size=2, **kw)
        monkeypatch.undo()
        assert calls == [True] and together == apart
        assert len(real(group_layout(chunk_layout(n, L), 2), 8, encoding=True)) == 1  # one walk
        assert ddcompress.decompress(together, model=tiny_lm) == data


def test_roundtrip_default_group_size(tiny_lm):
    n = 8 * L + 3 * L + 3  # > 8 chunks: two groups with the CPU default group size, plus a tail
    blob = roundtrip(words(n, seed=5), tiny_lm, level=1, method="mdm")
    c = parse(blob)
    assert c.header.method == "mdm" and c.header.group_size == 8
    assert len(c.payloads) == 3 and len(c.token_crcs) == 3


def test_roundtrip_with_tiny_row_blocks(tiny_lm, monkeypatch):
    """Steps whose rows span several output-head blocks (ROW_BLOCK) on both sides."""
    monkeypatch.setattr(codec, "ROW_BLOCK", 7)
    roundtrip(words(3 * L + 5, seed=3), tiny_lm, method="mdm", level=1, group_size=2)
    roundtrip(words(2 * L - 1, seed=4), tiny_lm, method="mdm", steps=5)




@pytest.mark.parametrize("method", ["auto", "mdm"])
@pytest.mark.parametrize("name", sorted(CONTENT))
def test_roundtrip_content(tiny_lm, name, method):
    data = CONTENT[name]
    blob = roundtrip(data, tiny_lm, method=method, level=1)
    h = ddcompress.info(blob)
    assert h["original_bytes"] == len(data)
    if method == "mdm" and data:
        assert h["method"] == "mdm"
    else:
        assert h["method"] in ("mdm", "xz", "store")


@pytest.mark.parametrize("kw", ["level5", "level9", "steps3"])
@pytest.mark.parametrize("name", ["all_bytes", "invalid_utf8", "emoji_cjk", "crlf"])
def test_roundtrip_content_levels(tiny_lm, name, kw):
    roundtrip(CONTENT[name], tiny_lm, method="mdm", **LEVEL_KW[kw])


def test_canterbury_binary(tiny_lm, eval_dir):
    data = (eval_dir / "canterbury" / "sum").read_bytes()
    blob = roundtrip(data, tiny_lm)  # auto: binary goes to xz
    assert ddcompress.info(blob)["method"] == "xz"
    assert len(blob) < len(data)
    xls = (eval_dir / "canterbury" / "kennedy.xls").read_bytes()[:20000]
    assert ddcompress.info(roundtrip(xls, tiny_lm))["method"] == "xz"
    # the model path itself is lossless on binary
    blob = roundtrip(data[:1500], tiny_lm, method="mdm", level=1)
    assert ddcompress.info(blob)["method"] == "mdm"
    roundtrip(xls[5000:5600], tiny_lm, method="mdm", steps=3)


def test_fallbacks(tiny_lm):
    noise = random.Random(1).randbytes(3000)
    blob = roundtrip(noise, tiny_lm)  # incompressible binary: stored, tiny overhead
    assert ddcompress.info(blob)["method"] == "store" and len(blob) < len(noise) + 300
    text = b"abc " * 2000
    xz = roundtrip(text, tiny_lm, method="xz")
    assert ddcompress.info(xz)["method"] == "xz" and parse(xz).payloads[0] == lzma.compress(text, preset=9 | lzma.PRESET_EXTREME)
    st = roundtrip(text, tiny_lm, method="store")
    assert ddcompress.info(st)["method"] == "store" and parse(st).payloads == [text]
    # xz that would not shrink the data stores it instead
    assert ddcompress.info(roundtrip(b"x", tiny_lm, method="xz"))["method"] == "store"
    # auto keeps the smallest of the model's, xz's and a stored copy (the random model alone expands
    # text; with the file's own statistics mixed in it learns the repeats)
    t = b"Plain English text that the random model cannot predict at all.\n" * 6
    auto = roundtrip(t, tiny_lm)
    sizes = {m: len(roundtrip(t, tiny_lm, method=m)) for m in ("mdm", "xz", "store")}
    assert len(auto) == min(sizes.values()) and ddcompress.info(auto)["method"] == min(sizes, key=sizes.get)
    u = b"Short, no repeats.\n"
    assert ddcompress.info(roundtrip(u, tiny_lm))["method"] == "store"
    # empty input through the model path
    e = roundtrip(b"", tiny_lm, method="mdm")
    assert ddcompress.info(e)["method"] == "store" and len(e) <= 16 and parse(e).payloads == [b""]


def test_header_fields(tiny_lm):
    data = words(3 * L + 5)
    tok = get_tokenizer()
    for kw, (steps, grid, level) in {
        "level1": (2, "sine", 1), "level5": (16, "sine", 5), "level9": (L, "uniform", 9),
        "steps3": (3, "sine", None), "steps_ge_L": (L, "uniform", None),
    }.items():
        h = ddcompress.info(ddcompress.compress(data, model=tiny_lm, method="mdm", seed=77, **LEVEL_KW[kw]))
        assert (h["steps"], h["grid"], h["level"]) == (steps, grid, level), kw
        assert h["seed"] == 77 and h["seq_len"] == L and h["model_id"] == tiny_lm.id
        assert h["tokenizer_id"] == tok.id[:8] and h["numerics"] == "int8-exact-1"
        assert h["original_crc32"] == zlib.crc32(data) and h["tokens"] == 3 * L + 5 and h["chunks"] == 4
        assert h["format_version"] == FORMAT_VERSION == 5 and h["mixer"] == "cm1" and h["denoiser_bits"] > 0
    h = ddcompress.info(ddcompress.compress(data, model=tiny_lm, method="mdm"))
    assert h["level"] == ddcompress.DEFAULT_LEVEL and h["steps"] == 16


def test_bad_arguments(tiny_lm):
    for kw in ({"level": 0}, {"level": 10}, {"steps": 0}, {"method": "bogus"}):
        with pytest.raises(DDCError):
            ddcompress.compress(b"hello", model=tiny_lm, **kw)


def test_seed_changes_order_not_losslessness(tiny_lm):
    data = words(2 * L + 9, seed=11)
    a = roundtrip(data, tiny_lm, method="mdm", level=1, seed=1)
    b = roundtrip(data, tiny_lm, method="mdm", level=1, seed=2)
    assert parse(a).payloads != parse(b).payloads


# -- coded size vs the ideal code length ------------------------------------------------------------


def test_coded_size_close_to_ideal(tiny_lm, eval_dir):
    data = (eval_dir / "canterbury" / "alice29.txt").read_bytes()[:8000]
    blob = roundtrip(data, tiny_lm, method="mdm", level=5)
    c = parse(blob)
    ideal = c.header.ideal_bits
    assert c.header.tokens > 2000
    payload = sum(c.group_sizes)
    framing = len(blob) - payload
    assert framing <= 44 + 7 * len(c.payloads) + 4 * len(c.token_crcs)  # compact: varints, no JSON
    assert 8 * payload <= 1.01 * ideal + 64 * len(c.payloads)  # <= 1% + one flush per group stream
    assert 8 * payload >= 0.99 * ideal
    assert 8 * len(blob) <= 1.01 * ideal + 8 * framing + 64 * len(c.payloads)


def test_ideal_bits_equals_path_code_length(tiny_lm):
    """The header's denoiser_bits is the sum over chunks of the exact path code length (the denoiser's
    alone; ideal_bits is that of the mixture that was coded)."""
    for n, kw in ((L, {"level": 1}), (50, {"steps": 7}), (40, {"level": 9})):
        tokens = get_tokenizer().encode(words(n, seed=n))
        h = ddcompress.info(ddcompress.compress(words(n, seed=n), model=tiny_lm, method="mdm", seed=5, **kw))
        ref = codec.path_code_length(tiny_lm.exact(), tokens, Plan(h["steps"], h["grid"]), seed=5)
        assert h["denoiser_bits"] == pytest.approx(ref, rel=1e-6)  # stored as float32


def test_path_code_lengths_of_many_seeds_walked_as_one_batch(tiny_lm):
    """Seeds walked together (one batch, each row its own order) give each seed's code length walked
    alone: the batch invariance the faster NELBO-vs-code tests rely on."""
    tokens = get_tokenizer().encode(words(L, seed=3))[:L]
    seeds = [0, 1, 7, 123456789]
    for steps, grid in ((L, "uniform"), (3, "sine")):
        together = codec.path_code_lengths(tiny_lm.exact(), tokens, Plan(steps, grid), seeds, chunk_index=2)
        alone = [codec.path_code_length(tiny_lm.exact(), tokens, Plan(steps, grid), s, chunk_index=2) for s in seeds]
        np.testing.assert_allclose(together, alone, rtol=1e-12)
        assert len(set(np.round(together, 6))) == len(seeds)  # the orders do differ


# -- decode-side failures ----------------------------------------------------------------------------


def test_wrong_model_rejected(tiny_lm):
    torch.manual_seed(1)
    other = from_module(Denoiser(DenoiserConfig(seq_len=L, n_layer=2, n_head=2, d_model=32, d_mlp=64)))
    blob = ddcompress.compress(words(100), model=tiny_lm, method="mdm")
    with pytest.raises(ModelError, match="wrong model"):
        ddcompress.decompress(blob, model=other)


def test_corrupt_payload_is_an_error(tiny_lm):
    data = words(3 * L + 5, seed=2)
    blob = ddcompress.compress(data, model=tiny_lm, method="mdm", level=5, group_size=2)
    c = parse(blob)
    start = len(blob) - sum(c.group_sizes)
    hits = 0
    for off in range(0, sum(c.group_sizes), 7):
        bad = bytearray(blob)
        bad[start + off] ^= 0x10
        try:
            out = ddcompress.decompress(bytes(bad), model=tiny_lm)
        except IntegrityError:  # a payload CRC, range-decoder or chunk-check failure
            hits += 1
        else:  # only possible in a stream's final flush word, whose low bits are don't-care
            assert out == data
    assert hits >= 0.9 * len(range(0, sum(c.group_sizes), 7))


def test_token_checksum_mismatch_detected(tiny_lm):
    """A group's token CRC that disagrees with the decoded tokens (payload intact) is reported with the
    group's chunks: 3 full chunks in groups of 2 and a tail chunk = groups [0, 1], [2], [3]."""
    c = parse(ddcompress.compress(words(3 * L + 5), model=tiny_lm, method="mdm", group_size=2))
    for group, where in ((0, "chunks 0-1"), (1, "chunk 2")):
        crcs = list(c.token_crcs)
        crcs[group] ^= 1
        bad = Container(c.header, c.group_sizes, crcs, c.payloads).to_bytes()
        with pytest.raises(IntegrityError, match=where):
            ddcompress.decompress(bad, model=tiny_lm)


def constriction_payloads(lm, tokens: np.ndarray, groups, steps: int, grid: str, seed: int) -> list[bytes]:
    """The group payloads ddc 0.3 (formats 2 and 3) wrote: constriction's range coder with
    Categorical(perfect=False) on the same walk's float32 frequencies."""
    import constriction

    coder, family = Coder(lm.exact(), Plan(steps, grid), seed, format_version=3), constriction.stream.model.Categorical(perfect=False)
    out = []
    for g in groups:
        enc = constriction.stream.queue.RangeEncoder()
        for _, _, _, sym, probs in coder._known_walk(tokens, g):
            enc.encode(sym, family, probs.numpy())
        out.append(enc.get_compressed().astype("<u4").tobytes())
    return out


def as_old_format(blob: bytes, lm, version: int, token_crcs: list[int] | None = None) -> bytes:
    """A current file rewritten as ddc 0.3 (format 3) or 0.2 (format 2: a token CRC per chunk) wrote
    it: constriction's payloads of the denoiser's frequencies alone, no format-5 fields (mixer,
    denoiser_bits), the table and header CRC to match."""
    c = parse(blob)
    h = dataclasses.replace(c.header, mixer=None)
    tokens = np.asarray(get_tokenizer().encode(ddcompress.decompress(blob, model=lm)), dtype=np.int64)
    groups = group_layout(chunk_layout(len(tokens), h.seq_len), h.group_size)
    payloads = constriction_payloads(lm, tokens, groups, h.steps, h.grid, h.seed)
    new = Container(h, [len(p) for p in payloads], c.token_crcs, payloads).to_bytes()
    n, at = read_leb128(new, 5)
    crcs = c.token_crcs if token_crcs is None else token_crcs
    table = sum(len(leb128(len(p))) + 4 for p in payloads)
    head_end = at + n - 4 * len(c.token_crcs) - table  # the header fields end with format 5's 5 bytes
    body = new[at : head_end - 5] + new[head_end : at + n - 4 * len(c.token_crcs)]
    body += b"".join(x.to_bytes(4, "little") for x in crcs)
    head = bytes([version]) + leb128(len(body)) + body
    return new[:4] + head + zlib.crc32(head).to_bytes(4, "little") + b"".join(payloads)


def test_format_3_files_decode_with_constriction(tiny_lm):
    """ddc 0.3's files (constriction's range coder) still decode: several groups and a tail."""
    data = words(5 * L + 7, seed=11)
    v3 = as_old_format(ddcompress.compress(data, model=tiny_lm, method="mdm", group_size=2, level=1), tiny_lm, 3)
    assert parse(v3).header.format_version == 3
    assert ddcompress.decompress(v3, model=tiny_lm) == data


def test_format_2_files_decode_with_a_crc_per_chunk(tiny_lm):
    """A format-2 file (ddc 0.2.0: format 3 with a token CRC per chunk) of several multi-chunk groups
    decodes, and a bad chunk CRC in it is reported by chunk."""
    data = words(5 * L + 7, seed=11)  # 5 full chunks in groups of 2 ([0, 1], [2, 3], [4]) and a tail
    blob = ddcompress.compress(data, model=tiny_lm, method="mdm", group_size=2, level=1)
    c = parse(blob)
    tokens = np.asarray(get_tokenizer().encode(data))
    per_chunk = [codec.token_crc(tokens[k.start + k.known : k.start + k.width]) for k in chunk_layout(len(tokens), L)]
    assert len(c.token_crcs) == 4 and len(per_chunk) == 6
    v2 = as_old_format(blob, tiny_lm, 2, per_chunk)
    assert parse(v2).header.format_version == 2 and parse(v2).token_crcs == per_chunk
    assert ddcompress.decompress(v2, model=tiny_lm) == data
    bad = list(per_chunk)
    bad[3] ^= 1  # the second chunk of group [2, 3]
    with pytest.raises(IntegrityError, match="chunk 3 failed"):
        ddcompress.decompress(as_old_format(blob, tiny_lm, 2, bad), model=tiny_lm)


def test_chunk_table_mismatch_detected(tiny_lm):
    c = parse(ddcompress.compress(words(3 * L + 5), model=tiny_lm, method="mdm", group_size=2))
    with pytest.raises(ValueError, match="cannot write"):  # the writer refuses a table that disagrees
        Container(dataclasses.replace(c.header, group_size=8), c.group_sizes, c.token_crcs, c.payloads).to_bytes()
    c3 = Container(dataclasses.replace(c.header, original_crc32=c.header.original_crc32 ^ 1), c.group_sizes, c.token_crcs, c.payloads)
    with pytest.raises(IntegrityError):
        ddcompress.decompress(c3.to_bytes(), model=tiny_lm)


# -- determinism -----------------------------------------------------------------------------------


def test_encoding_is_deterministic(tiny_lm):
    data = words(2 * L + 3, seed=8) + "…ünïcödé…\r\n".encode()
    a = ddcompress.compress(data, model=tiny_lm, method="mdm", level=5)
    b = ddcompress.compress(data, model=tiny_lm, method="mdm", level=5)
    assert a == b


@pytest.mark.parametrize("enc_threads,dec_threads", [(1, 2), (2, 1)])
def test_decode_with_other_thread_count(enc_threads, dec_threads):
    """Coding needs bit-identical probabilities: the thread count must not change them. Uses a
    wider model than the tiny fixture so that the matmuls are big enough to be split across threads."""
    torch.manual_seed(3)
    lm = from_module(Denoiser(DenoiserConfig(seq_len=L, n_layer=2, n_head=4, d_model=128, d_mlp=256)))
    data = words(2 * L + 9, seed=enc_threads)
    try:
        torch.set_num_threads(enc_threads)
        blob = ddcompress.compress(data, model=lm, method="mdm", level=1, group_size=4)
        torch.set_num_threads(dec_threads)
        assert ddcompress.decompress(blob, model=lm) == data
    finally:
        torch.set_num_threads(1)


def test_coder_group_roundtrip_direct(tiny_lm):
    """Coder.encode_group / decode_group on raw token ids (no tokenizer), tail chunk included."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50257, size=2 * L + 10).astype(np.uint32)
    chunks = chunk_layout(len(tokens), L)
    coder = Coder(tiny_lm.exact(), Plan(4, "sine"), seed=9)
    groups = group_layout(chunks, 2)
    results = [coder.encode_group(tokens, g) for g in groups]
    out = np.zeros(len(tokens), dtype=np.int64)
    for g, r in zip(groups, results):
        coder.decode_group(out, g, r.payload, r.token_crcs)
    np.testing.assert_array_equal(out, tokens)
    with pytest.raises(IntegrityError, match="word-aligned"):
        coder.decode_group(out, groups[0], results[0].payload[:-1], results[0].token_crcs)
    # data the rANS decoder itself rejects: it runs out of words, or does not end where it should
    with pytest.raises(IntegrityError, match="invalid coded data"):
        coder.decode_group(out, groups[0], results[0].payload[:-4], results[0].token_crcs)
    with pytest.raises(IntegrityError, match="invalid coded data"):  # an initial state below 2^31
        coder.decode_group(out, groups[0], bytes(8) + results[0].payload[8:], results[0].token_crcs)
    with pytest.raises(IntegrityError, match="does not end where its encoder left it"):
        coder.decode_group(out, groups[0], results[0].payload + b"\0\0\0\0", results[0].token_crcs)
    with pytest.raises(IntegrityError, match="chunk"):  # decodes to the wrong tokens: caught by the token CRC
        coder.decode_group(out, groups[0], bytes(len(results[0].payload)), results[0].token_crcs)


def test_encoder_intervals_on_device_give_the_same_file(tiny_lm):
    """A GPU encoder quantizes on the device (rans.intervals_torch) and moves 4 numbers per token:
    the same payloads and ideal bits as quantizing on the host (run here with CPU tensors)."""
    tokens = np.random.default_rng(3).integers(0, 50257, size=3 * L + 10)
    groups = group_layout(chunk_layout(len(tokens), L), 2)
    host, dev = Coder(tiny_lm.exact(), Plan(4, "sine"), seed=5), Coder(tiny_lm.exact(), Plan(4, "sine"), seed=5)
    dev.intervals_on_device = True
    a, b = codec.encode_all(host, tokens, groups, 8), codec.encode_all(dev, tokens, groups, 8)
    assert [r.payload for r in a] == [r.payload for r in b]
    assert [r.ideal_bits for r in a] == pytest.approx([r.ideal_bits for r in b], rel=1e-12)


def decoded_with(lm, n_tokens: int, seed: int, **coder_attrs):
    """Random tokens encoded on the host path, then decoded with the coder's attributes set (a GPU's
    paths, run here with CPU tensors): the same tokens. Returns (coder, groups, results)."""
    tokens = np.random.default_rng(seed).integers(0, 50257, size=n_tokens)
    groups = group_layout(chunk_layout(len(tokens), L), 2)
    coder = Coder(lm.exact(), Plan(4, "sine"), seed=seed + 2)
    res = codec.encode_all(coder, tokens, groups, 8)
    for name, value in coder_attrs.items():
        setattr(coder, name, value)
    out = np.zeros(len(tokens), dtype=np.int64)
    codec.decode_all(coder, out, groups, [r.payload for r in res], [r.token_crcs for r in res], 8)
    np.testing.assert_array_equal(out, tokens)
    return coder, groups, res


def test_device_decoder_gives_the_same_tokens(tiny_lm):
    """A GPU decoder keeps the rows on the device (rans.DeviceDecoder, all streams of a batch at once):
    the same tokens as the host decoder; corrupt data is still refused."""
    coder, groups, res = decoded_with(tiny_lm, 5 * L + 10, 4, decode_on_device=True)
    out = np.zeros(5 * L + 10, dtype=np.int64)
    bad = [r.payload for r in res]
    bad[1] = bad[1][:-4]
    with pytest.raises(IntegrityError, match="invalid coded data"):
        codec.decode_all(coder, out, groups, bad, [r.token_crcs for r in res], 8)
    bad[1] = res[1].payload + bytes(4)
    with pytest.raises(IntegrityError, match="does not end where its encoder left it"):
        codec.decode_all(coder, out, groups, bad, [r.token_crcs for r in res], 8)


def test_host_decoder_from_table_indices_gives_the_same_tokens(tiny_lm):
    """A GPU's rows cross to the host as int16 exp-table indices (half the bytes): the same tokens
    (the indices from the denoiser's torch path)."""
    decoded_with(tiny_lm, 3 * L + 10, 5, indices_to_host=True)


def test_frequency_rows_as_table_indices(tiny_lm):
    """frequencies(..., indices=True): int16 indices u with exp32[u] the frequencies, row for row."""
    d = tiny_lm.exact("cpu")
    x = torch.from_numpy(np.random.default_rng(8).integers(0, 50257, size=(2, L)))
    h8, s = d.hidden(x)
    f, u = d.frequencies(h8, s), d.frequencies(h8, s, indices=True)
    assert u.dtype == torch.int16 and int(u.min()) >= 0 and int(u.max()) < len(d.exp32)
    torch.testing.assert_close(d.exp32[u.long()], f, rtol=0, atol=0)


def test_tiny_inputs_skip_the_model_and_barely_grow(tiny_lm, monkeypatch):
    """Below MIN_MODEL_BYTES the model cannot pay for its framing: "auto" does not run it at all, and
    the output is a stored frame (16 bytes of framing) or xz, whichever is smaller."""
    from ddcompress import api

    def no_model(*a, **k):
        raise AssertionError("the model ran on a tiny input")

    monkeypatch.setattr(codec, "Coder", no_model)  # api imports it from codec when the model runs
    for n in (0, 1, 2, api.MIN_MODEL_BYTES - 1):
        data = b"x!"[:1] * n if n < 2 else words(40)[:n]
        blob = roundtrip(data, tiny_lm)
        assert len(blob) <= 16 + n, (n, len(blob))
    assert len(ddcompress.compress(b"")) == 16 and len(ddcompress.compress(b"a")) == 17
    with pytest.raises(AssertionError, match="the model ran"):  # at the threshold it does run
        ddcompress.compress(words(200)[: api.MIN_MODEL_BYTES], model=tiny_lm)


def test_batches_take_whole_groups_of_one_shape_in_order():
    groups = group_layout(chunk_layout(10 * L + 5, L), 3)  # full groups of 3, 3, 3, 1, then the tail
    assert [len(g) for g in groups] == [3, 3, 3, 1, 1] and groups[-1][0].known == L - 5
    assert codec.batches(groups, 1) == [[0], [1], [2], [3], [4]]  # a group is never split
    assert codec.batches(groups, 7) == [[0, 1], [2, 3], [4]]
    assert codec.batches(groups, 1000) == [[0, 1, 2, 3], [4]]  # the tail after its context, alone
    short = group_layout(chunk_layout(5, L), 3)
    assert codec.batches(short, 8) == [[0]]


def test_forward_batch_size_never_changes_the_file(tiny_lm):
    """Chunks per forward pass (whole groups) is the machine's choice: every batch size writes the same
    bytes, and a file decodes at any batch size, whatever its group size."""
    data = words(11 * L + 20, seed=21)
    n = len(get_tokenizer().encode(data))
    assert n > 10 * L and n % L  # full chunks and a tail
    blobs = {b: ddcompress.compress(data, model=tiny_lm, method="mdm", steps=5, seed=3, group_size=2, batch_chunks=b)
             for b in (1, 4, 1000)}
    assert len(set(blobs.values())) == 1
    blob = blobs[1]
    assert len(parse(blob).payloads) == -(-(n // L) // 2) + 1  # full groups of (up to) 2 chunks, and the tail
    for b in (1, 3, 1000):
        assert ddcompress.decompress(blob, model=tiny_lm, batch_chunks=b) == data
    bad = bytearray(blob)
    bad[-3] ^= 0x40  # a payload bit of the last (tail) group: caught when its batch is decoded
    with pytest.raises(IntegrityError):
        ddcompress.decompress(bytes(bad), model=tiny_lm, batch_chunks=1000)
