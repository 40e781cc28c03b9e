"""Issue 22, part B: the decoder's memory bounded by construction, arguments checked before any work,
limits for untrusted files, and an "auto" mode that decides cheaply. (The hostile-file fuzzing of the
same attacks, with its memory bounds, is in tests/test_fuzz.py, the attacks in tests/support/fuzz.py.)"""
from __future__ import annotations

import lzma
import random
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

import ddcompress
from ddcompress import api
from ddcompress.codec import coder as codec
from ddcompress.errors import DDCError, FormatError, IntegrityError
from ddcompress.codec.layout import MAX_GROUP_SIZE, Layout, chunk_layout, group_layout, layout_counts
from samples import words
from support.fuzz import EMPTY_STREAM, craft_mdm, random_stream

pytestmark = pytest.mark.usefixtures("one_thread")
L = 64  # the tiny model's


def ids(lm) -> tuple[str, str]:
    from ddcompress.codec.tokenizer import get_tokenizer

    return lm.id, get_tokenizer().id[:8]


def traced(fn, *args, **kw):
    """(result or exception, seconds, tracemalloc peak in MiB)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 (judged by the caller)
        out = e
    secs = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, secs, peak


# -- item 3: the decoder's memory ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 5, L - 1, L, L + 1, 3 * L, 7 * L + 3, 20 * L + 63])
@pytest.mark.parametrize("gs", [1, 2, 3, 8])
def test_lazy_layout_is_the_list_layout(n, gs):
    ref = group_layout(chunk_layout(n, L), gs)
    lay = Layout(n, L, gs)
    assert list(lay) == ref and len(lay) == len(ref) and (lay.n_chunks, lay.n_groups) == layout_counts(n, L, gs)
    for k, g in enumerate(ref):
        assert lay.group(k) == g and lay.chunks_in(k) == len(g) and lay.first_chunk(k) == g[0].index
        assert lay.coded_in(k) == sum(c.coded for c in g) and lay.shape(k) == (g[0].width, g[0].known)
    assert codec.batches(lay, 5) == codec.batches(ref, 5) and codec.batches(lay, 5, True) == codec.batches(ref, 5, True)


def test_lazy_layout_of_a_huge_claim_costs_nothing():
    lay = Layout(2**40, 1024, MAX_GROUP_SIZE)
    assert lay.n_chunks == 2**30 and len(lay.group(12345)) == MAX_GROUP_SIZE and lay.group(len(lay) - 1)[-1].index == 2**30 - 1


def test_the_issues_17kb_file_fails_at_once(tiny_lm):
    """2^40 tokens, group size 2^20, 1,024 empty streams (17 KB at L = 1024): refused by the header's
    group-size cap, in well under a second, with almost no memory (it built 2^30 Chunk objects)."""
    blob = craft_mdm(*ids(tiny_lm), 1024, 2**20, 2**40)
    assert len(blob) < 18_000
    for fn, kw in ((ddcompress.decompress, {"model": tiny_lm}), (ddcompress.info, {})):
        err, secs, peak = traced(fn, blob, **kw)
        assert isinstance(err, FormatError) and f"group_size 1048576 is over the limit of {MAX_GROUP_SIZE}" in str(err), err
        assert peak < 4, (secs, peak)


@pytest.mark.parametrize("tokens,seq_len", [(2**22, 1024), (2**30, 1024)])
def test_a_token_claim_the_payloads_cannot_hold_fails_before_any_model_work(tiny_lm, tokens, seq_len, monkeypatch):
    """Empty streams under every group of a 2^30-token claim (16,384 groups of 64 chunks of 1024 tokens:
    a 280 KB file): the header is consistent and within every cap, but no payload can code its group's
    tokens (rANS: at least 0.0043 bits a token), so the decoder refuses before it loads a model or sizes
    anything by the claim (it built a list of every chunk and allocated 8 bytes a token)."""
    monkeypatch.setattr(codec.Coder, "__init__", lambda *a, **k: pytest.fail("the model ran"))
    blob = craft_mdm(*ids(tiny_lm), seq_len, MAX_GROUP_SIZE, tokens)
    with pytest.raises(IntegrityError, match=f"group 0's payload .8 bytes. is too short for its {MAX_GROUP_SIZE * seq_len} tokens"):
        ddcompress.decompress(blob, model=tiny_lm)
    err, secs, peak = traced(ddcompress.decompress, blob, model=tiny_lm)
    assert isinstance(err, IntegrityError) and peak < 8, (err, peak)


def test_payload_bound_is_tight_but_never_refuses_a_real_stream():
    """The bound on tokens per payload word holds for the cheapest possible symbols (the widest interval,
    start 0 or last), with only a few words to spare."""
    from ddcompress.codec import rans

    w = (1 << 24) - 50257 + 1
    for m in (1, 7000, 7454, 8000, 100_000, 300_000):
        for start in (0, (1 << 24) - w):
            n_words = len(rans.encode_words(np.full(m, start), np.full(m, w)))
            assert api.max_coded_tokens(4 * n_words, 4) >= m
            assert api.max_coded_tokens(4 * n_words - 4 * 3, 4) < m  # tight: 3 words fewer would be refused


def test_a_group_at_the_cap_with_random_payloads_decodes_in_bounded_memory(tiny_lm):
    """2^24 tokens claimed, each group's payload just long enough to pass the size check, the first one a
    full random stream: the decoder walks one group of 64 chunks and fails its checks, holding tokens
    for what it decoded (not 2^24 of them: 128 MiB) and no list of the 2^18 chunks."""
    rng = random.Random(1)
    first = MAX_GROUP_SIZE * L * 16 // 32 + 2  # words: ~16 bits a token of a random tiny model's rows
    blob = craft_mdm(*ids(tiny_lm), L, MAX_GROUP_SIZE, 2**24, steps=2,
                     payload=lambda k: random_stream(rng, first if k == 0 else 4))
    err, secs, peak = traced(ddcompress.decompress, blob, model=tiny_lm)
    assert isinstance(err, IntegrityError), err
    assert peak < 48, peak


def test_decoded_tokens_grow_with_the_data_not_the_claim(tiny_lm):
    """A real multi-group file decodes through the growing token buffer to the same bytes."""
    data = words(9 * L + 17, seed=5)
    blob = ddcompress.compress(data, model=tiny_lm, method="mdm", level=1, group_size=2)
    assert ddcompress.decompress(blob, model=tiny_lm, batch_chunks=3) == data


# -- item 6: arguments -----------------------------------------------------------------------------------

BAD_COMPRESS = {
    "data": ({"data": "text"}, "data must be bytes"),
    "seed -1": ({"seed": -1}, "seed must be an integer 0..18446744073709551615"),
    "seed 2^64": ({"seed": 2**64}, "seed must be"),
    "seed None": ({"seed": None}, "seed must be an integer"),
    "seed float": ({"seed": 1.5}, "seed must be"),
    "steps str": ({"steps": "2"}, "steps must be None or an integer >= 1"),
    "steps 0": ({"steps": 0}, "steps must be"),
    "level 10": ({"level": 10}, "level must be None or an integer 1..9"),
    "level True": ({"level": True}, "level must be"),
    "group_size 2000000": ({"group_size": 2_000_000}, f"group_size must be None or an integer 1..{MAX_GROUP_SIZE}"),
    "group_size 0": ({"group_size": 0}, "group_size must be"),
    "batch_chunks str": ({"batch_chunks": "8"}, "batch_chunks must be"),
    "method": ({"method": "zip"}, "method must be one of auto, mdm, xz, store"),
    "model int": ({"model": 3}, "model must be None, a model name"),
    "device int": ({"device": 0}, "device must be a string"),
    "device bogus": ({"device": "bogus"}, "device 'bogus' is not a device"),
    "progress": ({"progress": 5}, "progress must be None or a callable"),
    "on_start": ({"on_start": "x"}, "on_start must be None or a callable"),
}


@pytest.mark.parametrize("case", sorted(BAD_COMPRESS))
def test_compress_checks_every_argument_first(case, tiny_lm, monkeypatch):
    monkeypatch.setattr(codec.Coder, "__init__", lambda *a, **k: pytest.fail("the model ran"))
    kw, message = BAD_COMPRESS[case]
    args = {"data": words(3 * L), "model": tiny_lm, "method": "mdm"} | kw
    with pytest.raises(DDCError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        ddcompress.compress(**args)


def test_compress_refuses_a_device_this_torch_lacks(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for method in ("mdm", "xz", "store"):
        with pytest.raises(DDCError, match="^device 'cuda'"):
            ddcompress.compress(b"some text", device="cuda", method=method)
    with pytest.raises(DDCError, match="^device 'cuda'"):
        ddcompress.decompress(ddcompress.compress(b"x", method="store"), device="cuda")


@pytest.mark.parametrize("kw,message", [({"blob": "text"}, "blob must be bytes"), ({"device": 1}, "device must be"),
                                        ({"batch_chunks": 0}, "batch_chunks must be"), ({"model": 1.0}, "model must be"),
                                        ({"progress": 1}, "progress must be"), ({"max_output": -1}, "max_output must be")])
def test_decompress_checks_every_argument_first(kw, message):
    args = {"blob": ddcompress.compress(b"abc", method="store")} | kw
    with pytest.raises(DDCError, match="^" + message):
        ddcompress.decompress(**args)


@pytest.mark.parametrize("args,name", [(["--seed", "-1"], "seed"), (["--seed", str(2**64)], "seed"),
                                       (["--group-size", "2000000"], "group_size")])
def test_cli_bad_arguments_fail_before_the_model(args, name, tmp_path, tiny_ckpt, monkeypatch):
    from ddcompress.cli import main

    monkeypatch.setattr(codec.Coder, "__init__", lambda *a, **k: pytest.fail("the model ran"))
    src = tmp_path / "t.txt"
    src.write_bytes(words(3 * L))
    res = CliRunner().invoke(main, [str(src), "--method", "mdm", "--model", str(tiny_ckpt), *args])
    assert res.exit_code == 1, res.output
    assert "internal error" not in res.output and name in res.output and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "t.txt.ddc").exists()


# -- item 8: limits for untrusted files ---------------------------------------------------------------------


def test_an_xz_frame_streams_in_bounded_pieces():
    """64 MiB of zeros in a ~10 KB xz frame: iter_decompress yields it a MiB at a time, holding no more
    than that and lzma's own dictionary (tracemalloc sees both; preset 0's is 256 KiB)."""
    from ddcompress.codec.container import Container, Header

    data = bytes(64 << 20)
    packed = lzma.compress(data, preset=0)
    blob = Container(Header("xz", len(data), zlib.crc32(data)), [len(packed)], [],
                     [packed]).to_bytes()
    assert len(blob) < 20_000

    def consume():
        n = biggest = 0
        for piece in api.iter_decompress(blob):
            n += len(piece)
            biggest = max(biggest, len(piece))
        return n, biggest

    (n, biggest), secs, peak = traced(consume)
    assert n == len(data) and biggest <= api.XZ_PIECE
    assert peak < 8, peak  # the whole output alone would be 64 MiB


def test_max_output_refuses_before_decoding():
    blob = ddcompress.compress(bytes(1 << 20), method="xz") + ddcompress.compress(b"abc", method="store")
    err, secs, peak = traced(ddcompress.decompress, blob, max_output=1 << 20)
    assert isinstance(err, DDCError) and "decodes to 1048579 bytes, over max_output 1048576" in str(err), err
    assert peak < 4, (secs, peak)
    assert ddcompress.decompress(blob, max_output=(1 << 20) + 3) == bytes(1 << 20) + b"abc"


def test_an_xz_frame_that_lies_is_refused_without_its_last_piece():
    """A frame whose xz stream is longer than its header says, or whose CRC does not match: an
    IntegrityError, and a streaming caller never receives the piece that would complete the lie."""
    data = random.Random(3).randbytes(3 * api.XZ_PIECE // 2)
    packed = lzma.compress(data, preset=1)
    from ddcompress.codec.container import Container, Header

    def frame(n, crc):
        return Container(Header("xz", n, crc), [len(packed)], [], [packed]).to_bytes()

    for blob in (frame(len(data) - 1, zlib.crc32(data)), frame(len(data), zlib.crc32(data) ^ 1), frame(len(data) + 1, 0)):
        got = []
        with pytest.raises(IntegrityError):
            for piece in api.iter_decompress(blob):
                got.append(piece)
        assert sum(map(len, got)) < len(data) - 1


# -- item 9: auto mode decides cheaply -------------------------------------------------------------------


def _count_coded_chunks(monkeypatch) -> list[int]:
    seen = []
    real = codec.Coder.encode_groups

    def counting(self, tokens, groups, progress=None):
        seen.append(sum(len(g) for g in groups))
        return real(self, tokens, groups, progress)

    monkeypatch.setattr(codec.Coder, "encode_groups", counting)
    return seen


def test_auto_skips_the_model_when_even_its_best_case_loses(tiny_lm, monkeypatch):
    """A long run of one letter: xz's frame is smaller than any mdm frame can be (framing and the
    coder's least cost per token), so no chunk is coded (it coded all 157 before choosing xz)."""
    seen = _count_coded_chunks(monkeypatch)
    data = b"a" * 40_000
    blob = ddcompress.compress(data, model=tiny_lm)
    assert ddcompress.info(blob)["method"] == "xz" and seen == []
    assert ddcompress.decompress(blob) == data


