"""The entropy coders per token and on several threads at once. Issue 9 asks whether the per-group
streams can be coded concurrently by a thread pool or need processes.

    python benchmarks/coder_threads.py [--rows 512] [--reps 4] [--threads 1 2] [--out DIR]

Coders: ddc's rANS of format 4 (`ddcompress/codec/rans.py`; the C kernels when they load, as ddc runs it)
and constriction's range coder of formats 2 and 3 (read for old files). Each thread encodes and
decodes its own stream of --rows tokens over the full vocabulary (V = 50257 integer frequencies per
token, as ddc codes them) --reps times. Prints microseconds per token on one thread and the throughput
of k threads against one, and writes DIR/coder-threads-cpu.md (default benchmarks/results) with the
command.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import constriction
import numpy as np

from ddcompress.codec import rans

RESULTS = Path(__file__).resolve().parent / "results"
V = 50257


class Rans:
    name = "ddc rANS (format 4)"

    def encode(self, probs, syms) -> bytes:
        enc = rans.Encoder()
        enc.add(probs, syms)
        return enc.payload()

    def decode(self, data: bytes, probs) -> np.ndarray:
        dec = rans.Decoder(data)
        out = dec.decode(probs)
        assert dec.finished()
        return out


class Constriction:
    name = "constriction range coder (formats 2-3)"

    def __init__(self):
        self.family = constriction.stream.model.Categorical(perfect=False)

    def encode(self, probs, syms):
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(syms, self.family, probs)
        return enc.get_compressed()

    def decode(self, data, probs) -> np.ndarray:
        return constriction.stream.queue.RangeDecoder(data).decode(self.family, probs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, 2, os.cpu_count() or 1}))
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for coder-threads-cpu.md")
    args = ap.parse_args()
    args.threads = sorted(set(args.threads) | {1})  # (the baseline)
    most = max(args.threads)
    rng = np.random.default_rng(0)
    probs = [rng.integers(1, 1 << 24, (args.rows, V)).astype(np.float32) for _ in range(most)]
    syms = [rng.integers(0, V, args.rows).astype(np.int32) for _ in range(most)]
    pool = ThreadPoolExecutor(most)
    native = "C kernels" if rans._lib() is not None else "Python (no C kernels)"
    n = args.reps * args.rows
    lines = []
    for coder in (Rans(), Constriction()):
        data = [coder.encode(probs[i], syms[i]) for i in range(most)]

        def enc(i: int) -> None:
            for _ in range(args.reps):
                coder.encode(probs[i], syms[i])

        def dec(i: int) -> None:
            for _ in range(args.reps):
                assert np.array_equal(coder.decode(data[i], probs[i]), syms[i])

        for what, fn in (("encode", enc), ("decode", dec)):
            t = {k: min(_timed(lambda: list(pool.map(fn, range(k)))) for _ in range(3)) for k in args.threads}
            one = t[1]
            cells = [f"{k * n / t[k] / 1e3:.1f} ({k * n / t[k] / (n / one):.2f}x)" for k in args.threads]
            line = f"| {coder.name} | {what} | {one / n * 1e6:.1f} | " + " | ".join(cells) + " |"
            print(line, flush=True)
            lines.append(line)
    md = ["# Entropy coders per token and on several threads", "",
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {_cpu()}; ddc's rANS: {native}; constriction "
          f"{_version('constriction')}; {args.rows} tokens x {args.reps} per thread and stream, V = {V}.", "",
          "```", "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]), "```", "",
          "| coder | | us per token, 1 thread | " + " | ".join(f"k tokens/s, {k} thread{'s' * (k > 1)} (x 1 thread)"
                                                          for k in args.threads) + " |",
          "|---|---|---|" + "---|" * len(args.threads), *lines, "",
          "ddc's C coder releases the GIL (ctypes), so streams on threads run in parallel up to the memory",
          "bandwidth (each token reads its 200 KB row of frequencies); constriction holds it, so its threads",
          "take turns."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coder-threads-cpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _cpu() -> str:
    from ddcompress.bench.cli import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} logical CPUs"


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


if __name__ == "__main__":
    main()
