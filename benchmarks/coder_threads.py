"""Does the range coder (constriction) run in parallel on threads? Issue 9 asks whether the per-group
streams can be coded concurrently by a thread pool or need processes.

    python benchmarks/coder_threads.py [--rows 512] [--reps 4]

Encodes and decodes --rows tokens over the full vocabulary (V = 50257 integer frequencies per token, as
ddc codes them) --reps times on one thread, then the same work twice at once on two threads, each with
its own stream. Prints microseconds per token and the throughput of two threads relative to one, and
writes benchmarks/results/coder-threads-cpu.md with the command.
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

RESULTS = Path(__file__).resolve().parent / "results"
V = 50257


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for coder-threads-cpu.md")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    probs = [rng.integers(1, 1 << 24, (args.rows, V)).astype(np.float32) for _ in range(2)]
    syms = [rng.integers(0, V, args.rows).astype(np.int32) for _ in range(2)]
    family = constriction.stream.model.Categorical(perfect=False)

    def encode(i: int):
        for _ in range(args.reps):
            enc = constriction.stream.queue.RangeEncoder()
            enc.encode(syms[i], family, probs[i])
        return enc.get_compressed()

    def decode(i: int, data) -> None:
        for _ in range(args.reps):
            out = constriction.stream.queue.RangeDecoder(data).decode(family, probs[i])
        assert np.array_equal(out, syms[i])

    data = [encode(i) for i in range(2)]
    pool = ThreadPoolExecutor(2)
    lines = []
    runs = {"encode": (lambda: encode(0), lambda: list(pool.map(encode, [0, 1]))),
            "decode": (lambda: decode(0, data[0]), lambda: list(pool.map(decode, [0, 1], data)))}
    for name, (one, two) in runs.items():
        t1 = min(_timed(one) for _ in range(3))
        t2 = min(_timed(two) for _ in range(3))
        n = args.reps * args.rows
        line = (f"| {name} | {t1 / n * 1e6:.1f} | {2 * n / t2 / 1e3:.1f} | {n / t1 / 1e3:.1f} | {t1 * 2 / t2:.2f}x |")
        print(line, flush=True)
        lines.append(line)
    md = ["# Range coder (constriction) on 1 and 2 threads", "",
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} logical CPUs; constriction "
          f"{_version('constriction')}; {args.rows} tokens x {args.reps} per thread, V = {V}.", "",
          "```", "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]), "```", "",
          "| | us per token, 1 thread | k tokens/s, 2 threads | k tokens/s, 1 thread | 2 threads / 1 |",
          "|---|---|---|---|---|", *lines, "",
          "About 1x: the coder holds the GIL, so a thread pool does not code streams in parallel; that needs",
          "processes (with the frequencies in shared memory) or a coder that releases the GIL."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coder-threads-cpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


if __name__ == "__main__":
    main()
