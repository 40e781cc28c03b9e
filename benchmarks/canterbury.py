"""Round-trip the Canterbury corpus through `ddc` and measure bits/byte and speed per level.

    python benchmarks/canterbury.py --levels 1 3 5 --files alice29.txt      # bpb per level
    python benchmarks/canterbury.py --levels 1                              # all 11 files, round trip

Every file is compressed, decompressed and compared byte for byte; results (with the command, machine
and model) go to benchmarks/results/canterbury-<tag>.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

import ddcompress
from ddcompress.model import registry

ROOT = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=str(ROOT.parent.parent / "shared" / "data" / "eval" / "canterbury"))
    ap.add_argument("--files", nargs="*", default=None, help="default: every file in --dir")
    ap.add_argument("--levels", nargs="+", type=int, default=[ddcompress.DEFAULT_LEVEL])
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()
    lm = registry.resolve(args.model)
    files = sorted(Path(args.dir).iterdir()) if not args.files else [Path(args.dir) / f for f in args.files]
    rows = []
    for level in args.levels:
        for path in files:
            data = path.read_bytes()
            t0 = time.perf_counter()
            blob = ddcompress.compress(data, level=level, model=lm, device=args.device)
            t1 = time.perf_counter()
            back = ddcompress.decompress(blob, model=lm, device=args.device)
            t2 = time.perf_counter()
            h = ddcompress.info(blob)
            row = {
                "file": path.name, "level": level, "method": h["method"], "steps": h.get("steps"),
                "bytes": len(data), "compressed_bytes": len(blob), "bpb": 8 * len(blob) / max(len(data), 1),
                "ideal_bpb": (h["ideal_bits"] / len(data)) if h.get("ideal_bits") else None,
                "coded_over_ideal": (8 * len(blob) / h["ideal_bits"]) if h.get("ideal_bits") else None,
                "tokens": h.get("tokens"), "compress_kBps": len(data) / 1024 / (t1 - t0),
                "decompress_kBps": len(data) / 1024 / (t2 - t1), "roundtrip_ok": back == data,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if back != data:
                sys.exit(f"ROUND TRIP FAILED: {path}")
    meta = {
        "command": "python " + " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "device": args.device, "model": lm.path.name if lm.path else "?", "model_id": lm.id,
    }
    tag = args.tag or f"L{'-'.join(map(str, args.levels))}"
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / f"canterbury-{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    md = [f"# Canterbury round trip ({tag})", "", f"`{meta['command']}`  ", f"{meta['date']}, {meta['machine']}, device {meta['device']}, model {meta['model']} ({meta['model_id']})", "",
          "| file | level | method | bytes | ddc bytes | bits/byte | ideal bpb | coded/ideal | compress KB/s | decompress KB/s | round trip |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        md.append(f"| {r['file']} | {r['level']} | {r['method']} | {r['bytes']} | {r['compressed_bytes']} | {f(r['bpb'])} | {f(r['ideal_bpb'])} | {f(r['coded_over_ideal'], 4)} | {f(r['compress_kBps'], 2)} | {f(r['decompress_kBps'], 2)} | {'ok' if r['roundtrip_ok'] else 'FAIL'} |")
    (out / f"canterbury-{tag}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / f'canterbury-{tag}.json'}")


if __name__ == "__main__":
    main()
