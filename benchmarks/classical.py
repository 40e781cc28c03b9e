"""Classical compressors on named texts, bits/byte and KB/s, round trips checked: the README's
comparison columns.    python benchmarks/classical.py FILE...   (zpaq -m5 when the zpaq program is installed)

Writes benchmarks/results/classical-<stamp>.{json,md} with the command and the machine."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddcompress.bench.run import _codecs  # noqa: E402  (gzip/bzip2/xz/zstd/brotli/PPMd as ddc bench runs them)
from ddcompress.bench.cli import cpu_name  # noqa: E402


def zpaq(data: bytes) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        src, arc = Path(tmp) / "f", Path(tmp) / "f.zpaq"
        src.write_bytes(data)
        t0 = time.perf_counter()
        subprocess.run(["zpaq", "a", str(arc), "f", "-m5"], cwd=tmp, check=True, capture_output=True)
        t1 = time.perf_counter()
        src.unlink()
        subprocess.run(["zpaq", "x", str(arc)], cwd=tmp, check=True, capture_output=True)
        t2 = time.perf_counter()
        assert src.read_bytes() == data
        return arc.stat().st_size, t1 - t0, t2 - t1


def main() -> None:
    rows = []
    for path in map(Path, sys.argv[1:]):
        data = path.read_bytes()
        for name, fns in _codecs().items():
            if fns is None:
                continue
            comp, dec = fns
            t0 = time.perf_counter()
            blob = comp(data)
            t1 = time.perf_counter()
            assert dec(blob) == data, name
            rows.append({"file": path.name, "codec": name, "bytes": len(blob), "bpb": 8 * len(blob) / len(data),
                         "compress_kbs": len(data) / 1024 / (t1 - t0)})
        if shutil.which("zpaq"):
            n, tc, _ = zpaq(data)
            rows.append({"file": path.name, "codec": "zpaq -m5", "bytes": n, "bpb": 8 * n / len(data),
                         "compress_kbs": len(data) / 1024 / tc})
    out = Path(__file__).resolve().parent / "results" / f"classical-{time.strftime('%Y%m%d-%H%M%S')}"
    meta = {"command": "python " + " ".join(sys.argv), "machine": cpu_name(), "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    md = [f"# Classical compressors", "", f"`{meta['command']}`; {meta['machine']}", "",
          "| file | compressor | bytes | bits/byte | compress KB/s |", "|---|---|---|---|---|"]
    md += [f"| {r['file']} | {r['codec']} | {r['bytes']:,} | {r['bpb']:.3f} | {r['compress_kbs']:.0f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
