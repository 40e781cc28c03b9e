"""Time and profile one step of the exact denoiser as the coder runs it at level 5 on a CPU.

    python benchmarks/exact_profile.py [--chunks 8] [--reveal 64] [--reps 3] [--threads N] [--device cuda]

`ExactDenoiser.hidden` of the shipped model on --chunks 1024-token chunks of WikiText-2 validation text
(random tokens where the shared data is missing, or with --random: their attention is flatter, so the
digits and the value GEMM's skipped blocks differ from a real file's), half of their tokens masked,
with the last block at --reveal positions per chunk (one level-5 step reveals 64 of 1024), then the head
on 512 rows. Prints the best of --reps timings after a warm-up, then torch's operator table of one more
step, then the share of each part of the network in one step (wall time of the methods of
`ExactDenoiser`: attention, the row-wise layers before it (LayerNorm + qkv) and after it (proj + GLU MLP),
the rest (embedding, final LayerNorm)). The machine is shared and noisy: compare builds in alternation,
several times.

    python benchmarks/exact_profile.py --compare [--reps 4]

instead times the same step (hidden + head) in alternation with the C kernels and the AMX tiles, the C
kernels without the tiles (as DDC_AMX=0) and the torch operations (as DDC_NATIVE=0), in one process so
that the VM's drift hits all alike; asserts the frequencies identical, prints the best of --reps each and
writes benchmarks/results/exact-compare-cpu-<threads>t.md with the command.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ddcompress.model import registry

VALID = Path(os.environ.get("DDC_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "eval" / "wikitext2" / "wiki.valid.tokens"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--reveal", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compare", action="store_true", help="kernels with / without the AMX tiles / torch operations")
    ap.add_argument("--random", action="store_true", help="random tokens instead of WikiText-2 validation text")
    ap.add_argument("--text", type=Path, default=VALID, help="the text to tokenize (default: WikiText-2 valid)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = registry.resolve(None)
    ex = lm.exact(args.device)
    g = torch.Generator().manual_seed(0)
    L = lm.cfg.seq_len
    x = tokens(args.chunks * L, g, lm.cfg.vocab_size, args.random, args.text).view(args.chunks, L)
    x[torch.rand(x.shape, generator=g) < 0.5] = lm.cfg.mask_id
    at = torch.stack([torch.randperm(L, generator=g)[: args.reveal] for _ in range(args.chunks)])
    x, at = x.to(args.device), at.to(args.device)
    if args.compare:
        compare(ex, x, at, args.reps, args.random or not args.text.is_file(), args.text)
        return
    ex.hidden(x, at=at)  # warm-up
    best = float("inf")
    for _ in range(args.reps):
        t0 = time.perf_counter()
        h8, s = ex.hidden(x, at=at)
        _sync(x)
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    ex.frequencies(h8.reshape(-1, h8.shape[-1])[:512], s.reshape(-1, 1)[:512])
    _sync(x)
    head = time.perf_counter() - t0
    print(f"hidden: best of {args.reps} {best:.3f} s ({args.chunks} x {L} tokens, {args.reveal} revealed rows each); "
          f"head on 512 rows {head:.3f} s; {torch.get_num_threads()} threads; device {args.device}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ex.hidden(x, at=at)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(parts(ex, x, at))
    print()
    print(operations(ex, x, at))


def tokens(n: int, g: torch.Generator, vocab: int, random: bool, path: Path = VALID) -> torch.Tensor:
    """n tokens of a text (from its start, repeated if it is shorter), or random ids."""
    if not random and path.is_file():
        from ddcompress.codec.tokenizer import get_tokenizer

        ids = get_tokenizer().encode(path.read_bytes()[: 8 * n])  # ~4 bytes per token
        if len(ids):
            print(f"tokens: the first {n} of {path}" + (" (repeated)" if len(ids) < n else ""))
            return torch.from_numpy(ids.astype("int64")).repeat(-(-n // len(ids)))[:n]
    print("tokens: random")
    return torch.randint(0, vocab, (n,), generator=g)


def _sync(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def parts(ex, x: torch.Tensor, at: torch.Tensor) -> str:
    """Wall time per part of one step, as a Markdown table."""
    spent: dict[str, float] = {}
    names = {"attention": "attention (scores, exp-table weights, value GEMMs)",
             "attention_from_norm": "LayerNorm + attention with each head's q, k, v (AMX tiles)",
             "attention_input": "LayerNorm + qkv (row blocks)", "residual_updates": "proj + LayerNorm + GLU MLP (row blocks)"}
    for method, label in names.items():
        inner = getattr(ex, method)

        def timed(*a, _inner=inner, _label=label, **k):
            _sync(x)
            t0 = time.perf_counter()
            try:
                return _inner(*a, **k)
            finally:
                _sync(x)
                spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - t0

        setattr(ex, method, timed)  # an instance attribute shadows the method
    try:
        t0 = time.perf_counter()
        h8, s = ex.hidden(x, at=at)
        _sync(x)
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        ex.frequencies(h8.reshape(-1, h8.shape[-1]), s.reshape(-1, 1))
        _sync(x)
        spent[f"output head ({h8.shape[0] * h8.shape[1]} rows)"] = head = time.perf_counter() - t0
    finally:
        for method in names:
            delattr(ex, method)
    spent["rest (embedding, final LayerNorm)"] = total - sum(v for k, v in spent.items() if not k.startswith("output"))
    total += head
    rows = [f"| {k} | {v:.3f} | {100 * v / total:.0f}% |" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])]
    return "\n".join(["| part of one step | s | share |", "|---|---|---|", *rows, f"| total | {total:.3f} | 100% |"])


def compare(ex, x: torch.Tensor, at: torch.Tensor, reps: int, random: bool, text: Path = VALID) -> None:
    """Best of `reps` steps for each way the CPU can run the exact arithmetic, in alternation."""
    nk = ex.nk
    if nk is None:
        raise SystemExit("the C kernels are not in use here (no compiler, DDC_NATIVE=0, or not a CPU)")
    amx = nk.amx
    ways = [("C kernels, AMX tiles", nk, True)] if amx else []
    ways += [("C kernels, no AMX (DDC_AMX=0)", nk, False), ("torch operations (DDC_NATIVE=0)", None, amx)]
    best, want = {}, None
    try:
        for _ in range(reps):
            for name, kernels, tiles in ways:
                ex.nk, nk.amx = kernels, tiles
                t0 = time.perf_counter()
                got = ex.frequencies(*ex.hidden(x, at=at))
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
                want = got if want is None else want
                assert torch.equal(got, want), f"{name}: other frequencies"
    finally:
        ex.nk, nk.amx = nk, amx
    first = best[ways[0][0]]
    rows = [f"| {name} | {t:.3f} | {t / first:.2f}x |" for name, t in best.items()]
    md = ["# One exact step on this CPU: C kernels, AMX tiles, torch operations", "",
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {torch.get_num_threads()} threads; "
          f"{x.shape[0]} x {x.shape[1]} tokens ({'random' if random else text.name}), half masked, "
          f"{at.shape[1]} revealed rows each, then the head on those rows; "
          f"best of {reps}, the ways in alternation in one process; frequencies identical.", "",
          "```", "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]), "```", "",
          "| arithmetic | s per step | time / first |", "|---|---|---|", *rows]
    print("\n".join(md))
    out = Path(__file__).resolve().parent / "results" / f"exact-compare-cpu-{torch.get_num_threads()}t.md"
    out.write_text("\n".join(md) + "\n")


def operations(ex, x: torch.Tensor, at: torch.Tensor) -> str:
    """Wall time of one step (hidden + head) spent in the int8 GEMMs, in each C kernel (ex.nk, when
    built) and in the rest (torch operations, Python), as a Markdown table. CPU: with several
    threads the times of concurrent calls add up, so the shares are of thread-time."""
    spent: dict[str, float] = {}

    def timer(fn, name):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return timed

    kernels = [k for k in dir(ex.nk) if not k.startswith("_") and callable(getattr(ex.nk, k)) and k != "lib"] if ex.nk else []
    saved = torch._int_mm
    torch._int_mm = timer(saved, "int8 GEMMs (torch._int_mm)")
    for k in kernels:
        setattr(ex.nk, k, timer(getattr(ex.nk, k), f"C kernel {k}"))
    try:
        t0 = time.perf_counter()
        ex.frequencies(*ex.hidden(x, at=at))
        _sync(x)
        total = time.perf_counter() - t0
    finally:
        torch._int_mm = saved
        for k in kernels:
            delattr(ex.nk, k)
    threads = torch.get_num_threads() if x.device.type == "cpu" else 1
    spent["rest (torch operations, Python)"] = max(0.0, total * threads - sum(spent.values()))
    rows = [f"| {k} | {v:.3f} | {100 * v / (total * threads):.0f}% |" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])]
    return "\n".join([f"one step {total:.3f} s wall, {threads} thread(s)", "",
                      "| where | thread-s | share |", "|---|---|---|", *rows])


if __name__ == "__main__":
    main()
