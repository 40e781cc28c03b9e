"""The spread order's gap measured through the real codec (level 5) on the start of a held-out book:
    python benchmarks/mixing_tools/spread_order.py "Kept in the Dark" 70000 GAP   (GAP 0: the plain order)"""
import json
import lzma
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from ddcompress import api  # noqa: E402
from ddcompress.codec import coder as codec
from ddcompress.codec import container

SHARED = Path(os.environ.get("DDC_SHARED", ROOT.parent / "shared"))
docs = [json.loads(line) for line in lzma.open(SHARED / "data/train/valid.jsonl.xz", "rt")]
data = next(d["text"] for d in docs if d["title"].startswith(sys.argv[1])).encode()[: int(sys.argv[2])]
gap = int(sys.argv[3])
if gap:
    codec.SPREAD_GAP = gap
else:  # the plain order, as format 4
    codec.Coder.order = lambda self, seed, chunk, n, counts: codec.prng.permutation(seed, chunk, n)
t = time.time()
blob = api.compress(data, level=5, method="mdm")
h = container.parse(blob).header
print(json.dumps({"gap": gap, "bytes": len(blob), "tokens": h.tokens, "denoiser_bpt": h.denoiser_bits / h.tokens,
                  "mixed_bpt": h.ideal_bits / h.tokens, "secs": time.time() - t}), flush=True)
