"""The GPU training campaign of ddc's default model (issue 8): one prepared command sequence per session.

Each session continues the campaign checkpoint (`ddc-small-next`; the first one starts from the shipped
`ddc-small`) with a weights-only resume and a short warmup, trains for a wall-clock budget over all of
shared/data/train, exports int8, evaluates valid NELBO and the whole WikiText-2 / PTB / LAMBADA test sets
on the GPU, and brings back the weights and the metrics. Releasing is a separate, explicit step
(tools/campaign/CAMPAIGN.md: `release-check`, the >= 3% bits/byte rule).

What travels (the limits: 64 MiB of working tree per call, 30 s warm between calls, 10 min per command,
15 min of device time per session, at most 8 files of <= 16 MiB and 64 MiB back from $OUT; ../shared
does not travel):
- the shipped weights (models/*/model-*.safetensors, 51 MB each) are taken out of git's index for the
  session (`gpu_campaign.sh untrack`: `git rm --cached` + .git/info/exclude, nothing committed; the files
  stay on disk; `retrack` puts them back), so a call carries the ~0.6 MB of code plus one stage folder;
- `prepare` (here, CPU) writes the stage folders under .stage-campaign/ (ignored by /.stage*/); measured
  with the real model and shard 00:
    part0 63.3 MB: the resume checkpoint (int8, 51.1 MB) + eval tokens (2.3 MB: valid 1.25M, WikiText-2
           272k, PTB 101k, LAMBADA 429k) + the first 9.2M training tokens (10.0 MB)  <= 64 MiB - tree
    part1..3 ~54 MB each (at the measured 1.08 bytes/token): the other ~150M training tokens, xz uint16
- on the GPU machine everything is unpacked into /tmp/ddc-campaign (kept between calls while warm), and
  a trainer started by the first call in its own process session (setsid) keeps running between calls,
  picking up each new part as it lands: the GPU trains while the later parts travel.
- back in $OUT (6 files, ~52 MB): ddc-small-next.tar.part0..3 (the int8 export: config.json + shards, a
  tar cut into 15 MiB pieces: the int8 embedding alone is 25.7 MB), campaign.json (metrics),
  run.tar.gz (metrics.jsonl, log, plot).

Call plan of one session (device time ~12.5 of 15 min at the default 8 training minutes):

    here  tools/campaign/gpu_campaign.sh prepare            # tokenize (cached), stage parts, untrack weights, check sizes
    run   tools/campaign/gpu_campaign.sh start 8    carry [.stage-campaign/part0]  timeout_s 300   # ~1.5 min start + ~30 s
    run   tools/campaign/gpu_campaign.sh add 1      carry [.stage-campaign/part1]  timeout_s 120   # ~30 s, within 30 s of the last
    run   tools/campaign/gpu_campaign.sh add 2      carry [.stage-campaign/part2]  timeout_s 120   # ~30 s
    run   tools/campaign/gpu_campaign.sh finish 3   carry [.stage-campaign/part3]  timeout_s 600   # waits for the trainer: ~7.5 min
    give_back
    here  tools/campaign/gpu_campaign.sh collect FILES_AT    # reassemble, verify the model id, retrack the weights

Budget: start-up ~1.5-2 min + staging calls ~1.5 min (training already runs) + 8 min training + ~1 min
export and evaluation + return transfer. `finish` never lets the command pass its limit: it tells the
trainer to stop early enough for export, evaluation and copying (`--limit-s`, default 560 s). If the
machine went back between calls (more than 30 s idle), `add`/`finish` say so and stop: start again
with part0 only if >= 10 min of device time are left, else hand back and retry next session.

Subcommands: prepare, check, collect, release-check (here); start, add, finish, daemon (GPU machine).
Every one runs on CPU too (`--device cpu`), which tests/test_train.py does end to end at tiny scale.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import traceback
import io
import json
import lzma
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ddcompress.train.data import write_u16_xz  # noqa: E402  (torch-free)

MIB = 1 << 20
TREE_LIMIT = 64 * MIB  # what one device call may carry: working tree + carried paths
OUT_FILE_LIMIT = 15 * MIB  # pieces brought back (limit 16 MiB per file, 8 files, 64 MiB in all)
EVAL_SETS = ("wikitext2", "ptb", "lambada")
NAME = "ddc-small-next"
WORK = "/tmp/ddc-campaign"
RECIPE = {  # the campaign's recipe (benchmarks/results/recipe-compare-cpu.md); ddc train option names
    "optimizer": "adamw", "lr": 1e-3, "lr_schedule": "wsd", "decay_frac": 0.25, "min_lr_frac": 0.0,
    "warmup": 100, "packing": "random", "batch_size": 32, "weight_decay": 0.03, "beta2": 0.99,
    "grad_clip": 1.0, "ema": 0.999,
}


def _log(msg: str) -> None:
    print(msg, flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_u16_xz(path: Path) -> np.ndarray:
    with lzma.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype="<u2").astype(np.uint16)


def _cut_at_document(tokens: np.ndarray, n: int) -> int:
    """The first EOS at or after n, plus one (so a part ends with a whole document); len if none."""
    from ddcompress.codec.tokenizer import EOS_ID

    if n >= len(tokens):
        return len(tokens)
    after = np.flatnonzero(tokens[n:] == EOS_ID)
    return n + int(after[0]) + 1 if len(after) else len(tokens)


# =====================================================================================================
# here (CPU): prepare, check, collect, release-check


def travelling_tree_bytes(repo: Path = ROOT) -> int:
    """Bytes of what a device call sends besides carried paths: tracked + untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True, check=True).stdout
    return sum((repo / p).stat().st_size for p in out.decode().split("\0") if p and (repo / p).is_file())


