"""NELBO perplexity bound on whole test sets, without coding (the CPU-affordable part of `ddc bench`).

    python benchmarks/full_nelbo.py --datasets wikitext2 ptb --passes 2

Same protocol as `ddc bench` (detokenizers, documents joined by EOS, plain L-token chunks, tail
dropped, antithetic t), a fixed number of passes; writes benchmarks/results/full-nelbo-<model>.json/.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from ddcompress.model import registry
from ddcompress.bench.run import usable_length
from ddcompress.train.elbo import estimate_nelbo_chunks
from ddcompress.bench.corpora import load_corpus, token_stream

ROOT = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["wikitext2", "ptb"])
    ap.add_argument("--data-dir", default=str(ROOT.parent.parent / "shared" / "data" / "eval"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=None, help="smoke tests only: cut each corpus")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    lm = registry.resolve(args.model)
    L = lm.cfg.seq_len
    rows = []
    for name in args.datasets:
        corpus = load_corpus(name, "test", args.data_dir, offline=True)
        tokens, _ = token_stream(corpus.documents, args.max_tokens)
        n = usable_length(len(tokens), L)
        chunks = tokens[:n].reshape(-1, L)
        t0 = time.time()
        r = estimate_nelbo_chunks(lm.model, chunks, samples=args.samples, batch=args.batch, target=0.0,
                         min_passes=args.passes, max_passes=args.passes)
        per_tok, se_tok = r["nats"] / n, r["stderr_nats"] / n
        row = {"dataset": name, "split": "test", "tokens": int(n), "dropped_tail_tokens": int(len(tokens) - n),
               "chunks": len(chunks), "nelbo_nats_per_token": per_tok, "nelbo_stderr_nats_per_token": se_tok,
               "elbo_ppl": math.exp(per_tok), "elbo_ppl_stderr": math.exp(per_tok) * se_tok,
               "draws_per_chunk": r["draws_per_chunk"], "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"command": "python " + " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "model": lm.path.name if lm.path else "?", "model_id": lm.id}
    out = ROOT / "results"
    stem = f"full-nelbo-{meta['model']}{args.tag}"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    md = [f"# NELBO perplexity bound on whole test sets ({meta['model']})", "", f"`{meta['command']}`  ",
          f"{meta['date']}, {meta['machine']}, model {meta['model']} ({meta['model_id']}); no coding", "",
          "| dataset | tokens | chunks | NELBO nats/token | perplexity bound | t draws/chunk | seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['dataset']} | {r['tokens']} | {r['chunks']} | {r['nelbo_nats_per_token']:.4f} ± {r['nelbo_stderr_nats_per_token']:.4f} "
                  f"| {r['elbo_ppl']:.1f} ± {r['elbo_ppl_stderr']:.1f} | {r['draws_per_chunk']} | {r['seconds']} |")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
