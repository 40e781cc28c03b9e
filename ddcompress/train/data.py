"""Training data: documents -> GPT-2 tokens (uint16, cached) -> random L-token windows.

Sources: text files (one document per file), jsonl / jsonl.xz / jsonl.gz files with a `text` field
(the layout of shared/data/train), or a Hugging Face dataset name (`hf:NAME[:CONFIG][:SPLIT]`) when
online. Documents are joined by EOS (sequence packing: a window runs on into the next document after
the EOS). Batches (`WindowSampler`) are keyed by (seed, step) through the platform-stable PRNG, so a
resumed run sees exactly the batches it would have seen:

- "random": windows at uniformly drawn offsets of the stream (with replacement);
- "docs": document-aligned chunks, as the coder cuts a file (each document from its first token at
  multiples of L, the last piece running on past the EOS), in a fresh shuffled order each epoch.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..codec import prng
from ..errors import DDCError
from ..codec.tokenizer import EOS_ID, get_tokenizer

_BATCH_DOCS = 2048


def _open_text(path: Path):
    name = path.name
    if name.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8", errors="surrogateescape")


def iter_documents(source: str) -> Iterator[str]:
    """Yield the documents of one source (file path or hf:NAME[:CONFIG][:SPLIT])."""
    if source.startswith("hf:"):
        try:
            from datasets import load_dataset
        except ImportError:
            raise DDCError(f"{source}: hub datasets need the 'bench' extra "
                           "(pip install 'ddcompress[bench]'), or pass a local file") from None

        parts = source[3:].split(":")
        name, config = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)
        split = parts[2] if len(parts) > 2 else "train"
        for row in load_dataset(name, config, split=split, streaming=True):
            yield row["text"]
        return
    path = Path(source)
    if ".jsonl" in path.name:
        with _open_text(path) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["text"]
    else:
        with _open_text(path) as f:
            yield f.read()


def tokenize_source(source: str) -> np.ndarray:
    """All documents of a source as one uint16 array, each document followed by EOS."""
    tok = get_tokenizer()
    out: list[np.ndarray] = []
    batch: list[str] = []

    def flush():
        for ids in tok.encode_many(batch):
            out.append(ids.astype(np.uint16))
            out.append(np.array([EOS_ID], dtype=np.uint16))
        batch.clear()

    for doc in iter_documents(source):
        batch.append(doc.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        if len(batch) >= _BATCH_DOCS:
            flush()
    flush()
    return np.concatenate(out) if out else np.zeros(0, np.uint16)


def _cache_key(source: str) -> str:
    p = Path(source)
    stamp = f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" if p.exists() else source
    return hashlib.sha256(stamp.encode()).hexdigest()[:16]


def _pretokenized(src: str) -> np.ndarray | None:
    """Already tokenized sources: .npy (uint16) or .u16.xz (raw little-endian uint16, xz-compressed)."""
    if src.endswith(".npy"):
        return np.load(src, mmap_mode="r")
    if src.endswith(".u16.xz"):
        with lzma.open(src, "rb") as f:
            return np.frombuffer(f.read(), dtype="<u2").astype(np.uint16)
    return None


def load_tokens(sources: list[str], cache_dir: str | Path | None = None, log=print) -> np.ndarray:
    """Tokenize (or load from the uint16 cache) and concatenate several sources."""
    arrays = []
    for src in sources:
        pre = _pretokenized(src)
        if pre is not None:
            log(f"{src}: {len(pre):,} tokens (pre-tokenized)")
            arrays.append(np.asarray(pre))
            continue
        cached = Path(cache_dir) / f"{Path(src).name}.{_cache_key(src)}.u16.npy" if cache_dir else None
        if cached is not None and cached.exists():
            arr = np.load(cached, mmap_mode="r")
        else:
            arr = tokenize_source(src)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(".tmp.npy")
                np.save(tmp, arr)
                os.replace(tmp, cached)
        log(f"{src}: {len(arr):,} tokens")
        arrays.append(np.asarray(arr))
    return np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)


def write_u16_xz(path: str | Path, tokens: np.ndarray) -> int:
    """Store tokens as xz-compressed little-endian uint16 (read back by `load_tokens`); returns bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with lzma.open(tmp, "wb", preset=6) as f:
        f.write(np.ascontiguousarray(tokens, dtype="<u2").tobytes())
    os.replace(tmp, path)
    return path.stat().st_size


