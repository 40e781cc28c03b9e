"""Compress / decompress speed of the library API (what `ddc` does), per level, with a round-trip check.

    python benchmarks/speed.py [--files F ...] [--bytes N] [--levels 1 5] [--device cpu] [--threads 2]

For each input (its first --bytes bytes) and level: compress and decompress KB/s (1 KB = 1024 bytes of
input), bits/byte, framing bytes (file minus coded payload), the share of wall time in the denoiser
("model") and in the entropy coder ("coder"), and peak memory. A warm-up compress first builds the C
kernels and packs the weights (once per process); each measurement then starts without the shared
all-mask first step, as a fresh `ddc` run would. Writes
benchmarks/results/speed-<device>[-<tag>].md and .json with the command that produced them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

import ddcompress
from ddcompress.model import registry
from ddcompress.codec.container import parse

SHARED = Path(os.environ.get("DDC_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "eval"
DEFAULT_FILES = [SHARED / "canterbury" / "lcet10.txt", SHARED / "wikitext2" / "wiki.test.raw"]
RESULTS = Path(__file__).resolve().parent / "results"


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from ddcompress.bench.cli import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads"


def peak_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(data: bytes, level: int, device: str, lm, device_decode: bool = False, mixer: str | None = "cm1") -> dict:
    getattr(lm.exact(device), "_blank", {}).clear()  # (absent before the shared first step)
    enc, dec = {}, {}  # seconds in the denoiser ("model") and the entropy coder ("coder")
    t0 = time.perf_counter()
    blob = ddcompress.compress(data, level=level, model=lm, device=device, method="mdm", timings=enc,
                                mixer=mixer)
    t_c = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = ddcompress.decompress(blob, model=lm, device=device, timings=dec, device_decode=device_decode)
    t_d = time.perf_counter() - t0
    c = parse(blob)
    kb = len(data) / 1024
    return {
        "level": level, "bytes": len(data), "compressed": len(blob), "framing": len(blob) - sum(c.group_sizes),
        "tokens": c.header.tokens, "bits_per_byte": 8 * len(blob) / len(data), "roundtrip": out == data,
        "compress_s": t_c, "decompress_s": t_d, "compress_kb_s": kb / t_c, "decompress_kb_s": kb / t_d,
        "compress_share": {k: v / t_c for k, v in enc.items()}, "decompress_share": {k: v / t_d for k, v in dec.items()},
        "peak_mib": peak_mib(device),
    }


def render(rows: list[dict], meta: dict) -> str:
    out = [f"# Speed on {meta['device']}", "",
           f"Machine: {meta['machine']}; torch {meta['torch']}; model {meta['model']} ({meta['model_id']}); "
           f"int8 GEMMs (`torch._int_mm`): {'yes' if meta['int_mm'] else 'no'}; {meta['date']}.", "",
           "```", meta["command"], "```", "",
           "| input | bytes | level | bits/byte | framing B | compress KB/s | decompress KB/s | model / coder share (compress) | peak MiB | round trip |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sh = r["compress_share"]
        out.append(f"| {r['file']} | {r['bytes']:,} | {r['level']} | {r['bits_per_byte']:.3f} | {r['framing']} | "
                   f"{r['compress_kb_s']:.2f} | {r['decompress_kb_s']:.2f} | {sh.get('model', 0):.0%} / {sh.get('coder', 0):.0%} | "
                   f"{r['peak_mib']:.0f} | {'ok' if r['roundtrip'] else 'FAILED'} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", nargs="+", type=Path, default=DEFAULT_FILES)
    ap.add_argument("--bytes", type=int, default=30000, help="first N bytes of each file (0 = all)")
    ap.add_argument("--levels", nargs="+", type=int, default=[1, 5])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device-decode", action="store_true",
                    help="GPU: decode the rANS streams on the device (only files without a mixer: with --no-mixer)")
    ap.add_argument("--no-mixer", action="store_true", help="code with the denoiser alone (format 5, mixer none)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = registry.resolve(args.model)
    try:
        from ddcompress.numerics.exact import int_mm_is_exact
    except ImportError:  # ddc 0.1: the float path
        def int_mm_is_exact(device):
            return False

    meta = {"device": args.device, "machine": machine(args.device), "torch": torch.__version__,
            "model": lm.path.name if lm.path else "?", "model_id": lm.id,
            "int_mm": int_mm_is_exact(torch.device(args.device)), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}
    # warm-up: the C kernels' build (first run on a machine) and the weights' packing are paid once per
    # process, not per file; each row below still pays the all-mask first step (`blank`), as one
    # `ddc` run per file does
    ddcompress.compress(b"warm-up text " * 100, level=1, model=lm, device=args.device, method="mdm")
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"speed-{args.device.split(':')[0]}{'-' + args.tag if args.tag else ''}"  # a tag may hold dots
    for f in args.files:
        data = f.read_bytes()
        data = data[: args.bytes] if args.bytes else data
        for level in args.levels:
            r = run_one(data, level, args.device, lm, args.device_decode, None if args.no_mixer else "cm1") | {"file": f.name}
            rows.append(r)
            print(json.dumps(r), flush=True)
            # written after every row: a run cut short by a time limit keeps what it measured
            (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
            (args.out / f"{stem}.md").write_text(render(rows, meta))
    print(render(rows, meta))


if __name__ == "__main__":
    main()