def default_resume(repo: Path = ROOT) -> Path:
    """The campaign checkpoint if the repo has one, else the shipped default model."""
    from ddcompress.model import registry

    try:
        return registry.locate(NAME)
    except Exception:
        return registry.locate(None)


def campaign_history(info: dict, model_id: str, name: str) -> list[dict]:
    """The runs behind a checkpoint: its `campaign.history`, or one entry for a model trained by one ddc train run."""
    if "campaign" in info:  # the last entry was written at export, before the id existed
        history = [dict(h) for h in info["campaign"]["history"]]
        history[-1].setdefault("model_id", model_id)
        return history
    return [{"run": 0, "name": name, "model_id": model_id, "tokens_seen": info.get("tokens_seen"),
             "cumulative_tokens": info.get("tokens_seen"), "train_seconds": info.get("wall_time_s"),
             "cumulative_train_seconds": info.get("wall_time_s"), "valid_nelbo": info.get("final_valid_nelbo"),
             "hardware": info.get("hardware")}]


def prepare(args) -> dict:
    """Tokenize (cached), then write the stage folders part0..partN and their manifest."""
    from ddcompress.train.data import load_tokens
    from ddcompress.bench.corpora import load_corpus, token_stream
    from ddcompress.model.checkpoint import load_checkpoint, weight_files

    stage, cache = Path(args.stage), Path(args.cache or Path(args.stage) / "cache")
    resume = Path(args.resume_from) if args.resume_from else default_resume()
    lm = load_checkpoint(resume)
    t0 = time.time()
    shards = sorted(Path(args.train_dir).glob("train-*.jsonl*")) if not args.train else [Path(p) for p in args.train]
    if not shards:
        raise SystemExit(f"no training shards in {args.train_dir}")
    train = np.concatenate([np.asarray(load_tokens([str(s)], cache, log=_log)) for s in shards])
    if args.max_train_tokens:
        train = train[: _cut_at_document(train, args.max_train_tokens)]
    valid = np.asarray(load_tokens([str(Path(args.train_dir) / "valid.jsonl.xz") if not args.valid else args.valid], cache, log=_log))
    _log(f"tokens: {len(train):,} train, {len(valid):,} valid ({time.time() - t0:.0f} s)")
    for old in stage.glob("part*"):
        shutil.rmtree(old)
    p0 = stage / "part0"
    (p0 / "resume").mkdir(parents=True)
    for f in [resume / "config.json", *weight_files(resume)]:
        shutil.copy2(f, p0 / "resume" / f.name)
    evals = {"valid": write_u16_xz(p0 / "eval" / "valid.u16.xz", valid)}
    eval_tokens = {"valid": int(len(valid))}
    for name in EVAL_SETS:
        corpus = load_corpus(name, "test", args.eval_dir, offline=True)
        toks, _ = token_stream(corpus.documents, args.eval_max_tokens)
        evals[name] = write_u16_xz(p0 / "eval" / f"{name}.u16.xz", toks)
        eval_tokens[name] = int(len(toks))
    tree = travelling_tree_bytes() if args.cap_bytes is None else 0
    cap = args.cap_bytes or TREE_LIMIT - tree - args.margin_mb * MIB
    fixed = sum(f.stat().st_size for f in p0.rglob("*") if f.is_file()) + 64 * 1024  # + manifest
    if fixed >= cap:
        raise SystemExit(f"part0 holds {fixed / 1e6:.1f} MB of checkpoint and eval data: over the {cap / 1e6:.1f} MB a call carries")
    # part0's training tokens: what fits beside the checkpoint; xz gives ~1.1 B/token on this text
    n0 = _cut_at_document(train, args.part0_tokens if args.part0_tokens is not None else int((cap - fixed) / 1.2))
    while True:
        size0 = write_u16_xz(p0 / "train-p0.u16.xz", train[:n0])
        if size0 <= cap - fixed or n0 <= 1:
            break
        n0 = _cut_at_document(train, int(n0 * 0.93))
    rest = train[n0:]
    parts = [(0, 0, n0)]
    if len(rest):
        bounds = [0]
        for k in range(1, args.parts):
            bounds.append(max(bounds[-1], _cut_at_document(rest, len(rest) * k // args.parts)))
        bounds.append(len(rest))
        for k in range(args.parts):
            a, b = bounds[k], bounds[k + 1]
            if b > a:
                parts.append((len(parts), n0 + a, n0 + b))
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=max(1, min(len(parts) - 1, os.cpu_count() or 1))) as pool:  # xz: ~2 min per 50M tokens
        jobs = {k: pool.submit(write_u16_xz, stage / f"part{k}" / f"train-p{k}.u16.xz", train[a:b]) for k, a, b in parts[1:]}
        files = {k: job.result() for k, job in jobs.items()}
    for k in files:
        if files[k] > cap:
            raise SystemExit(f"part{k} is {files[k] / 1e6:.1f} MB, over the {cap / 1e6:.1f} MB a call carries: use --parts {args.parts + 1}")
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "resume_from": str(resume), "resume_model_id": lm.id,
        "history": campaign_history(lm.info, lm.id, resume.name), "seq_len": lm.cfg.seq_len,
        "train_sources": [s.name for s in shards], "train_tokens": int(len(train)), "eval_tokens": eval_tokens,
        "parts": [{"part": k, "tokens": int(b - a), "first_token": int(a)} for k, a, b in parts],
        "cap_bytes": int(cap), "tree_bytes": int(tree),
    }
    sums = {}
    for k, *_ in parts:
        d = stage / f"part{k}"
        sums[k] = {str(f.relative_to(d)): _sha256(f) for f in sorted(d.rglob("*")) if f.is_file()}
    (p0 / "manifest.json").write_text(json.dumps(manifest | {"part": 0, "sha256": sums[0]}, indent=1) + "\n")
    for k, *_ in parts[1:]:  # each part names its own files, so a call can check what it carried
        (stage / f"part{k}" / "manifest.json").write_text(json.dumps({"part": k, "sha256": sums[k]}) + "\n")
    sizes = {f"part{k}": sum(f.stat().st_size for f in (stage / f"part{k}").rglob("*") if f.is_file()) for k, *_ in parts}
    _log(f"staged {len(parts)} parts in {stage} ({time.time() - t0:.0f} s); each call carries at most {cap / 1e6:.1f} MB:")
    for k, a, b in parts:
        _log(f"  part{k}: {sizes[f'part{k}'] / 1e6:6.1f} MB, {b - a:,} training tokens")
    return manifest | {"sizes": sizes}


def check(args) -> int:
    """What each call would carry, against the 64 MiB limit; whether the shipped weights still travel."""
    tree = travelling_tree_bytes()
    heavy = subprocess.run(["git", "ls-files", "--", "*.safetensors"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    ok = True
    _log(f"working tree that travels every call: {tree / 1e6:.1f} MB")
    if heavy:
        _log(f"  tracked weights travel with every call ({len(heavy)} files): run `tools/campaign/gpu_campaign.sh untrack` first")
        ok = False
    for d in sorted(Path(args.stage).glob("part*")):
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        fits = tree + size <= TREE_LIMIT
        ok &= fits
        _log(f"  {d.name}: {size / 1e6:.1f} MB carried -> {(tree + size) / MIB:.1f} MiB {'ok' if fits else 'OVER 64 MiB'}")
    return 0 if ok else 1


def collect(args) -> dict:
    """Reassemble the export from the files a finish call brought back; verify the id; unpack metrics."""
    from ddcompress.model.checkpoint import load_checkpoint

    src, dest = Path(args.files), Path(args.to)
    report = json.loads((src / "campaign.json").read_text())
    pieces = sorted(src.glob(f"{NAME}.tar.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    blob = b"".join(p.read_bytes() for p in pieces)
    if hashlib.sha256(blob).hexdigest() != report["package"]["tar_sha256"]:
        raise SystemExit(f"the {len(pieces)} pieces in {src} do not reassemble the exported tar (sha256 differs)")
    if dest.exists():
        if not args.force:
            raise SystemExit(f"{dest} exists (--force replaces it)")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    with tarfile.open(src / "run.tar.gz") as tar:
        tar.extractall(dest, filter="data")
    lm = load_checkpoint(dest)
    if lm.id != report["model_id"]:
        raise SystemExit(f"model id {lm.id} != {report['model_id']} recorded by the run")
    (dest / "campaign.json").write_text(json.dumps(report, indent=1) + "\n")
    _plot_history(report["history"], dest / "campaign.png")
    _log(f"{dest}: model {lm.id}, run {report['run']} of the campaign")
    _log(render_report(report))
    return report


def _plot_history(history: list[dict], png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pts = [(h["cumulative_tokens"] / 1e6, h["valid_nelbo"]) for h in history if h.get("valid_nelbo") and h.get("cumulative_tokens")]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*pts), "o-")
    for (x, y), h in zip(pts, history):
        ax.annotate(h.get("name", f"run {h['run']}"), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("cumulative training tokens (M)")
    ax.set_ylabel("valid NELBO (nats/token)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def render_report(r: dict) -> str:
    rows = ["| set | tokens | before (nats/token) | after | PPL bound before | after |", "|---|---|---|---|---|---|"]
    for key in ["valid128", "valid", *EVAL_SETS]:
        b, a = r["baseline"].get(key), r["final"].get(key)
        if not a:
            continue
        fmt = lambda e: f"{e['nelbo']:.4f} ± {e['stderr']:.4f}" if e else "–"  # noqa: E731
        rows.append(f"| {key} | {a['tokens']:,} | {fmt(b)} | {fmt(a)} | {math.exp(b['nelbo']) if b else float('nan'):.1f} | {math.exp(a['nelbo']):.1f} |")
    t = r["train"]
    head = (f"run {r['run']}{' (SALVAGED snapshot, not evaluated)' if r.get('salvaged') else ''}: {t['steps']} steps, "
            f"{t['tokens_seen'] / 1e6:.1f}M tokens ({t['train_tokens_available'] / 1e6:.1f}M available, "
            f"{t['wall_time_s']:.0f} s, {t.get('tok_per_s', 0) / 1e3:.0f}k tok/s), cumulative {r['history'][-1]['cumulative_tokens'] / 1e6:.0f}M tokens")
    return head + "\n" + "\n".join(rows)


HELD_OUT = [  # (file under the eval dir, offset): 16 KB slices of texts removed from the training data
    ("canterbury/alice29.txt", 20000), ("canterbury/plrabn12.txt", 20000), ("canterbury/lcet10.txt", 20000),
    ("canterbury/asyoulik.txt", 20000), ("wikitext2/wiki.test.raw", 0), ("lambada/lambada_test.jsonl", 0),
]


def release_check(args) -> int:
    """Code the held-out slices with both models at the default level: release only if >= --margin smaller."""
    import ddcompress
    from ddcompress.model import registry

    cand, base = registry.resolve(args.candidate), registry.resolve(args.baseline)
    rows, tot = [], {"base": 0, "cand": 0, "bytes": 0}
    for rel, off in HELD_OUT[: args.slices]:
        data = (Path(args.eval_dir) / rel).read_bytes()[off : off + args.slice_bytes]
        sizes = {}
        for key, lm in (("base", base), ("cand", cand)):
            blob = ddcompress.compress(data, model=lm, method="mdm")
            if key == "cand" and ddcompress.decompress(blob, model=lm) != data:
                raise SystemExit(f"{rel}: the candidate's file does not decode to the input")
            sizes[key] = len(blob)
        rows.append((rel, len(data), sizes["base"], sizes["cand"]))
        for k in ("base", "cand"):
            tot[k] += sizes[k]
        tot["bytes"] += len(data)
        _log(f"{rel}: {8 * sizes['base'] / len(data):.3f} -> {8 * sizes['cand'] / len(data):.3f} bits/byte")
    gain = 1 - tot["cand"] / tot["base"]
    verdict = gain >= args.margin
    md = [f"# Release check: {args.candidate} ({cand.id}) against {args.baseline} ({base.id})", "",
          f"Default level, {args.slice_bytes}-byte held-out slices; rule: release if the candidate's total is at least "
          f"{100 * args.margin:.0f}% smaller.", "", "| slice | bytes | baseline bits/byte | candidate bits/byte |", "|---|---|---|---|"]
    md += [f"| {r[0]} | {r[1]} | {8 * r[2] / r[1]:.3f} | {8 * r[3] / r[1]:.3f} |" for r in rows]
    md += [f"| **all** | {tot['bytes']} | {8 * tot['base'] / tot['bytes']:.3f} | {8 * tot['cand'] / tot['bytes']:.3f} |", "",
           f"Candidate is {100 * gain:.1f}% smaller: {'RELEASE' if verdict else 'do not release'}."]
    text = "\n".join(md) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    _log(text)
    return 0 if verdict else 1


# =====================================================================================================
# the GPU machine: start, add, finish, and the trainer daemon


def _status(work: Path) -> dict:
    try:
        return json.loads((work / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _alive(work: Path) -> bool:
    try:
        pid = int((work / "daemon.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:  # a zombie (finished child of this process) is not alive
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _verify(stage: Path, sums: dict) -> None:
    for rel, digest in sums.items():
        if _sha256(stage / rel) != digest:
            raise SystemExit(f"{stage / rel}: checksum differs from the manifest (a broken transfer?)")


def _unpack_part(stage: Path, work: Path) -> int:
    """Check a carried part against its manifest and unpack its training tokens into WORK/data (atomic)."""
    _verify(stage, json.loads((stage / "manifest.json").read_text())["sha256"])
    n = 0
    for f in sorted(stage.glob("train-p*.u16.xz")):
        tokens = _read_u16_xz(f)
        dest = work / "data" / f.name.replace(".u16.xz", ".npy")
        tmp = dest.with_name(".tmp-" + dest.name)
        np.save(tmp, tokens)
        os.replace(tmp, dest)
        n += len(tokens)
    return n


def start(args) -> int:
    stage, work = Path(args.stage), Path(args.work)
    if work.exists() and _alive(work):
        raise SystemExit(f"a campaign trainer already runs in {work}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    manifest = json.loads((stage / "manifest.json").read_text())
    _verify(stage, manifest["sha256"])
    shutil.copytree(stage / "resume", work / "resume")
    (work / "eval").mkdir()
    for f in (stage / "eval").glob("*.u16.xz"):
        np.save(work / "eval" / f.name.replace(".u16.xz", ".npy"), _read_u16_xz(f))
    n = _unpack_part(stage, work)
    recipe = RECIPE | {k: v for k, v in vars(args).items() if k in RECIPE and v is not None}
    plan = {"manifest": manifest, "minutes": args.minutes, "device": args.device, "recipe": recipe,
            "eval_samples": args.eval_samples, "eval_passes": args.eval_passes, "started": time.time()}
    (work / "plan.json").write_text(json.dumps(plan, indent=1))
    log = open(work / "daemon.log", "ab")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "daemon", "--work", str(work)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    (work / "daemon.pid").write_text(str(proc.pid))
    _log(f"part0: {n:,} training tokens; trainer pid {proc.pid} ({args.minutes} training minutes, {recipe['optimizer']} "
         f"{recipe['lr_schedule']} lr {recipe['lr']:g}) started in its own session")
    t_end = time.time() + args.wait_s  # until it has imported torch and written its status (or died)
    while time.time() < t_end and proc.poll() is None and not _status(work):
        time.sleep(0.5)
    if proc.poll() is not None and not (work / "result" / "DONE").exists():
        _log(_tail(work / "daemon.log"))
        raise SystemExit("the trainer stopped at start")
    _print_status(work)
    return 0


def add(args) -> int:
    stage, work = Path(args.stage), Path(args.work)
    if not (work / "plan.json").exists():
        raise SystemExit(f"{work} holds no campaign: a fresh machine (the last one went back while idle?). "
                         "Start again with part0 if >= 10 device minutes are left, else give the machine back.")
    n = _unpack_part(stage, work)
    _log(f"{stage.name}: {n:,} training tokens staged for the trainer")
    if not _alive(work) and not (work / "result" / "DONE").exists():
        _log(_tail(work / "daemon.log"))
        raise SystemExit("the trainer is not running")
    _print_status(work)
    return 0


def _print_status(work: Path) -> None:
    s = _status(work)
    _log(f"trainer: {s.get('phase', '?')}, step {s.get('step', 0)}, {s.get('train_tokens', 0) / 1e6:.1f}M tokens on hand, "
         f"loss {s.get('loss', float('nan')):.3f}, {s.get('tok_per_s', 0) / 1e3:.0f}k tok/s, "
         f"{s.get('elapsed', 0):.0f}/{s.get('budget', 0):.0f} s")


def finish(args) -> int:
    work, out = Path(args.work), Path(args.out)
    t_call = time.time()
    if args.stage:
        add(args)
    elif not (work / "plan.json").exists():
        raise SystemExit(f"{work} holds no campaign (a fresh machine?)")
    result = work / "result"
    # stop training early enough that export, evaluation and copying end inside this command's limit
    s = _status(work)
    stop_at = t_call + args.limit_s - args.copy_s - 2.0 * s.get("eval_s", 60.0) - s.get("export_s", 20.0)
    (work / "stop_by.json").write_text(json.dumps({"at": stop_at}))
    if "train_end_at" in s and s["train_end_at"] > stop_at:
        _log(f"training is cut {s['train_end_at'] - stop_at:.0f} s short to end inside this call")
    while not (result / "DONE").exists() and _alive(work) and time.time() < t_call + args.limit_s - args.copy_s:
        time.sleep(1.0)
    if not (result / "DONE").exists():
        _log(_tail(work / "daemon.log", 40))
        if _alive(work):
            os.killpg(int((work / "daemon.pid").read_text()), signal.SIGTERM)
        if not salvage(work):
            raise SystemExit("the trainer did not finish and left no snapshot; its log is above")
        _log("the trainer did not finish: its last EMA snapshot was exported instead (no evaluation)")
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in result.iterdir() if p.name != "DONE")
    if len(files) > 8 or any(f.stat().st_size > 16 * MIB for f in files) or sum(f.stat().st_size for f in files) > 64 * MIB:
        raise SystemExit("the result does not fit $OUT's limits (8 files, 16 MiB each, 64 MiB)")
    for f in files:
        shutil.copy2(f, out / f.name)
    report = json.loads((result / "campaign.json").read_text())
    _log(render_report(report))
    _log(f"$OUT: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB; model {report['model_id']}")
    return 0


# -- the trainer ---------------------------------------------------------------------------------------


def evaluate_sets(model, work: Path, plan: dict, device, run_cfg) -> dict:
    """NELBO of the held-out sets with the ddc bench protocol (whole L-token chunks, tail dropped,
    antithetic t in [1e-4, 1], `samples` draws per chunk per pass), plus the training run's fixed
    validation (first 128 windows, train.validate), which ddc-small's card quotes."""
    from ddcompress.train.data import eval_windows
    from ddcompress.train.elbo import estimate_nelbo_chunks
    from ddcompress.train.loop import validate

    L = model.cfg.seq_len
    res = {}
    vwin = eval_windows(np.load(work / "eval" / "valid.npy"), L, 128)
    m, se = validate(model, vwin, run_cfg, device, contextlib.nullcontext)
    res["valid128"] = {"nelbo": m, "stderr": se, "tokens": int(vwin.size)}
    for name in ["valid", *EVAL_SETS]:
        tokens = np.load(work / "eval" / f"{name}.npy").astype(np.int64)
        n = len(tokens) if len(tokens) < L else len(tokens) - len(tokens) % L
        chunks = tokens[:n].reshape(-1, min(L, n))
        P = plan["eval_passes"]
        r = estimate_nelbo_chunks(model, chunks, samples=plan["eval_samples"], batch=64, target=0.0,
                                  min_passes=P, max_passes=P, seed=0, device=str(device))
        res[name] = {"nelbo": r["nats"] / n, "stderr": r["stderr_nats"] / n, "tokens": int(n), "chunks": len(chunks),
                     "draws_per_chunk": r["draws_per_chunk"]}
    return res


def _daemon(args) -> int:
    """Runs in its own process session: baseline eval, training over the parts as they land, export,
    final eval, packaging for $OUT. State goes to WORK/status.json; WORK/result/DONE marks the end."""
    import torch

    from ddcompress.model.checkpoint import load_checkpoint
    from ddcompress.train.loop import TrainConfig, check_args, evaluate, export, report, setup, train_step

    work = Path(args.work)
    plan = json.loads((work / "plan.json").read_text())
    manifest, recipe = plan["manifest"], plan["recipe"]
    history = manifest["history"]
    status = {"phase": "loading", "pid": os.getpid()}

    def write_status(**kw):
        status.update(kw, time=time.time())
        tmp = work / "status.json.tmp"
        tmp.write_text(json.dumps(status))
        os.replace(tmp, work / "status.json")

    write_status()
    loaded = sorted(str(p) for p in (work / "data").glob("train-p*.npy"))
    cfg = TrainConfig(data=loaded, valid=str(work / "eval" / "valid.npy"), out=str(work / "run"), init_from=str(work / "resume"),
                      max_minutes=plan["minutes"], eval_every=1000, eval_windows=128, eval_passes=2, save_every=0,
                      log_every=100 if plan["device"].startswith("cuda") else 10, device=plan["device"],
                      export_dtype="int8", max_shard_mb=26.0, name=NAME, seed=len(history), **recipe)
    check_args(cfg)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t = time.time()
    base_model = load_checkpoint(work / "resume").model.to(device)
    baseline = evaluate_sets(base_model, work, plan, device, cfg)
    eval_s = time.time() - t
    del base_model
    _log(f"baseline ({manifest['resume_model_id']}): " + ", ".join(f"{k} {v['nelbo']:.4f}" for k, v in baseline.items()) + f" ({eval_s:.0f} s)")
    write_status(phase="setup", eval_s=eval_s)
    run = setup(cfg, log=_log)
    run.t0 = run.last_log = time.time()
    write_status(phase="training", train_end_at=run.t0 + run.budget, budget=run.budget)
    last_poll, last_snap = 0.0, time.time()
    while not run.finished():
        stats = train_step(run)
        report(run, stats, _log)
        if cfg.eval_every and run.step % cfg.eval_every == 0:
            evaluate(run, _log)
        if time.time() - last_poll > args.poll_s:
            last_poll = time.time()
            new = sorted(str(p) for p in (work / "data").glob("train-p*.npy"))
            if new != loaded:
                loaded = new
                run.sampler.set_tokens(np.concatenate([np.load(p) for p in loaded]))
                run.cfg.data = loaded
                _log(f"step {run.step}: {len(run.sampler.tokens):,} training tokens from {len(loaded)} parts")
            stop = work / "stop_by.json"
            if stop.exists():
                at = json.loads(stop.read_text())["at"]
                if run.t0 + run.budget > at:
                    run.budget = max(at - run.t0, run.elapsed() + 1.0)
            write_status(step=run.step, loss=float(stats["loss"]), elapsed=run.elapsed(), budget=run.budget,
                         train_end_at=run.t0 + run.budget, train_tokens=len(run.sampler.tokens),
                         tok_per_s=run.step * run.tokens_per_step / max(run.elapsed(), 1e-9))
        if time.time() - last_snap > args.snapshot_s:  # the EMA weights, should the process die later
            from safetensors.torch import save_file

            last_snap = time.time()
            save_file({k: v.detach().float().cpu().contiguous() for k, v in (run.ema if run.ema is not None else run.model).state_dict().items()},
                      str(work / "snapshot.safetensors"))
    write_status(phase="export", step=run.step, elapsed=run.elapsed())
    t = time.time()
    if run.last_valid_step != run.step:
        evaluate(run, _log)
    tokens_seen = run.step * run.tokens_per_step
    prev = history[-1]
    entry = {"run": len(history), "name": NAME, "tokens_seen": tokens_seen,
             "cumulative_tokens": (prev.get("cumulative_tokens") or 0) + tokens_seen, "train_seconds": round(run.elapsed(), 1),
             "cumulative_train_seconds": round((prev.get("cumulative_train_seconds") or 0) + run.elapsed(), 1),
             "valid_nelbo": run.last_valid[0] if run.last_valid else None, "resumed_from": manifest["resume_model_id"],
             "hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
             "date": time.strftime("%Y-%m-%d")}
    info = export(run, _log, extra={"campaign": {"history": [*history, entry], "recipe": recipe}})
    run.metrics.close()
    export_s = time.time() - t
    final_model = load_checkpoint(Path(cfg.out) / NAME).model.to(device)
    final = evaluate_sets(final_model, work, plan, device, cfg)
    entry["model_id"] = info["model_id"]
    entry["valid_nelbo"] = final["valid128"]["nelbo"]
    entry["test_nelbo"] = {k: final[k]["nelbo"] for k in EVAL_SETS}
    history = [*history, entry]
    write_status(phase="packaging", export_s=export_s)
    keep = ("tokens_seen", "steps", "wall_time_s", "train_tokens_available", "epochs", "final_train_nelbo",
            "final_valid_nelbo", "export_valid_nelbo", "hardware", "params")
    rep = {"run": entry["run"], "model_id": info["model_id"], "resume_from": manifest["resume_from"],
           "resume_model_id": manifest["resume_model_id"], "recipe": recipe, "minutes": plan["minutes"],
           "train": {k: info.get(k) for k in keep} | {"tok_per_s": tokens_seen / max(info["wall_time_s"], 1e-9),
                                                       "parts_loaded": len(loaded)},
           "baseline": baseline, "final": final, "history": history,
           "eval_protocol": {"samples": plan["eval_samples"], "passes": plan["eval_passes"], "t_eps": 1e-4,
                             "valid128": "train.validate: first 128 windows of valid, 2 passes x 2 antithetic times, fixed draws"},
           "timing": {"baseline_eval_s": round(eval_s, 1), "export_and_final_eval_s": round(time.time() - t, 1),
                      "daemon_s": round(time.time() - plan["started"], 1)}}
    _package(work, Path(cfg.out) / NAME, rep)
    write_status(phase="done")
    _log(render_report(rep))
    return 0


def daemon(args) -> int:
    try:
        return _daemon(args)
    except BaseException:
        _log(traceback.format_exc())
        try:
            (Path(args.work) / "failed").write_text(traceback.format_exc())
        except OSError:
            pass
        raise


def _package(work: Path, model_dir: Path, rep: dict) -> None:
    """WORK/result: the export as a tar cut into 15 MiB pieces, run.tar.gz (metrics, log, plot),
    campaign.json, and DONE last."""
    result = work / "result"
    shutil.rmtree(result, ignore_errors=True)
    result.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(model_dir.iterdir()):
            tar.add(f, arcname=f.name)
    blob = buf.getvalue()
    pieces = [blob[i : i + OUT_FILE_LIMIT] for i in range(0, len(blob), OUT_FILE_LIMIT)]
    for i, piece in enumerate(pieces):
        (result / f"{NAME}.tar.part{i}").write_bytes(piece)
    with tarfile.open(result / "run.tar.gz", "w:gz") as tar:
        for name, arc in (("run/metrics.jsonl", "metrics.jsonl"), ("run/summary.json", "summary.json"),
                          ("run/loss.png", "loss.png"), ("daemon.log", "train.log")):
            if (work / name).exists():
                tar.add(work / name, arcname=arc)
    rep["package"] = {"tar_sha256": hashlib.sha256(blob).hexdigest(), "tar_bytes": len(blob), "pieces": len(pieces)}
    (result / "campaign.json").write_text(json.dumps(rep, indent=1) + "\n")
    (result / "DONE").write_text("ok\n")


def salvage(work: Path) -> bool:
    """The trainer died before its result: export its last EMA snapshot (int8, no evaluation)."""
    from ddcompress.model.denoiser import Denoiser
    from ddcompress.model.checkpoint import load_checkpoint, save_checkpoint

    snap = work / "snapshot.safetensors"
    if not snap.exists():
        return False
    from safetensors.torch import load_file

    plan = json.loads((work / "plan.json").read_text())
    manifest, s = plan["manifest"], _status(work)
    start = load_checkpoint(work / "resume")
    model = Denoiser(start.cfg)
    model.load_state_dict(load_file(str(snap)))
    history = manifest["history"]
    tokens = int(s.get("step", 0)) * plan["recipe"]["batch_size"] * start.cfg.seq_len
    entry = {"run": len(history), "name": NAME, "tokens_seen": tokens, "salvaged": True,
             "cumulative_tokens": (history[-1].get("cumulative_tokens") or 0) + tokens, "valid_nelbo": None,
             "train_seconds": s.get("elapsed"), "resumed_from": manifest["resume_model_id"], "date": time.strftime("%Y-%m-%d")}
    info = {"trained_by": "ddc train (gpu_campaign, salvaged snapshot)", "campaign": {"history": [*history, entry], "recipe": plan["recipe"]}}
    model_dir = work / "salvaged" / NAME
    model_id = save_checkpoint(model, model_dir, "int8", extra=info, max_shard_bytes=int(26e6))
    entry["model_id"] = model_id
    rep = {"run": entry["run"], "model_id": model_id, "salvaged": True, "resume_from": manifest["resume_from"],
           "resume_model_id": manifest["resume_model_id"], "recipe": plan["recipe"], "minutes": plan["minutes"],
           "train": {"steps": s.get("step", 0), "tokens_seen": tokens, "wall_time_s": s.get("elapsed", 0),
                     "train_tokens_available": s.get("train_tokens", 0)},
           "baseline": {}, "final": {}, "history": [*history, entry], "status": s}
    _package(work, model_dir, rep)
    return True


# =====================================================================================================


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    shared = ROOT.parent / "shared" / "data"
    p = sub.add_parser("prepare", help="here: tokenize and write the stage folders")
    p.add_argument("--stage", default=str(ROOT / ".stage-campaign"))
    p.add_argument("--cache", default=None, help="tokenized shards (default: STAGE/cache)")
    p.add_argument("--resume-from", default=None, help=f"model directory (default: {NAME} if shipped, else the default model)")
    p.add_argument("--train-dir", default=str(shared / "train"))
    p.add_argument("--train", nargs="*", default=None, help="training sources instead of TRAIN_DIR/train-*.jsonl.xz")
    p.add_argument("--valid", default=None, help="validation source instead of TRAIN_DIR/valid.jsonl.xz")
    p.add_argument("--eval-dir", default=str(shared / "eval"))
    p.add_argument("--parts", type=int, default=3, help="stage folders after part0 (one call each)")
    p.add_argument("--cap-bytes", type=int, default=None, help="bytes one part may hold (default: 64 MiB - tree - margin)")
    p.add_argument("--margin-mb", type=int, default=2)
    p.add_argument("--max-train-tokens", type=int, default=None, help="tests and subsets: cut the training tokens")
    p.add_argument("--eval-max-tokens", type=int, default=None, help="tests: cut each test set")
    p.add_argument("--part0-tokens", type=int, default=None, help="training tokens in part0 (default: what fits beside the checkpoint)")
    p = sub.add_parser("check", help="here: what each call carries, against the 64 MiB limit")
    p.add_argument("--stage", default=str(ROOT / ".stage-campaign"))
    p = sub.add_parser("collect", help="here: reassemble and verify what finish brought back")
    p.add_argument("files", help="the folder holding finish's $OUT files (the run tool's files_at)")
    p.add_argument("--to", default=str(ROOT / ".stage-campaign" / NAME))
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("release-check", help="here: held-out bits/byte of a candidate against the default model")
    p.add_argument("--candidate", default=str(ROOT / ".stage-campaign" / NAME))
    p.add_argument("--baseline", default=None, help="default: the current default model")
    p.add_argument("--eval-dir", default=str(shared / "eval"))
    p.add_argument("--slice-bytes", type=int, default=16384)
    p.add_argument("--slices", type=int, default=len(HELD_OUT))
    p.add_argument("--margin", type=float, default=0.03)
    p.add_argument("--out", default=None, help="also write the table here (Markdown)")
    for name in ("start", "add", "finish"):
        p = sub.add_parser(name, help="GPU machine: " + {"start": "unpack part0, start the trainer", "add": "unpack one more part",
                                                         "finish": "unpack the last part, wait, copy the result to --out"}[name])
        p.add_argument("--stage", default=None if name == "finish" else str(ROOT / ".stage-campaign" / "part0"), required=name == "add")
        p.add_argument("--work", default=WORK)
        if name == "start":
            p.add_argument("--minutes", type=float, default=8.0, help="training budget (the lr decay follows it)")
            p.add_argument("--device", default="cuda")
            p.add_argument("--wait-s", type=float, default=30.0, help="wait at most this long for the trainer to come up")
            p.add_argument("--eval-samples", type=int, default=2)
            p.add_argument("--eval-passes", type=int, default=4)
            for k, v in RECIPE.items():
                p.add_argument("--" + k.replace("_", "-"), type=type(v), default=None, help=f"recipe (default {v})")
        if name == "finish":
            p.add_argument("--out", default=os.environ.get("OUT", "out"))
            p.add_argument("--limit-s", type=float, default=560.0, help="end within this many seconds of the call's start")
            p.add_argument("--copy-s", type=float, default=20.0)
    p = sub.add_parser("daemon", help="the trainer (started by start)")
    p.add_argument("--work", default=WORK)
    p.add_argument("--poll-s", type=float, default=5.0)
    p.add_argument("--snapshot-s", type=float, default=150.0)
    args = ap.parse_args(argv)
    fn = {"prepare": prepare, "check": check, "collect": collect, "release-check": release_check, "start": start,
          "add": add, "finish": finish, "daemon": daemon}[args.cmd]
    rc = fn(args)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
