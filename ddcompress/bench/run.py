"""`ddc bench`: zero-shot perplexity bound and real coded size on the published evaluation corpora.

Per corpus, on one token stream (documents + EOS, cut into raw L-token chunks as SEDD does; a tail
shorter than L is dropped, as SEDD's chunking does):
  1. the continuous-time NELBO per GPT-2 token (Monte Carlo, antithetic t, adaptive until the standard
     error is under a target) -> the perplexity bound of the published tables;
  2. the bits ddc's entropy coder (rANS) actually writes at each step count -> coded perplexity and bits/byte;
  3. general-purpose compressors on the same bytes.
Results go to a terminal table, Markdown (MD4 table layout), JSON and a PNG plot.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .corpora import DatasetUnavailable, load_corpus, stream_bytes, token_stream
from ..train.elbo import estimate_nelbo_chunks
from ..codec.tokenizer import EOS_ID

@dataclass
class BenchOptions:
    """What `ddc bench` measures and how (the command line fills it; the report quotes it)."""

    steps: list[tuple[int, str]]  # (steps per chunk, grid) to code at
    split: str = "test"
    data_dir: str | None = None
    offline: bool = False
    max_tokens: int | None = None
    samples: int = 2  # antithetic t draws per chunk per NELBO pass
    batch: int = 4  # sequences per NELBO forward pass
    target: float = 0.005  # stop NELBO passes at this relative standard error
    max_passes: int = 32
    seed: int = 0
    device: str = "cpu"
    group_size: int = 8
    verify: bool = False
    baselines: bool = True
    model_name: str = "?"
    model_bytes: int | None = None
    extra: dict = field(default_factory=dict)


# progress(label, completed, total): a task's state; total 0 = the task is done
ProgressFn = Callable[[str, int, int], None]


PROTOCOL = (
    "Documents (WikiText articles, PTB sentences, LAMBADA passages, LM1B sentences) are detokenized, "
    "GPT-2 tokenized, each followed by EOS (50256), concatenated and cut into raw L-token chunks with no "
    "BOS/EOS wrap (SEDD's convention); a final piece shorter than L is dropped. Bits/byte divide by the "
    "UTF-8 bytes of the detokenized text plus one separator byte per document; the baselines compress "
    "exactly those bytes. Coded sizes are rANS payload bytes (container header not counted)."
)



def code_stream(lm, tokens: np.ndarray, steps: int, grid: str, seed: int, device: str, group_size: int,
                verify: bool = False, advance=None) -> dict:
    """Range-code tokens with ddc's coder (as `ddc compress` does, without the container); returns
    payload bytes, ideal bits, time, and a round-trip check."""
    from ..codec.coder import Coder, decode_all, encode_all
    from ..errors import IntegrityError
    from ..codec.layout import chunk_layout, group_layout
    from ..codec.plan import Plan, default_batch_chunks

    groups = group_layout(chunk_layout(len(tokens), lm.cfg.seq_len), group_size)
    coder = Coder(lm.exact(device), Plan(steps, grid), seed)
    batch = default_batch_chunks(device)
    t0 = time.monotonic()
    results = encode_all(coder, tokens, groups, batch, advance)
    secs = time.monotonic() - t0
    out = {"payload_bytes": sum(len(r.payload) for r in results), "ideal_bits": sum(r.ideal_bits for r in results),
           "denoiser_bits": sum(r.ideal_bits if r.denoiser_bits is None else r.denoiser_bits for r in results),
           "seconds": secs, "verified": None}
    if verify:
        dec = np.zeros(len(tokens), dtype=np.int64)
        try:
            decode_all(coder, dec, groups, [r.payload for r in results], [r.token_crcs for r in results], batch)
            out["verified"] = bool(np.array_equal(dec, tokens))
        except IntegrityError:
            out["verified"] = False
    return out


# -- baselines --------------------------------------------------------------------------------------


def _codecs() -> dict:
    """name -> (compress, decompress), or None where an optional module is missing."""
    c: dict = {
        "gzip -9": (lambda d: gzip.compress(d, 9, mtime=0), gzip.decompress),
        "bzip2 -9": (lambda d: bz2.compress(d, 9), bz2.decompress),
        "xz -9e": (lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
    }
    try:
        import zstandard

        c["zstd -22"] = (lambda d: zstandard.ZstdCompressor(level=22).compress(d), lambda b: zstandard.ZstdDecompressor().decompress(b))
    except ImportError:
        c["zstd -22"] = None
    try:
        import brotli

        c["brotli -11"] = (lambda d: brotli.compress(d, quality=11, lgwin=24), brotli.decompress)
    except ImportError:
        c["brotli -11"] = None
    try:
        import pyppmd  # PPMd var. I, order 6, 16 MiB (the NOTES anchor)

        c["PPMd o6"] = (lambda d: pyppmd.compress(d, max_order=6, mem_size=16 << 20),
                        lambda b: pyppmd.decompress(b, max_order=6, mem_size=16 << 20))
    except ImportError:
        c["PPMd o6"] = None
    return c


def baselines(data: bytes) -> dict:
    """Compressed size and bits/byte of each baseline on `data` (round trip checked); None if missing."""
    res = {}
    for name, fns in _codecs().items():
        if fns is None:
            res[name] = None
            continue
        packed = fns[0](data)
        if fns[1](packed) != data:
            raise RuntimeError(f"{name} failed its round trip")
        res[name] = {"bytes": len(packed), "bpb": 8 * len(packed) / len(data) if data else None}
    return res


# -- one corpus -------------------------------------------------------------------------------------


def usable_length(n: int, L: int) -> int:
    """Whole L-token chunks only (SEDD drops the remainder); a stream shorter than L is one chunk."""
    return n if n < L else n - n % L


def run_dataset(name: str, lm, opts: BenchOptions, progress: ProgressFn | None = None, done: dict | None = None) -> dict:
    """All metrics for one corpus; raises DatasetUnavailable if it cannot be had. `done` maps
    (source, split) to earlier records: WikiText-103 from a data dir is WikiText-2's file, measured once."""
    corpus = load_corpus(name, opts.split, opts.data_dir, opts.offline)
    if done is not None and (corpus.source, corpus.split) in done:
        return done[(corpus.source, corpus.split)] | {"dataset": name, "note": corpus.note}
    L = lm.cfg.seq_len
    tokens, truncated = token_stream(corpus.documents, opts.max_tokens)
    n = usable_length(len(tokens), L)
    dropped, tokens = len(tokens) - n, tokens[:n]
    if n == 0:
        raise DatasetUnavailable(f"{name}: no text found in {corpus.source}")
    data = stream_bytes(tokens)
    rec = {
        "dataset": name, "available": True, "split": corpus.split, "source": corpus.source, "note": corpus.note,
        "model": opts.model_name, "model_id": lm.id, "model_bytes": opts.model_bytes,
        "documents": int(np.count_nonzero(tokens == EOS_ID)), "bytes": len(data), "gpt2_tokens": int(n),
        "chunks": int(math.ceil(n / L)), "seq_len": L, "truncated": truncated, "max_tokens": opts.max_tokens,
        "dropped_tail_tokens": int(dropped),
    }
    chunks = tokens.reshape(-1, min(L, n)).astype(np.int64)
    progress = progress or (lambda label, completed, total: None)
    per_pass = chunks.size * opts.samples
    state = {"done": 0, "total": 2 * per_pass}  # two passes at least; grows as passes are added
    label = f"{name}: NELBO"

    def adv_nelbo(k):
        state["done"] += k
        if state["done"] > state["total"]:
            state["total"] += per_pass
        progress(label, state["done"], state["total"])

    t0 = time.monotonic()
    ne = estimate_nelbo_chunks(lm.model, chunks, opts.samples, opts.batch, opts.target, 2, opts.max_passes,
                      opts.seed, opts.device, adv_nelbo)
    progress(label, state["done"], 0)
    nat_tok = ne["nats"] / n
    rec.update({
        "nelbo_nats_per_token": nat_tok, "nelbo_stderr_nats_per_token": ne["stderr_nats"] / n,
        "nelbo_rel_stderr": ne["stderr_nats"] / ne["nats"], "nelbo_bits": ne["nats"] / math.log(2),
        "nelbo_bpb": ne["nats"] / math.log(2) / len(data), "nelbo_passes": ne["passes"],
        "nelbo_draws_per_chunk": ne["draws_per_chunk"], "nelbo_seconds": time.monotonic() - t0,
        "elbo_ppl": math.exp(nat_tok), "elbo_stderr": math.exp(nat_tok) * ne["stderr_nats"] / n,
    })
    coded = []
    for i, (steps, grid) in enumerate(opts.steps):
        label, coded_tokens = f"{name}: code {steps} steps", [0]

        def adv_code(k, label=label, coded_tokens=coded_tokens):
            coded_tokens[0] += k
            progress(label, coded_tokens[0], n)

        c = code_stream(lm, tokens, steps, grid, opts.seed, opts.device, opts.group_size, opts.verify and i == 0, adv_code)
        progress(label, n, 0)
        bits = 8 * c["payload_bytes"]
        coded.append({"steps": steps, "grid": grid, "payload_bytes": c["payload_bytes"], "coded_bits": bits,
                      "ideal_bits": c["ideal_bits"], "bits_per_token": bits / n, "coded_ppl": 2 ** (bits / n),
                      # without the mixing: the denoiser's own ideal code length (the coded size is within
                      # ~0.01 bit/token of it, as format 4 measured), and what format 5's mixing saved
                      "denoiser_bits": c["denoiser_bits"], "unmixed_ppl": 2 ** (c["denoiser_bits"] / n),
                      "mixing_saved": 1 - c["ideal_bits"] / c["denoiser_bits"],
                      "bpb": bits / len(data), "ratio_to_nelbo": bits / rec["nelbo_bits"],
                      "seconds": c["seconds"], "tokens_per_s": n / max(c["seconds"], 1e-9), "verified": c["verified"]})
    rec["steps"] = [c["steps"] for c in coded]
    rec["coded"] = coded
    rec["coded_ppl"] = {str(c["steps"]): c["coded_ppl"] for c in coded}
    rec["bpb"] = {str(c["steps"]): c["bpb"] for c in coded}
    rec["baselines"] = baselines(data) if opts.baselines else {}
    if done is not None:
        done[(corpus.source, corpus.split)] = rec
    return rec


