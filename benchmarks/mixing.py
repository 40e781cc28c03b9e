"""What format 5's context mixing saves: each text compressed with the mixer (and, with --baseline, again
with the denoiser alone), the file's ideal code lengths under both, time, and an optional round trip.

    python benchmarks/mixing.py --level 5 --verify ../shared/data/eval/canterbury/lcet10.txt
    python benchmarks/mixing.py --level 5 --baseline --head 3000 ../shared/data/eval/canterbury/alice29.txt
    python benchmarks/mixing.py --level 5 --against 0e8ac50 ../shared/data/eval/canterbury/plrabn12.txt

--baseline: also format 5 without the mixer (the spread order alone); --against REV: also the build at
git revision REV (checked out in a temporary worktree), e.g. format 4's (the denoiser alone, plain order).

Writes benchmarks/results/mixing-<stamp>.{json,md} (or --out) with the command, the machine and the data.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ddcompress
from ddcompress.bench.cli import cpu_name
from ddcompress.codec.container import parse


ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import ddcompress
data = open(sys.argv[2], 'rb').read()
data = data[: int(sys.argv[3])] if int(sys.argv[3]) else data
t0 = time.perf_counter()
blob = ddcompress.compress(data, level=int(sys.argv[4]), method="mdm")
print(json.dumps({"bytes": len(blob), "seconds": time.perf_counter() - t0, "ideal_bits": ddcompress.info(blob)["ideal_bits"]}))
"""


def other_build(rev: str, path: Path, level: int, head: int | None) -> dict:
    """Compress with the build at git revision `rev`, in a temporary worktree and its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            out = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(path), str(head or 0), str(level)],
                                 check=True, capture_output=True, text=True).stdout
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    return json.loads(out.strip().splitlines()[-1])


def run(path: Path, level: int, head: int | None, baseline: bool, verify: bool, against: str | None = None) -> dict:
    data = path.read_bytes()[:head] if head else path.read_bytes()
    t0 = time.perf_counter()
    blob = ddcompress.compress(data, level=level, method="mdm")
    secs = time.perf_counter() - t0
    h = parse(blob).header
    row = {"file": path.name, "bytes": len(data), "tokens": h.tokens, "level": level, "ddc_bytes": len(blob),
           "bits_per_byte": 8 * len(blob) / len(data), "ideal_bits_mixed": h.ideal_bits,
           "ideal_bits_denoiser": h.denoiser_bits, "saved": 1 - h.ideal_bits / h.denoiser_bits,
           "compress_s": secs, "kb_per_s": len(data) / 1024 / secs}
    if baseline:
        t0 = time.perf_counter()
        plain = ddcompress.compress(data, level=level, method="mdm", mixer=None)
        row.update(baseline_bytes=len(plain), baseline_s=time.perf_counter() - t0,
                   saved_bytes=1 - len(blob) / len(plain))
    if against:
        o = other_build(against, path, level, head)
        row.update(against=against, against_bytes=o["bytes"], against_s=o["seconds"], against_ideal_bits=o["ideal_bits"],
                   saved_against=1 - len(blob) / o["bytes"])
    if verify:
        t0 = time.perf_counter()
        row["round_trip"] = ddcompress.decompress(blob) == data
        row["decompress_s"] = time.perf_counter() - t0
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--level", type=int, default=5)
    ap.add_argument("--head", type=int, help="only the first HEAD bytes of each file")
    ap.add_argument("--baseline", action="store_true", help="also compress without the mixer (twice the time)")
    ap.add_argument("--verify", action="store_true", help="decompress and compare")
    ap.add_argument("--against", metavar="REV", help="also compress with the build at this git revision")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rows = [run(p, a.level, a.head, a.baseline, a.verify, a.against) for p in a.files]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = a.out or Path(__file__).resolve().parent / "results" / f"mixing-{stamp}"
    meta = {"command": "python " + " ".join(sys.argv), "machine": f"{cpu_name()}, {platform.machine()}",
            "ddc": ddcompress.__version__, "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = [f"# Context mixing (format 5, mixer cm1): what it saves", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}; ddc {meta['ddc']}", "",
             "| file | bytes | tokens | level | ddc bytes | bits/byte | denoiser bits/token | mixed bits/token | saved | KB/s |"
             + (" without mixer bytes | saved bytes |" if a.baseline else "")
             + (f" {a.against} bytes | smaller than {a.against} |" if a.against else "") + (" round trip |" if a.verify else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if a.baseline else "") + ("---|---|" if a.against else "")
             + ("---|" if a.verify else "")]
    for r in rows:
        line = (f"| {r['file']} | {r['bytes']:,} | {r['tokens']:,} | {r['level']} | {r['ddc_bytes']:,} | "
                f"{r['bits_per_byte']:.3f} | {r['ideal_bits_denoiser'] / r['tokens']:.3f} | "
                f"{r['ideal_bits_mixed'] / r['tokens']:.3f} | {100 * r['saved']:.1f}% | {r['kb_per_s']:.2f} |")
        if a.baseline:
            line += f" {r['baseline_bytes']:,} | {100 * r['saved_bytes']:.1f}% |"
        if a.against:
            line += f" {r['against_bytes']:,} | {100 * r['saved_against']:.1f}% |"
        if a.verify:
            line += f" {'exact' if r['round_trip'] else 'FAILED'} |"
        lines.append(line)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
