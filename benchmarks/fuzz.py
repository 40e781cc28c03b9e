"""Fuzzing at scale (issue 11): the two harnesses of tests/test_fuzz.py (their library: tests/support/fuzz.py), run many times.

    python benchmarks/fuzz.py --roundtrips 10000 --mutations 10000 [--jobs 2] [--seed 0] [--budget-min 25]
    python benchmarks/fuzz.py --repro mutation:1234 [--seed 0]      # rerun one case, with its traceback

* mutations: a random valid file (store, xz, mdm one group / several groups with a tail chunk / CRLF,
  concatenated frames), 1-3 mutations of its header fields and table entries with the header CRC
  recomputed (`fuzz.random_mutation`); decompress and info must give the right data or a one-line
  DDCError, within 2 s, allocating no more than a little (tracemalloc peak, growth of the resident set).
* round trips: random bytes (`fuzz.random_input`) through compress / decompress with random
  method, level or steps, seed and group size (`fuzz.random_params`).

Everything runs on a tiny randomly initialised model (L = 64, 2 layers, d = 32): the coding logic does
not depend on the model's quality. Case k of kind K draws from `random.Random(f"{K}:{seed}:{k}")`, so a
failure is rerun with `--repro K:k`. Stops starting new cases after --budget-min minutes and records
the exact counts. Writes benchmarks/results/fuzz-<UTC date>.md and .json (counts, failures with
reproducers, wall time, machine, the command line). Needs the test extra (`pip install -e '.[test]'`).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import fuzz as tf  # noqa: E402  (the shared generators and checks: tests/support/fuzz.py)

RESULTS = ROOT / "benchmarks" / "results"
KINDS = ("mutation", "roundtrip")
BATCH = 25  # cases per task
ROUNDTRIP_LIMIT_S = 60.0  # a round trip that runs longer is recorded as a hang

_W: dict = {}  # per worker process: model, bases, frames


def build_model():
    import torch

    from ddcompress.model.denoiser import Denoiser, DenoiserConfig

    from ddcompress.model.checkpoint import from_module

    torch.manual_seed(0)
    return from_module(Denoiser(DenoiserConfig(seq_len=64, n_layer=2, n_head=2, d_model=32, d_mlp=64)))


def init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    lm = build_model()
    bases = tf.make_bases(lm)
    _W.update(lm=lm, bases=bases, frames={n: tf.read_frames(b) for n, (b, _) in bases.items()})
    for name in bases:  # warm up (tokenizer, exact model, entropy coder)
        tf.run_mutation(name, [], bases, _W["frames"], lm)


def case_rng(kind: str, seed: int, k: int):
    import random

    return random.Random(f"{kind}:{seed}:{k}")


def run_case(kind: str, seed: int, k: int) -> dict:
    """One case; the record says what happened (and why, when it failed)."""
    rng = case_rng(kind, seed, k)
    t0 = time.perf_counter()
    rec: dict = {"case": f"{kind}:{k}"}
    try:
        if kind == "mutation":
            name, muts = tf.draw_hostile(rng, _W["frames"])
            rec.update(base=name, ops=[m[0] for m in muts])
            rec["outcome"] = tf.run_mutation(name, muts, _W["bases"], _W["frames"], _W["lm"])
        else:
            with tf.time_limit(ROUNDTRIP_LIMIT_S):
                data, params, method = tf.roundtrip_case(rng, _W["lm"])
            rec.update(outcome=method, bytes=len(data), params=params)
    except AssertionError as e:
        rec["failure"] = str(e)[:2000]
    except tf.Hang as e:
        rec["failure"] = f"hang: {e}"
    except Exception as e:  # noqa: BLE001 (a bug in the harness itself is recorded too)
        rec["failure"] = f"harness: {type(e).__name__}: {e}"[:2000]
    rec["seconds"] = time.perf_counter() - t0
    return rec


def run_batch(kind: str, seed: int, start: int, stop: int) -> dict:
    recs = [run_case(kind, seed, k) for k in range(start, stop)]
    return {"kind": kind, "records": recs, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peaks": dict(tf.PEAKS)}


def signature(failure: str) -> str:
    """A failure's message without its numbers and reproducer: failures with one cause group together."""
    return re.sub(r"\d+", "N", failure.split(" -- ")[0])[:200]


