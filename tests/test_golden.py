"""Golden files: .ddc files written by earlier ddc versions with the shipped model decode byte for byte
here, whatever this machine's CPU, kernels, thread count and library versions. This is the standing
cross-machine check: CI machines differ from the one that made the files (tests/golden/make_golden.py).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import ddcompress
from ddcompress.model import registry

GOLDEN = Path(__file__).resolve().parent / "golden"
VERSIONS = sorted(p for p in GOLDEN.glob("v*") if (p / "MANIFEST.json").is_file())
CASES = [(v, name) for v in VERSIONS for name in json.loads((v / "MANIFEST.json").read_text())["files"]]


def test_every_format_version_has_golden_files():
    from ddcompress.codec.container import FORMAT_VERSION

    assert {int(v.name[1:]) for v in VERSIONS} >= {FORMAT_VERSION}


@pytest.mark.parametrize("version,name", CASES, ids=[f"{v.name}-{n}" for v, n in CASES])
def test_golden_file_decodes(version: Path, name: str):
    entry = json.loads((version / "MANIFEST.json").read_text())["files"][name]
    if "decodes_to" in entry:  # concatenated frames decode to the concatenated originals
        blob, want = (version / name).read_bytes(), b"".join((version / n).read_bytes() for n in entry["decodes_to"])
    else:
        blob, want = (version / (name + ".ddc")).read_bytes(), (version / name).read_bytes()
        assert hashlib.sha256(want).hexdigest() == entry["sha256"]  # the original itself is intact
        info = ddcompress.info(blob)
        assert info["method"] == entry["method"] and info["model_id"] == entry["model_id"]
        if entry["model_id"] and registry.find_by_id(entry["model_id"]) is None:
            pytest.fail(f"model {entry['model_id']} of a golden file is not installed: released models must stay")
    assert ddcompress.decompress(blob) == want


def test_format_1_file_is_refused_by_name_and_nothing_is_written(tmp_path):
    """A real ddc 0.1 file: one line naming format 1 and the ddc that reads it, exit 1, no output."""
    from click.testing import CliRunner

    from ddcompress.cli import main

    src = tmp_path / "text.txt.ddc"
    src.write_bytes((GOLDEN / "v1" / "text.txt.ddc").read_bytes())
    res = CliRunner().invoke(main, ["-d", str(src)])
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and "format version 1" in res.output and "ddc 0.1" in res.output
    assert not (tmp_path / "text.txt").exists()


def test_info_on_concatenated_frames():
    import json as _json

    from click.testing import CliRunner

    from ddcompress.cli import main

    v2 = GOLDEN / "v2"
    res = CliRunner().invoke(main, ["info", "--json", str(v2 / "concatenated.ddc")])
    assert res.exit_code == 0, res.output
    h = _json.loads(res.output)
    assert h["frames"] == 2 and h["method"] == "mixed" and h["methods"] == ["mdm", "xz"]
    assert h["original_bytes"] == len((v2 / "text.txt").read_bytes()) + len((v2 / "binary.bin").read_bytes())
