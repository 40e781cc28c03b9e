"""The coding plan: compression levels (reverse steps per chunk and their time grid) and the group
size. One home for these numbers: the library, the command line's help, `ddc bench` and the README's
table (checked by tests/test_plan.py) read them from here. No torch."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DDCError

# level -> reverse steps per chunk on the sine grid; None = one token per step (uniform grid): the ELBO
LEVELS: dict[int, int | None] = {1: 2, 2: 4, 3: 8, 4: 12, 5: 16, 6: 24, 7: 64, 8: 256, 9: None}
DEFAULT_LEVEL = 5
GROUP_SIZE = {"cpu": 8, "cuda": 64}  # chunks per rANS stream (recorded in the file)
# chunks per forward pass at most (whole groups; the machine's choice, not the file's): memory-bound
BATCH_CHUNKS = {"cpu": 8, "cuda": 256}


@dataclass(frozen=True)
class Plan:
    """How every chunk of a file is coded: `steps` reverse steps on a time `grid` ("sine" or "uniform"),
    named by `level` (None: an explicit step count). Derived once, from a level or `--steps`, by `plan_for`;
    the header records all three and the coder reads steps and grid."""
    steps: int
    grid: str
    level: int | None = None


def plan_for(level: int | None, steps: int | None, seq_len: int) -> Plan:
    """The plan of a level (default DEFAULT_LEVEL) or of an explicit step count (which wins; level None),
    for chunks of seq_len tokens: one token per step (steps = L, uniform grid) from L steps up."""
    if steps is not None:
        if steps < 1:
            raise DDCError("--steps must be at least 1")
        return Plan(seq_len, "uniform") if steps >= seq_len else Plan(steps, "sine")
    level = DEFAULT_LEVEL if level is None else level
    if level not in LEVELS:
        raise DDCError(f"level must be 1..9, got {level}")
    s = LEVELS[level]
    return Plan(seq_len, "uniform", level) if s is None or s >= seq_len else Plan(s, "sine", level)


def default_group_size(device: str) -> int:
    return GROUP_SIZE["cuda"] if device.startswith("cuda") else GROUP_SIZE["cpu"]


def default_batch_chunks(device: str) -> int:
    return BATCH_CHUNKS["cuda"] if device.startswith("cuda") else BATCH_CHUNKS["cpu"]


def level_help(level: int) -> str:
    """One line for --help: what a level does."""
    s = LEVELS[level]
    what = "one token per step: the ELBO (slowest)" if s is None else f"{s} steps per chunk"
    tag = {1: "fastest, ", DEFAULT_LEVEL: "default, "}.get(level, "")
    return f"{tag}{what}"


def group_size_help() -> str:
    return f"Chunks per rANS stream (default {GROUP_SIZE['cpu']} on CPU, {GROUP_SIZE['cuda']} on CUDA)."


def batch_help() -> str:
    return (f"Chunks per forward pass at most, whole groups (default {BATCH_CHUNKS['cpu']} on CPU, "
            f"{BATCH_CHUNKS['cuda']} on CUDA); any value decodes any file.")