def machine() -> dict:
    import numpy
    import torch

    from ddcompress.bench.cli import cpu_name

    cpu = cpu_name()

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "git_commit": git("rev-parse", "HEAD"), "git_dirty": git("status", "--porcelain", "--untracked-files=no").splitlines()}


def summarize(kind: str, recs: list[dict]) -> dict:
    fails = [r for r in recs if "failure" in r]
    by_sig = collections.Counter(signature(r["failure"]) for r in fails)
    secs = sorted(r["seconds"] for r in recs)
    out = {"cases": len(recs), "failures": len(fails),
           "outcomes": dict(collections.Counter(r.get("outcome", "FAILED") for r in recs).most_common()),
           "distinct_failures": [{"signature": s, "count": n, "first": next(r["case"] for r in fails if signature(r["failure"]) == s)}
                                 for s, n in by_sig.most_common()],
           "seconds_mean": sum(secs) / len(secs) if secs else 0, "seconds_max": secs[-1] if secs else 0,
           "seconds_p99": secs[int(0.99 * (len(secs) - 1))] if secs else 0}
    if kind == "mutation":
        out["ops"] = dict(collections.Counter(op for r in recs for op in r.get("ops", [])).most_common())
        out["bases"] = dict(collections.Counter(r.get("base") for r in recs).most_common())
    else:
        out["input_bytes_total"] = sum(r.get("bytes", 0) for r in recs)
    return out


def write_report(report: dict, stem: Path) -> None:
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    m, s = report["machine"], report["summary"]
    lines = [f"# Fuzzing: hostile headers and random round trips ({report['date']})", "",
             f"Command: `{report['command']}`", "",
             f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {report['jobs']} worker processes of one torch "
             f"thread; Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}; git {m['git_commit'][:12]}"
             + (f" with uncommitted changes to {', '.join(x.split()[-1] for x in m['git_dirty'])}" if m["git_dirty"] else ""), "",
             f"Wall time: {report['wall_s']:.0f} s" + (" (stopped by --budget-min; counts below are the cases that ran)"
                                                      if report["stopped_by_budget"] else "") + "; peak resident set of a worker: "
             f"{report['worker_maxrss_mb']:.0f} MiB.", "",
             "Largest per call of decompress / info on a mutated file (bounds: 2 CPU s, 32 MiB traced, 128 MiB of "
             "resident-set growth; failures below include any call over them): {cpu_s:.2f} CPU s; {tracemalloc_mib:.1f} MiB "
             "traced by tracemalloc (Python and numpy) for files without an xz stream, {tracemalloc_mib_xz:.1f} MiB for files "
             "with one (lzma allocates its 64 MiB dictionary; the bound is 64 MiB higher there); {rss_growth_mib:.0f} MiB growth of the resident set's peak (torch included).".format(**report["hostile_peaks"]), "",
             "| harness | cases | failures | distinct causes | mean s/case | p99 s | max s |", "|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        k = s[kind]
        lines.append(f"| {kind} | {k['cases']} | {k['failures']} | {len(k['distinct_failures'])} | {k['seconds_mean']:.3f} | "
                     f"{k['seconds_p99']:.2f} | {k['seconds_max']:.2f} |")
    for kind in KINDS:
        k = s[kind]
        lines += ["", f"## {kind}", "", "Outcomes" + (" (decompress|info)" if kind == "mutation" else " (method of the file)")
                  + ": " + ", ".join(f"{o} {n}" for o, n in k["outcomes"].items())]
        if kind == "mutation":
            lines += ["", "Mutation kinds: " + ", ".join(f"{o} {n}" for o, n in k["ops"].items()),
                      "", "Files: " + ", ".join(f"{o} {n}" for o, n in k["bases"].items())]
        else:
            lines += ["", f"Input bytes in all: {k['input_bytes_total']}"]
        if k["distinct_failures"]:
            lines += ["", "| failures | first case (`--repro`) | message |", "|---|---|---|"]
            for d in k["distinct_failures"]:
                lines.append(f"| {d['count']} | `{d['first']}` | {d['signature'].replace('|', '/')} |")
    lines += ["", f"Reproduce a case: `python benchmarks/fuzz.py --seed {report['seed']} --repro KIND:K`. "
              "The JSON lists every failure with its full message (the mutations or the input and parameters).", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))


