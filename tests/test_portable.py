"""Files cross machines: made by `ddc` under one CPU kernel level, thread count and GEMM path, decoded
byte-exactly under another, both ways, through the command line with the shipped model."""
from __future__ import annotations

import os
import subprocess
import sys

# (ATen kernel level, threads, int8 GEMMs): the two ends of what a user's machines may differ in
MACHINES = {"avx512-2threads-int8": ("avx512", "2", "1"), "generic-1thread-float": ("default", "1", "0")}
TEXT = ("The keeper wrote the time the lamp was lit, the state of the sea and the ships he had seen pass.\r\n"
        "On calm nights he added a remark about the stars.\r\n") * 8  # ~300 tokens: a chunk long enough
# for the CPU's per-thread attention path (exact.PER_THREAD_MIN_LEN); the probe test covers the batched one


def ddc(args: list[str], machine: str, stdin: bytes) -> bytes:
    cap, threads, int_mm = MACHINES[machine]
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, OMP_NUM_THREADS=threads, DDC_INT_MM=int_mm)
    res = subprocess.run([sys.executable, "-m", "ddcompress.cli", *args], input=stdin, env=env, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


def test_cli_file_crosses_kernels_threads_and_gemm_paths():
    """Both machines write the same bytes, and each decodes the file (so each decodes the other's)."""
    a, b = MACHINES
    data = TEXT.encode()
    blob = ddc(["compress", "-1", "--method", "mdm", "-c", "-"], a, data)
    assert ddc(["compress", "-1", "--method", "mdm", "-c", "-"], b, data) == blob
    assert ddc(["decompress", "-c", "-"], b, blob) == data
    assert ddc(["decompress", "-c", "-"], a, blob) == data
