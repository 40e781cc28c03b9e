"""Training recipes compared at equal tokens on a tiny denoiser, on CPU (issue 8, part 2).

    python benchmarks/recipe_compare.py                     # all recipes, ~1 min each on one core
    python benchmarks/recipe_compare.py --only muon-wsd     # a subset (rows are merged into the results)

Every run sees the same number of tokens (--steps x --batch x --seq-len) of the first --train-tokens
tokens of shared/data/train/train-00, and is scored on the same fixed held-out windows of valid.jsonl.xz
with the same fixed antithetic times and masks (train.validate), so differences between rows are paired.
To make a run cost seconds, the GPT-2 vocabulary is cut to the --vocab - 1 most frequent ids of the
training slice plus one "other" id (the same mapping for every recipe). No EMA: the raw weights are scored.

Recipes (ddc train options; the baseline is today's ddc-small recipe with a proportionally short warmup):
  adamw-cosine       AdamW (0.9, 0.99), lr 1e-3, cosine to 0.1x, random windows   <- today
  adamw-cosine-s1    the same with another seed: seed-to-seed noise of one row
  adamw-wsd-3e-3     higher lr (3e-3), warmup-stable-decay (last 20% linear to 0)
  muon-cosine        Muon (AdamW-matched update RMS) on the blocks' matrices, AdamW on embedding/norms
  muon-wsd-3e-3      Muon + the higher lr with WSD
  adamw-cosine-qknorm   QK-norm (architecture change: the exact coder does not implement it)
  adamw-cosine-docs  document-aligned packing (windows start where the coder's chunks start)
  muon-wsd-3e-3-docs Muon + WSD 3e-3 + document-aligned packing
  cont-adamw-wsd     from adamw-cosine's final weights (weights only, as the campaign resumes): AdamW, WSD 1e-3
  cont-muon-wsd      the same with Muon: which optimizer to continue an AdamW-trained model with

Writes benchmarks/results/recipe-compare-cpu.json and .md (the command, the machine, the table).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from ddcompress.train.data import WindowSampler, load_tokens  # noqa: E402
from ddcompress.model.denoiser import DenoiserConfig
from ddcompress.model.checkpoint import save_checkpoint  # noqa: E402
from ddcompress.codec.tokenizer import EOS_ID  # noqa: E402
from ddcompress.train.loop import TrainConfig, evaluate, setup, train_step  # noqa: E402

RECIPES: dict[str, dict] = {
    "adamw-cosine": {},
    "adamw-cosine-s1": {"seed": 1},
    "adamw-wsd-3e-3": {"lr": 3e-3, "lr_schedule": "wsd", "min_lr_frac": 0.0},
    "muon-cosine": {"optimizer": "muon"},
    "muon-wsd-3e-3": {"optimizer": "muon", "lr": 3e-3, "lr_schedule": "wsd", "min_lr_frac": 0.0},
    "adamw-cosine-qknorm": {"qk_norm": True},
    "adamw-cosine-docs": {"packing": "docs"},
    "muon-wsd-3e-3-docs": {"optimizer": "muon", "lr": 3e-3, "lr_schedule": "wsd", "min_lr_frac": 0.0, "packing": "docs"},
    # the campaign's situation: a weights-only restart from a model trained with AdamW (here adamw-cosine's
    # final weights), another --steps of windows of the same slice (another seed), fresh optimizer and warmup
    "cont-adamw-wsd": {"init": "adamw-cosine", "seed": 5, "lr_schedule": "wsd", "min_lr_frac": 0.0},
    "cont-muon-wsd": {"init": "adamw-cosine", "seed": 5, "optimizer": "muon", "lr_schedule": "wsd", "min_lr_frac": 0.0},
}
BASELINE = "adamw-cosine"


def remap_vocab(train: np.ndarray, keep: int) -> np.ndarray:
    """Old id -> new id: the keep - 1 most frequent ids of `train` by rank, everything else -> keep - 1."""
    counts = np.bincount(train, minlength=EOS_ID + 1)
    top = np.argsort(-counts, kind="stable")[: keep - 1]
    table = np.full(EOS_ID + 1, keep - 1, dtype=np.uint16)
    table[top] = np.arange(keep - 1, dtype=np.uint16)
    return table


def run_recipe(name: str, over: dict, args, files: dict, eos: int, log) -> dict:
    over = dict(over)
    qk_norm = over.pop("qk_norm", False)
    init = over.pop("init", None)
    base = dict(data=[files["train"]], valid=files["valid"], out=str(Path(files["tmp"]) / name), seq_len=args.seq_len,
                batch_size=args.batch, steps=args.steps, warmup=args.warmup, lr=1e-3, min_lr_frac=0.1,
                eval_every=0, eval_windows=args.eval_windows, eval_passes=args.eval_passes, save_every=0,
                log_every=10**9, ema=0.0, device="cpu", compile=False, seed=0)
    cfg = TrainConfig(**(base | over | ({"init_from": str(Path(files["tmp"]) / init / "final")} if init else {})))
    mcfg = DenoiserConfig(vocab_size=args.vocab, seq_len=args.seq_len, n_layer=args.n_layer, n_head=args.n_head,
                          d_model=args.d_model, d_mlp=int(round(8 * args.d_model / 3 / 64)) * 64, qk_norm=qk_norm)
    run = setup(cfg, log=lambda *_: None, model_cfg=mcfg)
    start = evaluate(run, log=lambda *_: None) if init else None
    run.sampler = WindowSampler(run.sampler.tokens, args.seq_len, cfg.packing, cfg.seed, eos_id=eos)
    curve, losses = [], []
    t0 = time.time()
    every = max(1, args.steps // args.evals)
    while not run.finished():
        losses.append(float(train_step(run)["loss"]))
        if run.step % every == 0 or run.finished():
            m, se = evaluate(run, log=lambda *_: None)
            curve.append({"step": run.step, "tokens": run.step * run.tokens_per_step, "valid_nelbo": m, "stderr": se})
    run.metrics.close()
    seconds = time.time() - t0
    if any(r.get("init") == name for r in RECIPES.values()):
        save_checkpoint(run.model, Path(files["tmp"]) / name / "final")
    tail = losses[-max(1, len(losses) // 10):]
    row = {"recipe": name, "options": over | ({"qk_norm": True} if qk_norm else {}) | ({"init": init, "start_valid_nelbo": start[0]} if init else {}),
           "valid_nelbo": curve[-1]["valid_nelbo"],
           "valid_stderr": curve[-1]["stderr"], "train_nelbo_last10pct": float(np.mean(tail)),
           "tokens": run.step * run.tokens_per_step, "seconds": round(seconds, 1), "curve": curve,
           "params": run.model.num_params()}
    log(f"{name}: valid {row['valid_nelbo']:.4f} ± {row['valid_stderr']:.4f}, train {row['train_nelbo_last10pct']:.3f}, {seconds:.0f} s")
    return row


def render(meta: dict, rows: list[dict]) -> str:
    by = {r["recipe"]: r for r in rows}
    noise = abs(by[BASELINE]["valid_nelbo"] - by["adamw-cosine-s1"]["valid_nelbo"]) if {BASELINE, "adamw-cosine-s1"} <= set(by) else None

    def ref(r):  # from scratch: against today's recipe; continued runs: against continuing with AdamW
        return by.get("cont-adamw-wsd" if "init" in r["options"] else BASELINE)

    md = ["# Training recipes at equal tokens, tiny denoiser on CPU", "", f"`{meta['command']}`  ",
          f"{meta['date']}, {meta['machine']}", "",
          f"Model: {meta['model']}; {meta['tokens_per_run']:,} training tokens per run (of a {meta['train_tokens']:,}-token slice "
          f"of train-00), valid = first {meta['eval_windows']} windows of valid.jsonl.xz x {meta['eval_passes']} fixed time sets; "
          f"vocabulary cut to the {meta['vocab'] - 1} most frequent GPT-2 ids + 1 other; no EMA. Rows `cont-*` start from "
          f"the final weights of `{BASELINE}` (weights only, fresh optimizer) and see as many tokens again.", "",
          "| recipe | options | valid NELBO (nats/token) | Δ vs reference | beyond seed noise? | train NELBO (last 10%) | seconds |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        rr = ref(r)
        d = r["valid_nelbo"] - rr["valid_nelbo"] if rr else None
        verdict = "–" if d is None or noise is None or rr is r else ("better" if d < -2 * noise else "worse" if d > 2 * noise else "no")
        opts = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["options"].items()) or "today's recipe"
        md.append(f"| {r['recipe']} | {opts} | {r['valid_nelbo']:.4f} ± {r['valid_stderr']:.4f} | "
                  f"{'–' if d is None else f'{d:+.4f}'} ({rr['recipe'] if rr else '–'}) | {verdict} | {r['train_nelbo_last10pct']:.3f} | {r['seconds']} |")
    md += ["", "Curves (valid NELBO after each quarter of the run):", "", "| recipe | " + " | ".join(
        f"{c['tokens'] // 1000}k" for c in rows[0]["curve"]) + " |", "|---|" + "---|" * len(rows[0]["curve"])]
    for r in rows:
        md.append(f"| {r['recipe']} | " + " | ".join(f"{c['valid_nelbo']:.3f}" for c in r["curve"]) + " |")
    md += ["", "## Noise", ""]
    if noise is not None:
        md.append(f"The same recipe with another seed (init and batches) moved the final valid NELBO by {noise:.4f} nats/token: "
                  f"'beyond seed noise' means |Δ| > {2 * noise:.4f}. One pair of seeds is a weak estimate of that spread. The ± is "
                  "the standard error over validation windows; the rows share windows, times and masks, so their differences "
                  "are much less noisy than the ± suggests, but the seed-to-seed spread is not. This is ~0.5M tokens on a "
                  "1.3M-parameter model: it ranks early-training speed, and says little about a 50M model after 100M+ tokens. "
                  "'seconds' is wall time on a 2-core machine shared with other jobs: not a speed comparison. The train NELBO "
                  "of `docs` rows is over document-aligned windows (less left context), not comparable with the others.")
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = ROOT.parent.parent / "shared" / "data" / "train"
    ap.add_argument("--train", default=str(shared / "train-00.jsonl.xz"))
    ap.add_argument("--valid", default=str(shared / "valid.jsonl.xz"))
    ap.add_argument("--cache", default=str(ROOT.parent / ".stage-campaign" / "cache"))
    ap.add_argument("--train-tokens", type=int, default=2_000_000)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--evals", type=int, default=4)
    ap.add_argument("--eval-windows", type=int, default=256)
    ap.add_argument("--eval-passes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest for this size when other jobs share the cores")
    ap.add_argument("--only", nargs="*", default=None, choices=list(RECIPES))
    ap.add_argument("--out", default=str(ROOT / "results" / "recipe-compare-cpu"))
    ap.add_argument("--render-only", action="store_true", help="rewrite the Markdown from the JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)  # noqa: E731
    out = Path(args.out)
    old = json.loads(out.with_suffix(".json").read_text()) if (args.only or args.render_only) and out.with_suffix(".json").exists() else None
    if args.render_only:
        out.with_suffix(".md").write_text(render(old["meta"], old["rows"]))
        return
    train = np.asarray(load_tokens([args.train], args.cache, log=lambda *_: None)[: args.train_tokens])
    valid = np.asarray(load_tokens([args.valid], args.cache, log=lambda *_: None))
    table = remap_vocab(train, args.vocab)
    rows = {r["recipe"]: r for r in (old["rows"] if old else [])}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"tmp": tmp, "train": f"{tmp}/train.npy", "valid": f"{tmp}/valid.npy"}
        np.save(files["train"], table[train])
        np.save(files["valid"], table[valid])
        names = list(args.only or RECIPES)
        for name in list(names):  # a continuation needs its starting run in this invocation (deterministic: same row)
            base = RECIPES[name].get("init")
            if base and base not in names[: names.index(name)]:
                names.insert(names.index(name), base)
        for name in dict.fromkeys(names):
            rows[name] = run_recipe(name, RECIPES[name], args, files, int(table[EOS_ID]), log)
    ordered = [rows[n] for n in RECIPES if n in rows]
    cmd = "python " + " ".join([sys.argv[0].replace(str(ROOT.parent) + "/", ""), *sys.argv[1:]])
    if old:  # rows merged from an earlier invocation: name both commands
        cmd = old["meta"]["command"] + "` then `" + cmd
    meta = {"command": cmd, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s), torch {torch.__version__}",
            "model": f"{args.n_layer}x{args.d_model}, {args.n_head} heads, L={args.seq_len}, batch {args.batch}, {args.steps} steps, warmup {args.warmup}",
            "tokens_per_run": args.steps * args.batch * args.seq_len, "train_tokens": int(len(train)), "vocab": args.vocab,
            "eval_windows": args.eval_windows, "eval_passes": args.eval_passes}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": ordered}, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(meta, ordered))
    print(render(meta, ordered))


if __name__ == "__main__":
    main()