def repro(spec: str, seed: int) -> int:
    kind, k = spec.split(":")
    init_worker()
    rng = case_rng(kind, seed, int(k))
    if kind == "mutation":
        name, muts = tf.draw_hostile(rng, _W["frames"])
        print(f"base {name}, mutations {json.dumps(muts)}")
        import ddcompress

        blob = tf.apply(_W["frames"][name], muts)
        for fn, kw in ((ddcompress.decompress, {"model": _W["lm"]}), (ddcompress.info, {})):
            try:
                fn(blob, **kw)
                print(f"{fn.__name__}: ok")
            except ddcompress.DDCError as e:
                print(f"{fn.__name__}: {type(e).__name__}: {e}")
        print(run_case(kind, seed, int(k)))
    else:
        data, params = tf.random_input(rng), tf.random_params(rng)
        print(f"data {data!r}\nparams {params}")
        tf.check_roundtrip(data, params, _W["lm"])  # raises with a traceback
        print("ok")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--roundtrips", type=int, default=10000)
    ap.add_argument("--mutations", type=int, default=10000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-min", type=float, default=25.0, help="start no new cases after this many minutes")
    ap.add_argument("--out", type=Path, default=None, help="report path without suffix (default benchmarks/results/fuzz-<date>)")
    ap.add_argument("--repro", help="rerun one case, KIND:K (mutation:12, roundtrip:345)")
    args = ap.parse_args()
    if args.repro:
        return repro(args.repro, args.seed)

    now = datetime.now(timezone.utc)
    stem = args.out or RESULTS / f"fuzz-{now:%Y%m%d-%H%M%S}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    todo = {"mutation": args.mutations, "roundtrip": args.roundtrips}
    # interleave the two kinds, so that a run cut by the budget has done some of each
    tasks = []
    for start in range(0, max(todo.values()), BATCH):
        tasks += [(kind, start, min(start + BATCH, todo[kind])) for kind in KINDS if start < todo[kind]]
    records = {kind: [] for kind in KINDS}
    maxrss = 0.0
    peaks = dict(tf.PEAKS)
    t0 = time.perf_counter()
    deadline = t0 + 60 * args.budget_min
    stopped = False
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=init_worker) as pool:
        pending, queue = set(), list(tasks)
        while queue or pending:
            while queue and len(pending) < 2 * args.jobs:
                if time.perf_counter() > deadline:
                    stopped, queue = True, []
                    break
                kind, a, b = queue.pop(0)
                pending.add(pool.submit(run_batch, kind, args.seed, a, b))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                res = fut.result()
                records[res["kind"]] += res["records"]
                maxrss = max(maxrss, res["maxrss_mb"])
                peaks = {k: max(v, res["peaks"][k]) for k, v in peaks.items()}
            n = {k: len(v) for k, v in records.items()}
            f = {k: sum("failure" in r for r in v) for k, v in records.items()}
            print(f"\r{time.perf_counter() - t0:6.0f} s  mutations {n['mutation']} ({f['mutation']} failed)  "
                  f"round trips {n['roundtrip']} ({f['roundtrip']} failed)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    wall = time.perf_counter() - t0
    report = {"date": now.isoformat(timespec="seconds"), "command": " ".join(["python"] + sys.argv), "seed": args.seed,
              "requested": todo, "jobs": args.jobs, "budget_min": args.budget_min, "stopped_by_budget": stopped,
              "wall_s": wall, "worker_maxrss_mb": maxrss, "hostile_peaks": peaks, "machine": machine(),
              "summary": {k: summarize(k, v) for k, v in records.items()},
              "failures": [r for v in records.values() for r in v if "failure" in r]}
    write_report(report, stem)
    s = report["summary"]
    print(f"{s['mutation']['cases']} mutations ({s['mutation']['failures']} failed), {s['roundtrip']['cases']} round trips "
          f"({s['roundtrip']['failures']} failed) in {wall:.0f} s -> {stem}.md")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
