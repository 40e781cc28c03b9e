"""A/B two builds of ddc on one machine: the working tree against a git revision, run in alternation
(this shared VM's speed drifts by 10-30% within an hour, so only interleaved rounds compare).

    python benchmarks/ab_builds.py --old REV [--levels 1 5] [--rounds 3] [--bytes 30000] [--file F] [--tag T]

REV is checked out into a temporary git worktree. Each round runs one process per build (old first):
a warm-up compress, then per level compress and decompress of the first --bytes of --file (default
lcet10.txt), asserting the round trip. Reports KB/s, the entropy coder's seconds, the file size and the
coded bits over the model's ideal bits (the coder's overhead), and writes
benchmarks/results/ab-<tag>.md and .json with the command.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("DDC_SHARED", ROOT.parent / "shared")) / "data" / "eval"

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import ddcompress
try:  # the package's layout since issue 23
    from ddcompress.codec import coder as codec
    from ddcompress.model import registry
    from ddcompress.codec.container import parse
except ImportError:  # a revision from before it (flat modules)
    from ddcompress import codec, registry
    from ddcompress.container import parse
data = open(sys.argv[2], 'rb').read()[: int(sys.argv[3])]
lm = registry.resolve(None)
ddcompress.compress(data[:3000], level=1, model=lm, method="mdm")  # warm-up: kernels built, weights packed
out = {"ddcompress": ddcompress.__file__, "version": ddcompress.__version__}


def coder_seconds(fn, *args, **kw):  # fn's result and the entropy coder's seconds: the API's timings, or codec.SECONDS (older revisions)
    if hasattr(codec, "SECONDS"):
        codec.SECONDS.clear()
        return fn(*args, **kw), codec.SECONDS["coder"]
    t = {}
    return fn(*args, timings=t, **kw), t.get("coder", 0.0)


def field(h, name):  # the header: a dict before issue 23's typed header, then an object
    return h[name] if isinstance(h, dict) else getattr(h, name)


for level in map(int, sys.argv[4].split(",")):
    getattr(lm.exact("cpu"), "_blank", {}).clear()  # as a fresh run
    t0 = time.perf_counter()
    blob, cc = coder_seconds(ddcompress.compress, data, level=level, model=lm, method="mdm")
    tc = time.perf_counter() - t0
    t0 = time.perf_counter()
    back, cd = coder_seconds(ddcompress.decompress, blob, model=lm)
    td = time.perf_counter() - t0
    assert back == data
    c = parse(blob)
    out[level] = {"compress_kbs": len(data) / 1024 / tc, "decompress_kbs": len(data) / 1024 / td,
                  "compress_coder_s": cc, "decompress_coder_s": cd, "bytes": len(blob),
                  "format": field(c.header, "format_version"), "tokens": field(c.header, "tokens"),
                  "payload_bits": 8 * sum(map(len, c.payloads)), "ideal_bits": field(c.header, "ideal_bits")}
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="git revision to compare against")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=30000)
    ap.add_argument("--file", type=Path, default=SHARED / "canterbury" / "lcet10.txt")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.old], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "ddcompress"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip())
    new_name = head + ("+changes" if dirty else "")
    tag = args.tag or f"{rev}-vs-{head}"
    runs: dict[str, list[dict]] = {rev: [], new_name: []}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "-f", "--detach", str(tree), rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for r in range(args.rounds):
                for name, path in ((rev, tree), (new_name, ROOT)):
                    res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.file), str(args.bytes),
                                          ",".join(map(str, args.levels))], capture_output=True, text=True)
                    if res.returncode:
                        sys.exit(f"{name} failed:\n{res.stderr[-2000:]}")
                    runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
                    row = runs[name][-1]
                    print(f"round {r + 1} {name}: " + "; ".join(
                        f"L{lv} {row[str(lv)]['compress_kbs']:.2f} / {row[str(lv)]['decompress_kbs']:.2f} KB/s"
                        for lv in args.levels), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    md = [f"# A/B: {new_name} against {rev}", "",
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {_cpu()}; {args.file.name}, first {args.bytes} bytes; "
          f"{args.rounds} rounds, the two builds alternating, one process each.", "",
          "```", "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]), "```", "",
          "| level | build | format | compress KB/s | decompress KB/s | coder s (c / d) | bytes | coded - ideal, bit/token |",
          "|---|---|---|---|---|---|---|---|"]
    for lv in map(str, args.levels):
        for name in runs:
            rows = [r[lv] for r in runs[name]]
            c = ", ".join(f"{x['compress_kbs']:.2f}" for x in rows)
            d = ", ".join(f"{x['decompress_kbs']:.2f}" for x in rows)
            cs = statistics.median(x["compress_coder_s"] for x in rows)
            ds = statistics.median(x["decompress_coder_s"] for x in rows)
            x = rows[0]
            over = (x["payload_bits"] - x["ideal_bits"]) / x["tokens"]
            md.append(f"| {lv} | {name} | {x['format']} | {c} (median {statistics.median(r['compress_kbs'] for r in rows):.2f}) "
                      f"| {d} (median {statistics.median(r['decompress_kbs'] for r in rows):.2f}) | {cs:.2f} / {ds:.2f} "
                      f"| {x['bytes']} | {over:.4f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ab-{tag}.md").write_text("\n".join(md) + "\n")
    (RESULTS / f"ab-{tag}.json").write_text(json.dumps({"command": sys.argv, "runs": runs}, indent=1) + "\n")
    print("\n".join(md))


def _cpu() -> str:
    from ddcompress.bench.cli import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} logical CPUs"


if __name__ == "__main__":
    main()
