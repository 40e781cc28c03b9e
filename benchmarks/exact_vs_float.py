"""Exact integer path (numerics int8-exact-1) against the float denoiser: code length along the same
unmasking path, and time per forward pass, on this CPU.

    python benchmarks/exact_vs_float.py [--chunks 2] [--steps 16]

Writes benchmarks/results/exact-vs-float-cpu.md. The code length is sum -log2 p of the true tokens (no
entropy coder), for the float path's softmax and for the exact path's integer frequencies.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ddcompress.codec import prng
from ddcompress.model import registry
from ddcompress.api import crlf_transform_applies
from ddcompress.codec.reveal import reveal_counts
from ddcompress.codec.tokenizer import get_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
INPUTS = {"alice29.txt": SHARED / "canterbury" / "alice29.txt", "wiki.valid.tokens[200000:]": SHARED / "wikitext2" / "wiki.valid.tokens"}


def path_bits(lm, em, ids: np.ndarray, steps: int) -> tuple[float, float, float, float]:
    L = lm.cfg.seq_len
    bf = be = tf = te = 0.0
    for c in range(ids.shape[0]):
        perm = prng.permutation(0, c, L)
        truth = torch.from_numpy(ids[c].astype(np.int64))
        x = torch.full((1, L), lm.cfg.mask_id, dtype=torch.long)
        off = 0
        for k in reveal_counts(L, steps, "sine"):
            pos = torch.from_numpy(perm[off : off + k])
            off += k
            t = time.perf_counter()
            with torch.inference_mode():
                logp = torch.log_softmax(lm.model(x)[0, pos].double(), -1)
            tf += time.perf_counter() - t
            bf -= logp[torch.arange(k), truth[pos]].sum().item() / np.log(2)
            t = time.perf_counter()
            h8, s = em.hidden(x, pos[None])  # as the coder calls it: the last block on the revealed rows
            fr = em.frequencies(h8[0], s[0]).double()
            te += time.perf_counter() - t
            be -= torch.log2(fr[torch.arange(k), truth[pos]] / fr.sum(-1)).sum().item()
            x[0, pos] = truth[pos]
    return bf, be, tf, te


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()
    lm = registry.resolve(None)
    em = lm.exact("cpu")
    tok = get_tokenizer()
    L = lm.cfg.seq_len
    rows = []
    for name, path in INPUTS.items():
        data = path.read_bytes()
        if "wiki" in name:
            data = data[200000:]
        if crlf_transform_applies(data):  # as `ddc compress` codes it: CRLF as LF
            data = data.replace(b"\r\n", b"\n")
        ids = np.asarray(tok.encode(data[: 8 * L * args.chunks]))[: L * args.chunks].reshape(args.chunks, L)
        bf, be, tf, te = path_bits(lm, em, ids, args.steps)
        n = ids.size
        rows.append(f"| {name} | {n} | {bf / n:.4f} | {be / n:.4f} | {100 * (be / bf - 1):+.2f}% | {tf / (args.steps * args.chunks):.3f} | {te / (args.steps * args.chunks):.3f} |")
        print(rows[-1], flush=True)
    cmd = f"python benchmarks/exact_vs_float.py --chunks {args.chunks} --steps {args.steps}"
    out = Path(__file__).parent / "results" / "exact-vs-float-cpu.md"
    out.write_text(
        f"# Exact integer path vs float path ({lm.path.name}, id {lm.id})\n\n"
        f"Command: `{cmd}`  \nMachine: {platform.machine()}, {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}  \n"
        f"{args.chunks} chunks of {L} tokens per input, {args.steps} steps (sine grid), seed 0. Bits are sum -log2 p "
        "of the true tokens along the same path (no entropy coder). Time: seconds per forward pass incl. the head rows.\n\n"
        "| input | tokens | float bits/token | exact bits/token | exact vs float | float s/forward | exact s/forward |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
