"""`ddc bench`: zero-shot perplexity bound and real coded size on the published evaluation corpora.

Per corpus, on one token stream (documents + EOS, cut into raw L-token chunks as SEDD does; a tail
shorter than L is dropped, as SEDD's chunking does):
  1. the continuous-time NELBO per GPT-2 token (Monte Carlo, antithetic t, adaptive until the standard
     error is under a target) -> the perplexity bound of the published tables;
  2. the bits ddc's range coder actually writes at each step count -> coded perplexity and bits/byte;
  3. general-purpose compressors on the same bytes.
Results go to a terminal table, Markdown (MD4 table layout), JSON and a PNG plot.
"""
from __future__ import annotations

import bz2
import datetime as dt
import gzip
import json
import lzma
import math
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

from dataclasses import asdict, dataclass, field
from typing import Callable

import click
import numpy as np

from . import __version__
from .datasets_eval import DATASETS, SEP, DatasetUnavailable, load_corpus, stream_bytes, token_stream
from .bench_report import plot, print_tables, to_markdown
from .elbo import estimate_nelbo_chunks
from .errors import DDCError
from .tokenizer import EOS_ID

DEFAULT_OUT_DIR = "benchmarks/results"  # used when run from the repository root
USER_OUT_DIR = "ddc-bench-results"  # elsewhere: a folder of its own, made only when there is a report
DATA_DIR_HINT = "pass --data-dir DIR with local copies (wikitext2/, ptb/, lambada/, lm1b/; e.g. ../shared/data/eval)"


def default_out_dir(cwd: str | Path | None = None) -> Path:
    """benchmarks/results when run from the ddc repository root, else ./ddc-bench-results."""
    cwd = Path(cwd if cwd is not None else os.getcwd())
    if (cwd / "benchmarks").is_dir() and (cwd / "ddcompress" / "bench.py").is_file():
        return Path(DEFAULT_OUT_DIR)
    return Path(USER_OUT_DIR)

@dataclass
class BenchOptions:
    """What `ddc bench` measures and how (the command line fills it; the report quotes it)."""

    steps: list[tuple[int, str]]  # (steps per chunk, grid) to code at
    split: str = "test"
    data_dir: str | None = None
    offline: bool = False
    max_tokens: int | None = None
    samples: int = 2  # antithetic t draws per chunk per NELBO pass
    batch: int = 4  # sequences per NELBO forward pass
    target: float = 0.005  # stop NELBO passes at this relative standard error
    max_passes: int = 32
    seed: int = 0
    device: str = "cpu"
    group_size: int = 8
    verify: bool = False
    baselines: bool = True
    model_name: str = "?"
    model_bytes: int | None = None
    extra: dict = field(default_factory=dict)


# progress(label, completed, total): a task's state; total 0 = the task is done
ProgressFn = Callable[[str, int, int], None]


PROTOCOL = (
    "Documents (WikiText articles, PTB sentences, LAMBADA passages, LM1B sentences) are detokenized, "
    "GPT-2 tokenized, each followed by EOS (50256), concatenated and cut into raw L-token chunks with no "
    "BOS/EOS wrap (SEDD's convention); a final piece shorter than L is dropped. Bits/byte divide by the "
    "UTF-8 bytes of the detokenized text plus one separator byte per document; the baselines compress "
    "exactly those bytes. Coded sizes are range-coder payload bytes (container header not counted)."
)


# -- metric 1: the NELBO bound ----------------------------------------------------------------------


# -- metric 2: real coded size ----------------------------------------------------------------------


