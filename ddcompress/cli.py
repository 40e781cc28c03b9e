"""`ddc`: the command line, with gzip/zstd conventions.

    ddc compress FILE...      -> FILE.ddc (input kept)      ddc -d / ddc decompress FILE.ddc
    ddc info FILE.ddc [--json]                              ddc test FILE.ddc
Exit status: 0 ok, 1 error, 2 usage error.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click

from .errors import DDCError

SUFFIX = ".ddc"
_ALIASES = {"-d": "decompress", "--decompress": "decompress", "-t": "test", "--test": "test", "-l": "info", "--list": "info", "-z": "compress", "--compress": "compress"}


def _err(msg: str) -> None:
    click.echo(f"ddc: {msg}", err=True)


class _Progress:
    """A rich progress bar (tokens/s) on stderr that appears only once work has run for a second."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled and sys.stderr.isatty()
        self.total, self.done, self.t0, self.bar, self.task = 0, 0, time.monotonic(), None, None

    def start(self, total: int) -> None:
        self.total, self.t0 = total, time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is None and time.monotonic() - self.t0 > 1.0:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                TextColumn("{task.completed:,.0f}/{task.total:,.0f} tok"),
                                TextColumn("{task.fields[rate]:,.0f} tok/s"), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, rate=0.0)
        if self.bar is not None:
            rate = self.done / max(time.monotonic() - self.t0, 1e-9)
            self.bar.update(self.task, completed=self.done, rate=rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _read_input(name: str) -> bytes:
    if name == "-":
        if sys.stdin.isatty():
            raise click.UsageError("no input file and standard input is a terminal (see ddc --help)")
        return sys.stdin.buffer.read()
    p = Path(name)
    if p.is_dir():
        raise DDCError(f"{name}: is a directory")
    return p.read_bytes()


def _write_atomic(path: Path, data: bytes, force: bool) -> None:
    """Write via a temp file + rename in the same directory: never a partial or clobbered file."""
    if path.exists() and not force:
        raise DDCError(f"{path}: already exists; use -f to overwrite")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent or Path(".")))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode of a new file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _emit(data: bytes, out: Path | None, to_stdout: bool, force: bool, binary_out: bool) -> None:
    if to_stdout:
        if binary_out and sys.stdout.isatty() and not force:
            raise DDCError("refusing to write compressed data to a terminal (use -o, redirect, or -f)")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_atomic(out, data, force)


class DdcGroup(click.Group):
    """Adds zstd-style shortcuts: `ddc -d F`, `ddc -t F`, `ddc -l F`, and `ddc FILE` = compress."""

    def parse_args(self, ctx, args):
        ctx.meta["ddc.verbose"] = "-v" in args or "--verbose" in args
        if args and args[0] in _ALIASES:
            args = [_ALIASES[args[0]]] + args[1:]
        elif args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["compress"] + args
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        verbose = ctx.meta.get("ddc.verbose", False)  # this command line, not the host's sys.argv
        try:
            return super().invoke(ctx)
        except DDCError as err:
            _err(str(err))
        except OSError as err:
            _err(f"{err.filename + ': ' if err.filename else ''}{err.strerror or err}")
        except MemoryError:
            _err("out of memory")
        except KeyboardInterrupt:
            _err("interrupted")
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as err:  # never a traceback for users; -v shows it
            if verbose:
                raise
            _err(f"internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} (run with -v for details)")
        ctx.exit(1)


@click.group(cls=DdcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ddcompress", prog_name="ddc")
def main():
    """Lossless text compression with masked diffusion language models."""


def _level_options(f):
    for lv in range(9, 0, -1):
        f = click.option(f"-{lv}", "level", flag_value=lv, help=None if lv not in (1, 5, 9) else
                         {1: "fastest (2 steps per chunk)", 5: "default (16 steps per chunk)",
                          9: "one token per step: the ELBO (slowest)"}[lv])(f)
    return f


def _common(f):
    f = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(f)
    f = click.option("-v", "--verbose", is_flag=True, help="Print sizes, bits/byte and speed.")(f)
    f = click.option("--device", default="cpu", show_default=True, help="cpu or cuda (decode on the kind that encoded).")(f)
    f = click.option("--model", "model", default=None, help="Shipped model name or checkpoint directory [default: ddc-small].")(f)
    f = click.option("-f", "--force", is_flag=True, help="Overwrite existing files; write binary to a terminal.")(f)
    f = click.option("-k", "--keep", is_flag=True, help="Keep input files (always on; for gzip compatibility).")(f)
    f = click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to standard output.")(f)
    f = click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Output file (one input only).")(f)
    return f


def _outputs(files, output, to_stdout):
    files = files or ("-",)
    if output and len(files) > 1:
        raise DDCError("-o takes a single input file")
    return files


@main.command()
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True))
@_common
@_level_options
@click.option("--steps", type=int, default=None, help="Reverse steps per chunk (overrides the level; >= L means one token per step).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the unmasking orders (stored in the file).")
@click.option("--method", type=click.Choice(["auto", "mdm", "xz", "store"]), default="auto", show_default=True,
              help="auto: the model, unless the input looks binary or xz (or a stored copy) comes out smaller.")
