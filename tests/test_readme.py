"""The README's usage examples run as written, twice in a row (a second run must not trip over the
first run's outputs). The shell runs each line of the "## Usage" block in a scratch directory; the
default model is swapped for the tiny test checkpoint through $DDC_MODELS, so this checks the command
line, not the model. `ddc bench` is left out: it is a benchmark of minutes (tests/test_bench.py).
`ddc` is served by a zygote (tests/zygote.py) that forks the CLI with torch already imported: the same
`ddcompress.cli.main` as the console script, without a 2 s import per command."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import zygote

README = Path(__file__).resolve().parents[1] / "README.md"


def usage_lines() -> list[str]:
    block = re.search(r"## Usage\n\n```bash\n(.*?)```", README.read_text(), re.S).group(1)
    lines = []
    for line in block.splitlines():
        cmd = re.sub(r"\s+#.*$", "", line).strip().replace(" [--json]", " --json")
        if cmd and not cmd.startswith("ddc bench"):
            lines.append(cmd)
    return lines


def test_usage_block_is_found():
    lines = usage_lines()
    assert len(lines) >= 10 and any(c.startswith("ddc -d") for c in lines) and any("--rm" in c for c in lines)


@pytest.fixture
def zygote_ddc(tmp_path):
    """(folder with a `ddc` served by a zygote, its environment variables); the zygote stops after the test."""
    proc, bindir, env = zygote.start(tmp_path)
    yield bindir, env
    proc.kill()
    proc.wait()
    shutil.rmtree(os.path.dirname(env["DDC_ZYGOTE"]), ignore_errors=True)


def test_readme_usage_runs_twice(tmp_path, tiny_ckpt, zygote_ddc):
    models = tmp_path / "models"
    shutil.copytree(tiny_ckpt, models / "ddc-small")  # found first: $DDC_MODELS precedes the shipped models
    work = tmp_path / "work"
    work.mkdir()
    bindir, zenv = zygote_ddc
    env = dict(os.environ, **zenv, DDC_MODELS=str(models), PATH=f"{bindir}{os.pathsep}{Path(sys.executable).parent}"
               f"{os.pathsep}{os.environ['PATH']}")
    text = b"The lamp was lit at dusk and the keeper wrote down the wind, the sea and the ships.\n" * 3
    (work / "book.txt").write_bytes(text)
    (work / "notes.txt").write_bytes(text[:120])
    for name in ("a", "b"):
        (work / f"{name}.ddc").write_bytes(subprocess.run(["ddc", "-c", "--method", "store", "-"], input=name.encode() * 50,
                                                          capture_output=True, env=env, check=True).stdout)
    for run in (1, 2):  # the same directory: the second run finds the first run's outputs
        for cmd in usage_lines():
            res = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, timeout=120)
            assert res.returncode == 0, f"run {run}: {cmd!r} exited {res.returncode}: {res.stderr.decode()}"
        assert (work / "copy.txt").read_bytes() == text and (work / "notes.out.txt").read_bytes() == text[:120]
        assert not (work / "draft.txt").exists() and (work / "draft.txt.ddc").exists()