def test_auto_samples_one_chunk_before_coding_the_whole_input(tiny_lm, monkeypatch):
    """When the sample chunk predicts a loss (here: any prediction, AUTO_MARGIN ~ 0, so that the test
    does not rest on how well a random tiny model and format 5's mixing code this text), the rest of the
    input is never coded."""
    seen = _count_coded_chunks(monkeypatch)
    monkeypatch.setattr(api, "AUTO_MARGIN", 1e-9)
    data = words(40 * L, seed=9)
    blob = ddcompress.compress(data, model=tiny_lm)
    assert ddcompress.info(blob)["method"] == "xz" and seen == [1]
    assert ddcompress.decompress(blob) == data


def test_auto_still_runs_the_model_when_the_sample_predicts_a_win(tiny_lm, monkeypatch):
    seen = _count_coded_chunks(monkeypatch)
    monkeypatch.setattr(api, "_sample_says_xz", lambda *a: False)
    data = words(5 * L, seed=2)
    ddcompress.compress(data, model=tiny_lm)
    assert sum(seen) == 5  # every chunk, no sample
    monkeypatch.undo()

    class Fake:  # a sample that costs 0.01 bits a token predicts a win over xz
        def encode_groups(self, tokens, groups):
            return [codec.GroupResult(b"", 0.01 * L, [0])]

    assert not api._sample_says_xz(Fake(), list(range(10 * L)), L, 8, 500)
    assert api._sample_says_xz(Fake(), list(range(10 * L)), L, 8, 50)
    assert not api._sample_says_xz(Fake(), list(range(3 * L)), L, 8, 1)  # under 4 chunks: never sampled