def batch_windows(tokens: np.ndarray, seq_len: int, batch: int, seed: int, step: int) -> np.ndarray:
    """(batch, seq_len) int64 windows at offsets drawn from (seed, step)."""
    n = len(tokens) - seq_len
    if n <= 0:
        raise ValueError(f"need more than {seq_len} tokens of data, have {len(tokens)}")
    offs = (prng.uniforms(seed, step, batch) * n).astype(np.int64)
    idx = offs[:, None] + np.arange(seq_len)[None, :]
    return np.asarray(tokens[idx], dtype=np.int64)


def document_chunk_starts(tokens: np.ndarray, seq_len: int, eos_id: int = EOS_ID) -> np.ndarray:
    """Start offsets of document-aligned chunks: each document (a run ending with EOS) cut at multiples of
    seq_len from its first token, like the coder's chunk layout; starts are clipped so every window fits."""
    n = len(tokens)
    if n <= seq_len:
        raise ValueError(f"need more than {seq_len} tokens of data, have {n}")
    starts = np.concatenate([[0], np.flatnonzero(np.asarray(tokens) == eos_id) + 1]).astype(np.int64)
    starts = starts[starts < n]
    lengths = np.diff(np.append(starts, n))
    counts = -(-lengths // seq_len)
    first = np.repeat(starts, counts)
    k = np.arange(len(first)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.unique(np.minimum(first + k * seq_len, n - seq_len))


class WindowSampler:
    """(batch, seq_len) int64 training windows keyed by (seed, step); see the module docstring."""

    PACKINGS = ("random", "docs")

    def __init__(self, tokens: np.ndarray, seq_len: int, packing: str = "random", seed: int = 0, eos_id: int = EOS_ID):
        if packing not in self.PACKINGS:
            raise ValueError(f"unknown packing {packing!r} (choose from {', '.join(self.PACKINGS)})")
        self.seq_len, self.packing, self.seed, self.eos_id = seq_len, packing, seed, eos_id
        self.set_tokens(tokens)

    def set_tokens(self, tokens: np.ndarray) -> None:
        """Swap in a new token stream (a campaign adds staged data while it trains)."""
        if len(tokens) <= self.seq_len:
            raise ValueError(f"need more than {self.seq_len} tokens of data, have {len(tokens)}")
        self.tokens = tokens
        self._starts = document_chunk_starts(tokens, self.seq_len, self.eos_id) if self.packing == "docs" else None
        self._perm: tuple[int, np.ndarray] | None = None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:  # streams of negative numbers: apart from the steps'
            self._perm = (epoch, prng.permutation(self.seed, -(epoch + 1), len(self._starts)))
        return self._perm[1]

    def batch(self, batch: int, step: int) -> np.ndarray:
        if self.packing == "random":
            return batch_windows(self.tokens, self.seq_len, batch, self.seed, step)
        m = len(self._starts)
        rows = []
        for i in range(step * batch, (step + 1) * batch):
            rows.append(self._starts[self._epoch_order(i // m)[i % m]])
        idx = np.asarray(rows, dtype=np.int64)[:, None] + np.arange(self.seq_len)[None, :]
        return np.asarray(self.tokens[idx], dtype=np.int64)


def eval_windows(tokens: np.ndarray, seq_len: int, count: int) -> np.ndarray:
    """The first `count` non-overlapping windows: a fixed held-out set."""
    count = min(count, len(tokens) // seq_len)
    return np.asarray(tokens[: count * seq_len], dtype=np.int64).reshape(count, seq_len)


def main(argv: list[str] | None = None) -> None:
    """`python -m ddcompress.train.data --cache DIR SOURCE...`: tokenize sources into the cache ahead of training."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--cache", required=True)
    ap.add_argument("sources", nargs="+")
    args = ap.parse_args(argv)
    load_tokens(args.sources, args.cache)


if __name__ == "__main__":
    main()
