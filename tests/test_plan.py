"""The coding plan has one home (ddcompress/codec/plan.py): the docs' level tables and the CLI help agree with it."""
from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from ddcompress.cli import main
from ddcompress.codec.plan import DEFAULT_LEVEL, GROUP_SIZE, LEVELS, Plan, plan_for

ROOT = Path(__file__).resolve().parents[1]


def table_row(path: Path, label: str) -> list[str]:
    line = next(l for l in path.read_text().splitlines() if l.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")[1:]]


def test_docs_level_tables_match_the_plan():
    want = [str(s) if s is not None else None for s in LEVELS.values()]
    for path, label in ((ROOT / "README.md", "steps / chunk"), (ROOT / "docs" / "FORMAT.md", "steps per chunk (sine grid)")):
        row = table_row(path, label)
        assert len(row) == len(LEVELS)
        assert [c if c.isdigit() else None for c in row] == want, (path, row)
    header = table_row(ROOT / "README.md", "level")
    assert header[DEFAULT_LEVEL - 1] == f"{DEFAULT_LEVEL} (default)"


def test_help_reads_the_plan():
    out = CliRunner().invoke(main, ["compress", "--help"]).output
    assert f"{LEVELS[1]} steps per chunk" in out and f"{LEVELS[DEFAULT_LEVEL]} steps per chunk" in out
    assert re.search(rf"default {GROUP_SIZE['cpu']}\s+on\s+CPU,\s+{GROUP_SIZE['cuda']}\s+on\s+CUDA", out)


def test_plan_for():
    assert plan_for(None, None, 1024) == Plan(LEVELS[DEFAULT_LEVEL], "sine", DEFAULT_LEVEL)
    assert plan_for(9, None, 1024) == Plan(1024, "uniform", 9)
    assert plan_for(None, 5000, 1024) == Plan(1024, "uniform", None)  # an explicit step count names no level
    assert plan_for(3, 7, 1024) == Plan(7, "sine", None)  # (and wins over a level)
    assert plan_for(1, None, 1) == Plan(1, "uniform", 1)  # a level's steps never exceed L
