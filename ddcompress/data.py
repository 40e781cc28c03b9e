"""Training data: documents -> GPT-2 tokens (uint16, cached) -> random L-token windows.

Sources: text files (one document per file), jsonl / jsonl.xz / jsonl.gz files with a `text` field
(the layout of shared/data/train), or a Hugging Face dataset name (`hf:NAME[:CONFIG][:SPLIT]`) when
online. Documents are joined by EOS. Batches are windows at offsets drawn from the platform-stable
PRNG keyed by (seed, step), so a resumed run sees exactly the batches it would have seen.
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

from . import prng
from .tokenizer import EOS_ID, get_tokenizer

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
        from datasets import load_dataset

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


def batch_windows(tokens: np.ndarray, seq_len: int, batch: int, seed: int, step: int) -> np.ndarray:
    """(batch, seq_len) int64 windows at offsets drawn from (seed, step)."""
    n = len(tokens) - seq_len
    if n <= 0:
        raise ValueError(f"need more than {seq_len} tokens of data, have {len(tokens)}")
    offs = (prng.uniforms(seed, step, batch) * n).astype(np.int64)
    idx = offs[:, None] + np.arange(seq_len)[None, :]
    return np.asarray(tokens[idx], dtype=np.int64)


def eval_windows(tokens: np.ndarray, seq_len: int, count: int) -> np.ndarray:
    """The first `count` non-overlapping windows: a fixed held-out set."""
    count = min(count, len(tokens) // seq_len)
    return np.asarray(tokens[: count * seq_len], dtype=np.int64).reshape(count, seq_len)


def main(argv: list[str] | None = None) -> None:
    """`python -m ddcompress.data --cache DIR SOURCE...`: tokenize sources into the cache ahead of training."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--cache", required=True)
    ap.add_argument("sources", nargs="+")
    args = ap.parse_args(argv)
    load_tokens(args.sources, args.cache)


if __name__ == "__main__":
    main()
