"""The mixer replayed exactly over denoiser rows dumped by dump_rows.py (no model needed): per row
predict, the exact mixed interval, learn; per step reveal. Prints bits/token with and without it."""
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ddcompress.codec import mixing as mx  # noqa: E402


def run(prefix: str, V: int = 50257) -> tuple[float, float]:
    d = np.load(prefix + ".npz")
    R, table = d["rec"], d["table"]
    rows = np.load(prefix + ".rows.npy", mmap_mode="r")
    mix = mx.Mixer(len(d["tokens"]), V)
    base = mixed = 0.0
    t0 = time.time()
    key = R[:, 0] * 100000 + R[:, 3]  # (group, step)
    for blk in np.split(R, np.flatnonzero(np.diff(key)) + 1):
        for _, rid, fp, _, sym, fs, T, fmax in blk.tolist():
            fr = table[rows[rid].astype(np.int64)]
            row = mix.predict(fp, T, fmax, fr)
            _, w = row.interval(sym, int(fr[:sym].sum()), fs, T, mix.ucum, mix.Nu)
            mixed += math.log2(mx.M / w)
            base += math.log2(mx.M / (fs * (mx.M - V) / T + 1))
            mix.learn(row, sym, fs, T)
        mix.reveal(blk[:, 2], blk[:, 4])
    n = len(R)
    print(f"{prefix}: {n} tokens, denoiser {base / n:.4f} mixed {mixed / n:.4f} bits/token: "
          f"{100 * (1 - mixed / base):.2f}% smaller; {time.time() - t0:.1f}s", flush=True)
    return base, mixed


if __name__ == "__main__":
    run(sys.argv[1])