@click.option("--group-size", type=int, default=None, help="Chunks per forward batch (default 8 on CPU, 64 on CUDA).")
def compress(files, output, to_stdout, keep, force, model, device, verbose, quiet, level, steps, seed, method, group_size):
    """Compress FILES (or stdin) to FILE.ddc; inputs are kept."""
    from . import api

    for name in _outputs(files, output, to_stdout):
        stdout = to_stdout or (name == "-" and output is None)
        if not stdout and output is None and name.endswith(SUFFIX) and not force:
            raise DDCError(f"{name}: already has {SUFFIX} suffix (use -f to compress anyway)")
        out = None if stdout else Path(output or name + SUFFIX)
        if out is not None and out.exists() and not force:
            raise DDCError(f"{out}: already exists; use -f to overwrite")
        data = _read_input(name)
        prog = _Progress(f"compress {name}", not quiet)
        t0 = time.monotonic()
        try:
            blob = api.compress(data, level=level, steps=steps, model=model, device=device, seed=seed,
                                group_size=group_size, method=method, progress=prog.advance, on_start=prog.start)
        finally:
            prog.close()
        _emit(blob, out, stdout, force, True)
        if verbose and not quiet:
            _summary(name, len(data), blob, time.monotonic() - t0)


def _summary(name: str, n_in: int, blob: bytes, secs: float) -> None:
    from .api import info

    h = info(blob)
    bpb = f"{8 * len(blob) / n_in:.3f} bits/byte" if n_in else "-"
    extra = ""
    if h.get("ideal_bits"):
        extra = f", {h['tokens']} tokens, {h['steps']} steps, coded/ideal {8 * len(blob) / h['ideal_bits']:.4f}"
    click.echo(f"{name}: {n_in} -> {len(blob)} bytes, {bpb} [{h['method']}{extra}], {n_in / 1024 / max(secs, 1e-9):.2f} KB/s", err=True)


@main.command()
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True))
@_common
def decompress(files, output, to_stdout, keep, force, model, device, verbose, quiet):
    """Decompress FILE.ddc to FILE (or stdout)."""
    from . import api

    for name in _outputs(files, output, to_stdout):
        stdout = to_stdout or (name == "-" and output is None)
        out = None
        if not stdout:
            if output is None and not name.endswith(SUFFIX):
                raise DDCError(f"{name}: unknown suffix (expected {SUFFIX}); use -o or -c")
            out = Path(output or name[: -len(SUFFIX)])
            if out.exists() and not force:
                raise DDCError(f"{out}: already exists; use -f to overwrite")
        blob = _read_input(name)
        prog = _Progress(f"decompress {name}", not quiet)
        t0 = time.monotonic()
        try:
            data = api.decompress(blob, model=model, device=device, progress=prog.advance, on_start=prog.start)
        finally:
            prog.close()
        _emit(data, out, stdout, force, False)
        if verbose and not quiet:
            click.echo(f"{name}: {len(blob)} -> {len(data)} bytes, {len(data) / 1024 / max(time.monotonic() - t0, 1e-9):.2f} KB/s", err=True)


@main.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--model", default=None, help="Model name or checkpoint directory (default: found by the file's model id).")
@click.option("--device", default="cpu", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def test_cmd(files, model, device, quiet):
    """Decode FILES and verify every checksum; write nothing."""
    from . import api

    for name in files:
        prog = _Progress(f"test {name}", not quiet)
        try:
            data = api.decompress(_read_input(name), model=model, device=device, progress=prog.advance, on_start=prog.start)
        finally:
            prog.close()
        if not quiet:
            click.echo(f"{name}: OK ({len(data)} bytes)")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(files, as_json):
    """Show what a .ddc file holds (header, sizes, model, profile) without decoding it."""
    from . import api

    rows = []
    for name in files:
        h = api.info(_read_input(name))
        h["file"] = name
        rows.append(h)
    if as_json:
        click.echo(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2, sort_keys=True))
        return
    for h in rows:
        bpb = f"{h['bits_per_byte']:.3f}" if h["bits_per_byte"] is not None else "-"
        click.echo(f"{h['file']}: format {h['format_version']}, method {h['method']}, "
                   f"{h['original_bytes']} -> {h['compressed_bytes']} bytes ({bpb} bits/byte)")
        if h["method"] == "mdm":
            p = h.get("profile", {})
            click.echo(f"  model {h['model_name']} ({h['model_id']}), tokenizer {h['tokenizer']} ({h['tokenizer_id']}), "
                       f"L={h['seq_len']}, {h['steps']} steps ({h['grid']} grid), seed {h['seed']}, group {h['group_size']}")
            click.echo(f"  {h['tokens']} tokens in {h['chunks']} chunks, ideal {h['ideal_bits'] / 8:.0f} bytes "
                       f"(coded/ideal {8 * h['compressed_bytes'] / max(h['ideal_bits'], 1e-9):.4f})")
            click.echo(f"  made on {p.get('device')} ({p.get('device_name')}, {p.get('cpu_capability')}), {p.get('dtype')}, "
                       f"torch {p.get('torch')}, constriction {p.get('constriction')}")


@main.command("models")
def models_cmd():
    """List the shipped models and their ids."""
    from . import registry

    for name, path in registry.available_models().items():
        lm = registry.resolve(str(path))
        c = lm.cfg
        default = " (default)" if name == registry.DEFAULT_MODEL else ""
        click.echo(f"{name}{default}: id {lm.id}, {c.n_layer}x{c.d_model}, L={c.seq_len}, "
                   f"{lm.model.num_params() / 1e6:.1f}M params, {path}")


def _register_subcommands() -> None:
    """Subcommands that live in their own modules (training, benchmarks)."""
    from .bench import bench_command
    from .train import train_command

    main.add_command(train_command, "train")
    main.add_command(bench_command, "bench")


_register_subcommands()

if __name__ == "__main__":
    main()
