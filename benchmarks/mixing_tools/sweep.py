"""Replay the mixer over dumped denoiser rows under changed constants: the ablation table's tool.

    python benchmarks/mixing_tools/dump_rows.py "valid:Soldiers Three" /tmp/kip6 6
    python benchmarks/mixing_tools/sweep.py /tmp/kip6 "" "PRODUCT=False" "SHAPES=((-1,),(-2,-1))" "SLOT=8"

Each argument is one variant: `NAME=python expression` pairs of mixing.py constants, joined by ';'
("" = the shipped constants).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay  # noqa: E402

from ddcompress.codec import mixing as mx  # noqa: E402

for spec in sys.argv[2:]:
    saved = {}
    for kv in filter(None, spec.split(";")):
        k, v = kv.split("=", 1)
        saved[k] = getattr(mx, k)
        setattr(mx, k, eval(v))
    print(spec or "(shipped)", end=": ", flush=True)
    replay.run(sys.argv[1])
    for k, v in saved.items():
        setattr(mx, k, v)
