"""Write the golden files of the current format version into tests/golden/v<N>/ (run once per format
version, with the shipped default model; never regenerate an existing version: these files are what
earlier ddc wrote, and every later ddc must decode them byte for byte).

    python tests/golden/make_golden.py
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import ddcompress
from ddcompress.container import FORMAT_VERSION

HERE = Path(__file__).resolve().parent
SOURCE = (HERE / "source.txt").read_bytes()


def originals() -> dict[str, tuple[bytes, dict]]:
    paragraphs = SOURCE.split(b"\n\n")
    rng = random.Random(7)
    return {
        "text.txt": (paragraphs[0] + b"\n", {"level": 5}),
        "crlf.txt": (b"\r\n".join(paragraphs[1].split(b"\n")) + b"\r\n", {"level": 3, "seed": 2**63 - 1}),
        "binary.bin": (bytes(rng.randrange(256) for _ in range(600)) + b"\x00" * 300, {}),
        "multichunk.txt": (SOURCE, {"level": 1, "seed": 12345}),
        "nine.txt": (paragraphs[2][:400] + b"\n", {"level": 9}),
        "group.txt": (SOURCE + SOURCE, {"level": 1, "seed": 3, "method": "mdm"}),  # two full chunks in one group, then the tail (xz would win on a repeat)
    }


def main() -> None:
    out = HERE / f"v{FORMAT_VERSION}"
    if out.exists() and "--force" not in sys.argv:
        sys.exit(f"{out} exists: golden files of a released format are never regenerated")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, (data, kw) in originals().items():
        blob = ddcompress.compress(data, **kw)
        assert ddcompress.decompress(blob) == data
        (out / name).write_bytes(data)
        (out / (name + ".ddc")).write_bytes(blob)
        h = ddcompress.info(blob)
        manifest[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "ddc_bytes": len(blob),
                          "method": h["method"], "model_id": h["model_id"], "options": kw}
    cat = (out / "text.txt.ddc").read_bytes() + (out / "binary.bin.ddc").read_bytes()
    (out / "concatenated.ddc").write_bytes(cat)
    manifest["concatenated.ddc"] = {"decodes_to": ["text.txt", "binary.bin"]}
    (out / "MANIFEST.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "ddc": ddcompress.__version__,
                                                   "files": manifest}, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
