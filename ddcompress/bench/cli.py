"""`ddc bench`'s command line: options -> BenchOptions, rich progress from the measuring side's callback,
reports written where the user asks (run.py measures, report.py renders)."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
from dataclasses import asdict
from pathlib import Path

import click

from .. import __version__
from .run import PROTOCOL, BenchOptions, run_dataset
from .report import plot, print_tables, to_markdown
from .corpora import DATASETS, SEP, DatasetUnavailable
from ..errors import DDCError
from ..progress import Bars

DEFAULT_OUT_DIR = "."  # the current directory, wherever ddc runs (the checkout's benchmarks/results only by --out)
DATA_DIR_HINT = "pass --data-dir DIR with local copies (wikitext2/, ptb/, lambada/, lm1b/; e.g. ../shared/data/eval)"


def default_out_dir(cwd: str | Path | None = None) -> Path:
    """Where reports go without --out: the current directory, also in a ddc checkout (a run never
    writes into the repository's benchmarks/results unless asked to)."""
    return Path(DEFAULT_OUT_DIR)


class _RawArgsCommand(click.Command):
    """Keeps the exact arguments so the report can quote the command that made it."""

    def parse_args(self, ctx, args):
        ctx.meta["bench_args"] = list(args)
        return super().parse_args(ctx, args)


def parse_steps(values: tuple[str, ...], L: int) -> list[tuple[int, str]]:
    """'16', '16,64', 'L' (one token per step) -> [(steps, grid)] as ddc codes them, deduplicated."""
    from ..codec.plan import DEFAULT_LEVEL, LEVELS, plan_for

    raw = [v for s in values for v in re.split(r"[,\s]+", s.strip()) if v] or [str(LEVELS[DEFAULT_LEVEL])]
    out: list[tuple[int, str]] = []
    for v in raw:
        if v.upper() in ("L", "MAX"):
            v = str(L)
        if not v.isdigit():
            raise click.BadParameter(f"{v!r} is not a step count", param_hint="--steps")
        p = plan_for(None, int(v), L)
        sg = (p.steps, p.grid)
        if sg not in out:
            out.append(sg)
    return out


def cpu_name() -> str:
    """The CPU's model name (benchmarks print it with their results)."""
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
    hw = name if dev.type == "cuda" else f"{cpu_name()} ({os.cpu_count()} CPUs)"
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
@click.option("--group-size", type=click.IntRange(1), default=None, help="Chunks per coding batch (default 8 on CPU, 64 on CUDA; ddcompress/codec/plan.py).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the unmasking orders and the NELBO draws.")
@click.option("--verify", is_flag=True, help="Decode the first step count's stream and check it round-trips.")
@click.option("--no-baselines", is_flag=True, help="Skip gzip/bzip2/xz/zstd/brotli/PPMd.")
@click.option("--out", "--out-dir", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Directory for the reports [default: the current directory].")
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
        from .report import render

        wrote = render(Path(render_json), Path(md_path) if md_path else None, Path(png_path) if png_path else None)
        click.echo("wrote " + ", ".join(map(str, wrote)), err=True)
        return
    from ..model import registry
    from ..codec.plan import default_group_size
    from ..model.checkpoint import weight_files

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
    bar = Bars(("{task.description}", "bar", "percent", "elapsed"))

    def on_progress(label: str, completed: int, total: int) -> None:  # the measuring side's callback -> the bars
        if total == 0:
            bar.remove(label)
        else:
            bar.update(label, completed, total)

    done: dict = {}
    with bar:
        for name in names:
            try:
                rec = run_dataset(name, lm, opts, on_progress, done)
            except DatasetUnavailable as err:
                bar.print(f"{err}" + ("" if data_dir else f"; {DATA_DIR_HINT}"), highlight=False, soft_wrap=True)
                report["results"].append({"dataset": name, "available": False, "reason": str(err), "model": model_name})
                continue
            cut = f", truncated to {max_tokens:,} tokens" if rec["truncated"] else ""
            bar.print(f"{name}: {rec['gpt2_tokens']:,} tokens{cut}, NELBO ppl {rec['elbo_ppl']:.2f} ± {rec['elbo_stderr']:.2f}, "
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