def test_auto_after_a_sample_writes_the_file_mdm_writes(tiny_lm, monkeypatch):
    """The sample chunk runs on the coder that then codes the whole input: nothing of it may carry over
    (format 5's adaptive state starts afresh at chunk 0), so the file is the one "mdm" writes."""
    data = words(6 * L + 9, seed=4)
    want = ddcompress.compress(data, model=tiny_lm, method="mdm", seed=2)
    seen = _count_coded_chunks(monkeypatch)
    monkeypatch.setattr(api, "AUTO_MARGIN", float("inf"))  # the sample runs and never says xz
    real = api._fallback
    monkeypatch.setattr(api, "_fallback", lambda d, m: real(d, m) + bytes(1 << 20))  # xz never wins
    assert ddcompress.compress(data, model=tiny_lm, seed=2) == want
    assert seen[0] == 1 and sum(seen) == 1 + 7
    assert ddcompress.decompress(want, model=tiny_lm) == data


def test_xz_frame_asking_for_a_huge_dictionary_is_refused():
    """xz's own memory is bounded too (api.XZ_MEMLIMIT): a frame whose stream asks for a 1.5 GiB
    dictionary fails with a one-line error before xz allocates it; ddc's own frames (preset 9e, a
    64 MiB dictionary) decode."""
    import lzma
    import zlib

    from ddcompress import api
    from ddcompress.codec.container import Container, Header
    from ddcompress.errors import IntegrityError

    data = b"hello " * 100
    for dict_size, ok in ((1536 << 20, False), (64 << 20, True)):
        packed = lzma.compress(data, format=lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": dict_size}])
        blob = Container(Header("xz", len(data), zlib.crc32(data)),
                         [len(packed)], [], [packed]).to_bytes()
        if ok:
            assert api.decompress(blob) == data
        else:
            with pytest.raises(IntegrityError, match="Memory usage limit"):
                api.decompress(blob)
