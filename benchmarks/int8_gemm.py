"""Throughput of the exact path's int8 GEMMs on this CPU: torch._int_mm (oneDNN) and the C kernels' AMX
tile GEMM, on the default model's shapes, with 1 thread and with 2 threads each running its own GEMM.

    python benchmarks/int8_gemm.py [--reps 20]

Checks that both give the same int32 sums, prints GMAC/s (10^9 multiply-adds per second) and writes
benchmarks/results/int8-gemm-cpu.md with the command. Two threads that together do no more than one
share one core's vector and matrix units (hyperthreads).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ddcompress.native import kernels as native

RESULTS = Path(__file__).resolve().parent / "results"
# (rows, K, N): qkv, proj, gate_up, down on a block of 512 rows; the output head on 64 rows
SHAPES = [(512, 512, 1536), (512, 512, 512), (512, 512, 2688), (512, 1344, 512), (64, 512, 50257)]


def rate(fn, macs: int, reps: int, threads: int) -> float:
    """Best GMAC/s over 3 tries of `reps` calls per thread, `threads` threads at once."""
    pool = ThreadPoolExecutor(threads)
    fn(0)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        list(pool.map(lambda i: [fn(i) for _ in range(reps)], range(threads)))
        best = min(best, time.perf_counter() - t0)
    pool.shutdown()
    return threads * reps * macs / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)  # each thread one single-threaded GEMM
    nk = native.kernels()
    amx = nk is not None and nk.amx
    g = torch.Generator().manual_seed(0)
    rows = []
    for M, K, N in SHAPES:
        a = [torch.randint(-127, 128, (M, K), dtype=torch.int8, generator=g) for _ in range(2)]
        w = torch.randint(-127, 128, (N, K), dtype=torch.int8, generator=g)
        wt = w.t()
        row = {"shape": f"{M} x {K} x {N}"}
        ref = torch._int_mm(a[0], wt)
        for threads in (1, 2):
            row[f"int_mm {threads}"] = rate(lambda i: torch._int_mm(a[i], wt), M * K * N, args.reps, threads)
        if amx:
            bp = nk.amx_pack(w)
            outs = [torch.empty(M, N, dtype=torch.int32) for _ in range(2)]
            assert torch.equal(nk.amx_matmul(a[0], bp, N, out=outs[0]), ref), "AMX sums differ"
            for threads in (1, 2):
                row[f"amx {threads}"] = rate(lambda i: nk.amx_matmul(a[i], bp, N, out=outs[i]), M * K * N, args.reps, threads)
        rows.append(row)
        print(row, flush=True)
    cols = ["int_mm 1", "int_mm 2"] + (["amx 1", "amx 2"] if amx else [])
    md = ["# int8 GEMM throughput on this CPU (GMAC/s)", "",
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} logical CPUs; torch {torch.__version__}; "
          f"AMX tiles: {'yes' if amx else 'no (not on this CPU, or DDC_AMX=0)'}. "
          "Columns: the GEMM and how many threads ran one each at once (GMAC/s of all of them together); "
          "the sums were checked equal.", "",
          "```", "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]), "```", "",
          "| rows x K x N | " + " | ".join(f"{c} thread{'s' if c.endswith('2') else ''}" for c in cols) + " |",
          "|---|" + "---|" * len(cols)]
    md += ["| " + r["shape"] + " | " + " | ".join(f"{r[c]:.0f}" for c in cols) + " |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "int8-gemm-cpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
