"""CPU <-> GPU portability check (numerics int8-exact-1): files made on the CPU decode on CUDA and files
made on CUDA decode on the CPU, byte-exactly, and both encoders write the same bytes.

    python benchmarks/portable_check.py [--out DIR] [--files F ...] [--bytes 20000]

Inputs: the golden originals (tests/golden/v3) and the first --bytes of each --files (default: the
WikiText-2 test text and lcet10.txt when ../shared is there). For each input and level 1 / 5 it
compresses on both devices (same group size, then each device's default), decodes each file on the
other device, and prints the SHA-256 of every file. Also decodes every golden .ddc on CUDA. Writes
portable-check-<gpu>.md/.json to --out (default benchmarks/results). Needs a CUDA device.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

import ddcompress
from ddcompress.model import registry

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDC_SHARED", ROOT.parent / "shared")) / "data" / "eval"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--files", nargs="*", type=Path,
                    default=[SHARED / "wikitext2" / "wiki.test.raw", SHARED / "canterbury" / "lcet10.txt"])
    ap.add_argument("--bytes", type=int, default=20000)
    ap.add_argument("--levels", nargs="+", type=int, default=[1, 5])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("portable_check: needs a CUDA device")
    gpu = torch.cuda.get_device_name(0)
    lm = registry.resolve(None)
    golden = sorted((ROOT / "tests" / "golden").glob("v*/*.ddc"))
    inputs = {p.name: p.read_bytes() for p in sorted((ROOT / "tests" / "golden" / "v3").glob("*")) if p.suffix in (".txt", ".bin")}
    inputs |= {f"{p.name}[:{args.bytes}]": p.read_bytes()[: args.bytes] for p in args.files if p.is_file()}
    rows, ok = [], True
    for name, data in inputs.items():
        for level in args.levels:
            for group in (8, None):  # the same group size on both, then each device's default (8 / 64)
                t0 = time.perf_counter()
                cpu = ddcompress.compress(data, level=level, model=lm, device="cpu", group_size=group)
                t1 = time.perf_counter()
                gpu_blob = ddcompress.compress(data, level=level, model=lm, device="cuda", group_size=group)
                t2 = time.perf_counter()
                on_gpu = ddcompress.decompress(cpu, model=lm, device="cuda") == data
                on_cpu = ddcompress.decompress(gpu_blob, model=lm, device="cpu") == data
                same = cpu == gpu_blob
                ok &= on_gpu and on_cpu and (same or group is None)
                rows.append({"input": name, "bytes": len(data), "level": level, "group": group or "default",
                             "cpu_sha": sha(cpu), "cuda_sha": sha(gpu_blob), "identical": same,
                             "cpu_file_decodes_on_cuda": on_gpu, "cuda_file_decodes_on_cpu": on_cpu,
                             "cpu_s": round(t1 - t0, 2), "cuda_s": round(t2 - t1, 2)})
                print(json.dumps(rows[-1]), flush=True)
    for g in golden:
        if g.name == "concatenated.ddc":
            continue
        want = g.with_suffix("").read_bytes()
        good = ddcompress.decompress(g.read_bytes(), device="cuda") == want
        ok &= good
        rows.append({"input": f"golden {g.parent.name}/{g.name}", "golden_decodes_on_cuda": good})
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"portable-check-{gpu.replace(' ', '-')}"
    meta = {"gpu": gpu, "torch": torch.__version__, "model_id": lm.id, "all_ok": bool(ok),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": "python " + " ".join(sys.argv)}
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# CPU <-> CUDA portability on {gpu}", "", f"`{meta['command']}`, torch {meta['torch']}, model {lm.id}, "
             f"{meta['date']}. Result: **{'all byte-exact' if ok else 'FAILURES'}**.", "",
             "| input | level | group | CPU file | CUDA file | identical | CPU->CUDA | CUDA->CPU |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "level" in r:
            lines.append(f"| {r['input']} | {r['level']} | {r['group']} | {r['cpu_sha']} | {r['cuda_sha']} | {r['identical']} | "
                         f"{r['cpu_file_decodes_on_cuda']} | {r['cuda_file_decodes_on_cpu']} |")
        else:
            lines.append(f"| {r['input']} | | | | | | {r['golden_decodes_on_cuda']} | |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.md: {'OK' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