def code_stream(lm, tokens: np.ndarray, steps: int, grid: str, seed: int, device: str, group_size: int,
                verify: bool = False, advance=None) -> dict:
    """Range-code tokens with ddc's coder; returns payload bytes, ideal bits, time, and a round-trip check."""
    from .codec import Coder
    from .layout import chunk_layout, group_layout
    from .errors import IntegrityError

    groups = group_layout(chunk_layout(len(tokens), lm.cfg.seq_len), group_size)
    coder = Coder(lm, steps, grid, seed, device)
    t0 = time.monotonic()
    results = [coder.encode_group(tokens, g, advance) for g in groups]
    secs = time.monotonic() - t0
    out = {"payload_bytes": sum(len(r.payload) for r in results), "ideal_bits": sum(r.ideal_bits for r in results),
           "seconds": secs, "verified": None}
    if verify:
        dec = np.zeros(len(tokens), dtype=np.int64)
        try:
            for g, r in zip(groups, results):
                coder.decode_group(dec, g, r.payload, r.chunk_crcs)
            out["verified"] = bool(np.array_equal(dec, tokens))
        except IntegrityError:
            out["verified"] = False
    return out


# -- baselines --------------------------------------------------------------------------------------


def _codecs() -> dict:
    """name -> (compress, decompress), or None where an optional module is missing."""
    c: dict = {
        "gzip -9": (lambda d: gzip.compress(d, 9, mtime=0), gzip.decompress),
        "bzip2 -9": (lambda d: bz2.compress(d, 9), bz2.decompress),
        "xz -9e": (lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
    }
    try:
        import zstandard

        c["zstd -22"] = (lambda d: zstandard.ZstdCompressor(level=22).compress(d), lambda b: zstandard.ZstdDecompressor().decompress(b))
    except ImportError:
        c["zstd -22"] = None
    try:
        import brotli

        c["brotli -11"] = (lambda d: brotli.compress(d, quality=11, lgwin=24), brotli.decompress)
    except ImportError:
        c["brotli -11"] = None
    try:
        import pyppmd  # PPMd var. I, order 6, 16 MiB (the NOTES anchor)

        c["PPMd o6"] = (lambda d: pyppmd.compress(d, max_order=6, mem_size=16 << 20),
                        lambda b: pyppmd.decompress(b, max_order=6, mem_size=16 << 20))
    except ImportError:
        c["PPMd o6"] = None
    return c


def baselines(data: bytes) -> dict:
    """Compressed size and bits/byte of each baseline on `data` (round trip checked); None if missing."""
    res = {}
    for name, fns in _codecs().items():
        if fns is None:
            res[name] = None
            continue
        packed = fns[0](data)
        if fns[1](packed) != data:
            raise RuntimeError(f"{name} failed its round trip")
        res[name] = {"bytes": len(packed), "bpb": 8 * len(packed) / len(data) if data else None}
    return res


# -- one corpus -------------------------------------------------------------------------------------


def usable_length(n: int, L: int) -> int:
    """Whole L-token chunks only (SEDD drops the remainder); a stream shorter than L is one chunk."""
    return n if n < L else n - n % L


def run_dataset(name: str, lm, opts: BenchOptions, progress: ProgressFn | None = None, done: dict | None = None) -> dict:
    """All metrics for one corpus; raises DatasetUnavailable if it cannot be had. `done` maps
    (source, split) to earlier records: WikiText-103 from a data dir is WikiText-2's file, measured once."""
    corpus = load_corpus(name, opts.split, opts.data_dir, opts.offline)
    if done is not None and (corpus.source, corpus.split) in done:
        return done[(corpus.source, corpus.split)] | {"dataset": name, "note": corpus.note}
    L = lm.cfg.seq_len
    tokens, truncated = token_stream(corpus.documents, opts.max_tokens)
    n = usable_length(len(tokens), L)
    dropped, tokens = len(tokens) - n, tokens[:n]
    if n == 0:
        raise DatasetUnavailable(f"{name}: no text found in {corpus.source}")
    data = stream_bytes(tokens)
    rec = {
        "dataset": name, "available": True, "split": corpus.split, "source": corpus.source, "note": corpus.note,
        "model": opts.model_name, "model_id": lm.id, "model_bytes": opts.model_bytes,
        "documents": int(np.count_nonzero(tokens == EOS_ID)), "bytes": len(data), "gpt2_tokens": int(n),
        "chunks": int(math.ceil(n / L)), "seq_len": L, "truncated": truncated, "max_tokens": opts.max_tokens,
        "dropped_tail_tokens": int(dropped),
    }
    chunks = tokens.reshape(-1, min(L, n)).astype(np.int64)
    progress = progress or (lambda label, completed, total: None)
    per_pass = chunks.size * opts.samples
    state = {"done": 0, "total": 2 * per_pass}  # two passes at least; grows as passes are added
    label = f"{name}: NELBO"

    def adv_nelbo(k):
        state["done"] += k
        if state["done"] > state["total"]:
            state["total"] += per_pass
        progress(label, state["done"], state["total"])

    t0 = time.monotonic()
    ne = estimate_nelbo_chunks(lm.model, chunks, opts.samples, opts.batch, opts.target, 2, opts.max_passes,
                      opts.seed, opts.device, adv_nelbo)
    progress(label, state["done"], 0)
    nat_tok = ne["nats"] / n
    rec.update({
        "nelbo_nats_per_token": nat_tok, "nelbo_stderr_nats_per_token": ne["stderr_nats"] / n,
        "nelbo_rel_stderr": ne["stderr_nats"] / ne["nats"], "nelbo_bits": ne["nats"] / math.log(2),
        "nelbo_bpb": ne["nats"] / math.log(2) / len(data), "nelbo_passes": ne["passes"],
        "nelbo_draws_per_chunk": ne["draws_per_chunk"], "nelbo_seconds": time.monotonic() - t0,
        "elbo_ppl": math.exp(nat_tok), "elbo_stderr": math.exp(nat_tok) * ne["stderr_nats"] / n,
    })
    coded = []
    for i, (steps, grid) in enumerate(opts.steps):
        label, coded_tokens = f"{name}: code {steps} steps", [0]

        def adv_code(k, label=label, coded_tokens=coded_tokens):
            coded_tokens[0] += k
            progress(label, coded_tokens[0], n)

        c = code_stream(lm, tokens, steps, grid, opts.seed, opts.device, opts.group_size, opts.verify and i == 0, adv_code)
        progress(label, n, 0)
        bits = 8 * c["payload_bytes"]
        coded.append({"steps": steps, "grid": grid, "payload_bytes": c["payload_bytes"], "coded_bits": bits,
                      "ideal_bits": c["ideal_bits"], "bits_per_token": bits / n, "coded_ppl": 2 ** (bits / n),
                      "bpb": bits / len(data), "ratio_to_nelbo": bits / rec["nelbo_bits"],
                      "seconds": c["seconds"], "tokens_per_s": n / max(c["seconds"], 1e-9), "verified": c["verified"]})
    rec["steps"] = [c["steps"] for c in coded]
    rec["coded"] = coded
    rec["coded_ppl"] = {str(c["steps"]): c["coded_ppl"] for c in coded}
    rec["bpb"] = {str(c["steps"]): c["bpb"] for c in coded}
    rec["baselines"] = baselines(data) if opts.baselines else {}
    if done is not None:
        done[(corpus.source, corpus.split)] = rec
    return rec


# -- command line -----------------------------------------------------------------------------------


class _RawArgsCommand(click.Command):
    """Keeps the exact arguments so the report can quote the command that made it."""

    def parse_args(self, ctx, args):
        ctx.meta["bench_args"] = list(args)
        return super().parse_args(ctx, args)


def parse_steps(values: tuple[str, ...], L: int) -> list[tuple[int, str]]:
    """'16', '16,64', 'L' (one token per step) -> [(steps, grid)] as ddc codes them, deduplicated."""
    from .plan import DEFAULT_LEVEL, LEVELS, steps_for

    raw = [v for s in values for v in re.split(r"[,\s]+", s.strip()) if v] or [str(LEVELS[DEFAULT_LEVEL])]
    out: list[tuple[int, str]] = []
    for v in raw:
        if v.upper() in ("L", "MAX"):
            v = str(L)
        if not v.isdigit():
            raise click.BadParameter(f"{v!r} is not a step count", param_hint="--steps")
        sg = steps_for(None, int(v), L)
        if sg not in out:
            out.append(sg)
    return out


def _cpu_name() -> str:
    try:  # platform.processor() is often empty on Linux
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    """Where a benchmark ran (informational: coded sizes do not depend on it)."""
    import importlib.metadata

    import torch

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine()
    hw = name if dev.type == "cuda" else f"{_cpu_name()} ({os.cpu_count()} CPUs)"
    return {"device": dev.type, "device_name": name, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "constriction": importlib.metadata.version("constriction"),
            "threads": torch.get_num_threads(), "hardware": hw, "platform": platform.platform(),
            "python": platform.python_version()}


@click.command("bench", cls=_RawArgsCommand)
@click.option("--dataset", "datasets", multiple=True, default=("all",), show_default=True,
              type=click.Choice(list(DATASETS) + ["all"]), help="Corpus to measure (repeatable).")
@click.option("--split", type=click.Choice(["test", "validation"]), default="test", show_default=True,
              help="WikiText/PTB split (LAMBADA and LM1B are always test).")
@click.option("--model", default=None, help="Shipped model name or checkpoint directory [default: ddc-small].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Local corpora (wikitext2/, ptb/, lambada/, lm1b/); else the hub.")
@click.option("--offline", is_flag=True, help="Never touch the network (hub datasets only from the local cache).")
@click.option("--steps", "steps", multiple=True, help="Steps per chunk to code at: '--steps 16 64 1024', '16,64' or 'L' [default: 16].")
@click.argument("more_steps", nargs=-1, metavar="[STEPS]...")
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Cut each corpus to its first N tokens (after joining).")
@click.option("--samples", type=click.IntRange(1), default=2, show_default=True, help="Antithetic t draws per chunk per NELBO pass.")
@click.option("--max-passes", type=click.IntRange(2), default=32, show_default=True, help="Cap on NELBO passes.")
@click.option("--target-stderr", type=float, default=0.005, show_default=True, help="Stop NELBO passes at this relative standard error.")
@click.option("--batch", type=click.IntRange(1), default=None, help="Sequences per NELBO forward pass [default: 4 on CPU, 16 on CUDA].")
@click.option("--group-size", type=click.IntRange(1), default=None, help="Chunks per coding batch (default 8 on CPU, 64 on CUDA; ddcompress/plan.py).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the unmasking orders and the NELBO draws.")
@click.option("--verify", is_flag=True, help="Decode the first step count's stream and check it round-trips.")
@click.option("--no-baselines", is_flag=True, help="Skip gzip/bzip2/xz/zstd/brotli/PPMd.")
@click.option("--out", "--out-dir", "out_dir", type=click.Path(file_okay=False), default=None,
              help=f"Directory for the reports [default: {DEFAULT_OUT_DIR} in the ddc repository, else ./{USER_OUT_DIR}].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="JSON report path [default: OUT_DIR/bench-MODEL-DATE.json].")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None, help="Markdown report path.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of internal errors.")
@click.option("--plot", "png_path", type=click.Path(dir_okay=False), default=None, help="PNG plot path (needs matplotlib).")
@click.option("--render", "render_json", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Measure nothing: re-render the Markdown and plot of a JSON report (next to it, or --markdown/--plot).")
def bench_command(datasets, split, model, data_dir, offline, steps, more_steps, max_tokens, samples, max_passes,
                  target_stderr, batch, group_size, device, seed, verify, no_baselines, out_dir, json_path, md_path, verbose,
                  png_path, render_json):
    """Zero-shot perplexity bound, coded bits/byte and baselines on the published corpora."""
    if render_json:
        from .bench_report import render

        wrote = render(Path(render_json), Path(md_path) if md_path else None, Path(png_path) if png_path else None)
        click.echo("wrote " + ", ".join(map(str, wrote)), err=True)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from . import registry
    from .api import _set_deterministic
    from .plan import default_group_size
    from .checkpoint import weight_files

    lm = registry.resolve(model)  # ModelError -> one line from the CLI
    L = lm.cfg.seq_len
    names = list(DATASETS) if "all" in datasets else list(dict.fromkeys(datasets))
    model_name = lm.path.name if lm.path else "in-memory"
    weights = weight_files(lm.path) if lm.path else []
    group_size = group_size or default_group_size(device)
    opts = BenchOptions(
        steps=parse_steps(tuple(steps) + tuple(more_steps), L), split=split, data_dir=data_dir, offline=offline,
        max_tokens=max_tokens, samples=samples, target=target_stderr, max_passes=max_passes, seed=seed, device=device,
        # the NELBO batch holds logits of every masked row (B*L*V floats): smaller than the coding groups
        batch=batch or (16 if device.startswith("cuda") else 4), group_size=group_size, verify=verify,
        baselines=not no_baselines, model_name=model_name,
        model_bytes=sum(f.stat().st_size for f in weights) if weights else None)
    _set_deterministic(device)  # as `ddc compress` codes
    lm.model.to(device).eval()
    now = dt.datetime.now(dt.timezone.utc)
    report = {
        "tool": "ddc bench", "ddc_version": __version__, "date": now.isoformat(timespec="seconds"),
        "command": "ddc bench " + shlex.join(click.get_current_context().meta.get("bench_args", [])),
        "machine": machine_info(device),
        "model": {"name": model_name, "id": lm.id, "path": str(lm.path) if lm.path else None, "bytes": opts.model_bytes,
                  "params": lm.model.num_params(), "seq_len": L},
        "protocol": PROTOCOL, "separator_byte": SEP.hex(),
        "settings": {k: v for k, v in asdict(opts).items() if k in ("split", "max_tokens", "samples", "max_passes", "target", "seed", "group_size", "batch", "device")}
                    | {"steps": [s for s, _ in opts.steps], "grids": [g for _, g in opts.steps]},
        "results": [],
    }
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty())
    tasks: dict = {}

    def on_progress(label: str, completed: int, total: int) -> None:  # the measuring side's callback -> rich
        if total == 0:
            if label in tasks:
                bar.remove_task(tasks.pop(label))
            return
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=completed, total=total)

    done: dict = {}
    with bar:
        for name in names:
            try:
                rec = run_dataset(name, lm, opts, on_progress, done)
            except DatasetUnavailable as err:
                bar.console.print(f"{err}" + ("" if data_dir else f"; {DATA_DIR_HINT}"), highlight=False, soft_wrap=True)
                report["results"].append({"dataset": name, "available": False, "reason": str(err), "model": model_name})
                continue
            cut = f", truncated to {max_tokens:,} tokens" if rec["truncated"] else ""
            bar.console.print(f"{name}: {rec['gpt2_tokens']:,} tokens{cut}, NELBO ppl {rec['elbo_ppl']:.2f} ± {rec['elbo_stderr']:.2f}, "
                              + ", ".join(f"{c['steps']} steps {c['bpb']:.3f} bpb" for c in rec["coded"]), highlight=False, soft_wrap=True)
            report["results"].append(rec)
    if not any(r["available"] for r in report["results"]):  # nothing measured: no (empty) report files
        raise DDCError("no dataset could be measured (see the lines above)" + ("" if data_dir else f"; {DATA_DIR_HINT}"))
    print_tables(report)
    stem = Path(out_dir or default_out_dir()) / f"bench-{re.sub(r'[^A-Za-z0-9_.-]', '_', model_name)}-{now.strftime('%Y%m%d-%H%M%S')}"
    paths = {k: Path(p) if p else stem.with_suffix(ext) for k, p, ext in (("json", json_path, ".json"), ("md", md_path, ".md"), ("png", png_path, ".png"))}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["md"].write_text(to_markdown(report))
    wrote = [paths["json"], paths["md"]]
    if plot(report, paths["png"]):
        wrote.append(paths["png"])
    click.echo("wrote " + ", ".join(map(str, wrote)), err=True)
