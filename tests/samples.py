"""Inputs and helpers shared by the codec and CLI tests."""
from __future__ import annotations

import random
from pathlib import Path

from click.testing import CliRunner

from ddcompress.cli import main
from ddcompress.codec.container import leb128  # the writer's varints, for crafted files

__all__ = ["CONTENT", "ddc", "leb128", "names", "ok", "read_leb128", "words"]


def ddc(*args, input: bytes | None = None):
    """The command line in-process (click's runner): its result has exit_code, stdout and stderr."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def ok(res):
    assert res.exit_code == 0, (res.exit_code, res.stderr, res.exception)
    return res


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def words(n: int, seed: int = 0) -> bytes:
    """Text that is exactly n GPT-2 tokens (each ' word' is one token and no merges cross words)."""
    rng = random.Random(seed)
    vocab = [" the", " of", " and", " to", " in", " is", " it", " that", " was", " for", " on", " with"]
    return "".join(rng.choice(vocab) for _ in range(n)).encode()


CONTENT = {
    "empty": b"",
    "one_byte": b"a",
    "all_bytes": bytes(range(256)),
    "random": random.Random(0).randbytes(700),
    "invalid_utf8": b"caf\xe9 na\xefve \xff\xfe\x80 and valid text around it \xc3(\xa0\xa1",
    "crlf": b"first line\r\nsecond line\r\n\r\nfourth\r\n" * 8,
    "emoji_cjk": "Emoji 😀🎉👍🏽 and CJK 中文字符测试 日本語のテキスト 한국어 텍스트.\n".encode() * 4,
    "long_repeated": b"All work and no play makes Jack a dull boy.\n" * 120,
}


def read_leb128(blob: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the LEB128 varint at pos: the tests' own reader, apart from ddcompress."""
    value = shift = 0
    while True:
        b = blob[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos
