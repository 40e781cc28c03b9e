"""Dump the denoiser's rows (int16 exp-table indices, 100 KB a token) along the level-5 walk of the
first N groups of a text, plain order, for replay.py:  dump_rows.py FILE|valid:TITLE PREFIX N"""
import sys, time, json, lzma, os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import numpy as np, torch
from ddcompress.model import registry
from ddcompress.codec.tokenizer import get_tokenizer
from ddcompress.codec.coder import Coder
from ddcompress.codec.layout import chunk_layout, group_layout
from ddcompress.codec.plan import plan_for
src, out, ngroups = sys.argv[1], sys.argv[2], int(sys.argv[3])
if src.startswith('valid:'):
    shared = Path(os.environ.get("DDC_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    docs = [json.loads(l) for l in lzma.open(shared / "data/train/valid.jsonl.xz", "rt")]
    data = next(d['text'] for d in docs if d['title'].startswith(src[6:])).encode()
else:
    data = open(src, 'rb').read()
lm = registry.resolve(None); tok = get_tokenizer()
tokens = np.asarray(tok.encode(data), dtype=np.int64)
L = lm.cfg.seq_len
plan = plan_for(5, None, L)
groups = group_layout(chunk_layout(len(tokens), L), 8)[:ngroups]
coder = Coder(lm.exact('cpu'), plan, 0, format_version=4)  # the plain order (replay.py's rows)
table = coder.denoiser.exp32.cpu().numpy().astype(np.int64)
nrows = sum(c.coded for g in groups for c in g)
V = lm.cfg.vocab_size
mm = np.lib.format.open_memmap(out + '.rows.npy', mode='w+', dtype=np.int16, shape=(nrows, V))
rec = []; k = 0; t0 = time.time()
for gi, g in enumerate(groups):
    x = coder._window(tokens, g, True)
    truth = np.stack([tokens[c.start:c.start + c.width] for c in g])
    perms, counts = coder._orders(g)
    stepno = -1; last = None
    for pos, cs, r0, probs in coder._walk(x, perms, counts, indices=True):
        if last is not pos: stepno += 1; last = pos
        u = probs.numpy(); n = len(u)
        mm[k:k + n] = u
        ch = np.repeat(np.arange(len(g)), cs)[r0:r0 + n]; ps = np.concatenate(pos)[r0:r0 + n]
        fpos = np.array([g[c].start for c in ch]) + ps
        sym = tokens[fpos]
        f = table[u.astype(np.int64)]
        rec.append(np.stack([np.full(n, gi), np.arange(k, k + n), fpos, np.full(n, stepno), sym, f[np.arange(n), sym], f.sum(1), f.max(1)], 1))
        k += n
        if r0 + n >= cs.sum():
            coder._reveal(x, pos, [truth[i][pp] for i, pp in enumerate(pos)])
    print(gi, time.time() - t0, flush=True)
mm.flush()
np.savez(out, rec=np.concatenate(rec), tokens=tokens, table=table)
print('done', k)
