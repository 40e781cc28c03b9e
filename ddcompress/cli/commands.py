"""`ddc`: the command line, with gzip/zstd conventions.

    ddc FILE...  /  ddc compress FILE...   -> FILE.ddc (inputs kept; --rm removes them once verified)
    ddc -d FILE.ddc  /  ddc decompress     ddc -t / ddc test FILE.ddc     ddc -l / ddc info FILE.ddc [--json]

The mode flags (-d, -t, -l, -z) may stand anywhere among the options, alone or combined (`-dc`, `-kd`,
`-1c`); `--` ends the options. Many files: each failure is reported on one line naming its file, the
others are still done, and the exit status is that of the worst failure.
Exit status: 0 ok, 1 error, 2 usage error, 130 interrupted.

Importing this module does not import torch: `--help`, `--version`, `info` and usage errors answer at
once; the model (and torch) load only when a command needs them.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

# torch's CPU allocations of 2 MB and more on transparent huge pages (read at torch's first allocation):
# the exact forward's activations (tens of MB per layer) then cost fewer TLB misses, one step 1.03x on
# this project's 2-vCPU VM (median of 5 paired runs). Set here, for the command line only.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .. import __version__
from .args import DdcGroup
from .files import (_check_output, _describe, _display, _emit, _err, _input_status, _isatty, _Progress,
                        _read_input, _remove_input)
from ..codec.container import info as _info
from ..errors import DDCError
from ..codec.plan import batch_help, group_size_help

SUFFIX = ".ddc"


def _check_device(device: str) -> None:
    """A device torch cannot use is a one-line error before any work (api.check_device, which imports
    torch only for a device other than cpu)."""
    from .. import api

    api.check_device(device, label=f"--device {device}")


def _plan(files, output, to_stdout, keep, rm) -> tuple[tuple[str, ...], str | None, bool]:
    """Shared usage checks of compress/decompress: `-o -` is stdout; -o takes one input; --rm needs an
    output file. Returns (files, output, to_stdout)."""
    files = files or ("-",)
    if output == "-":
        output, to_stdout = None, True
    if output is not None and to_stdout:
        raise click.UsageError("-o and -c contradict each other")
    if output is not None and len(files) > 1:
        raise click.UsageError("-o takes a single input file")
    if rm and keep:
        raise click.UsageError("--rm and -k contradict each other")
    if rm and to_stdout:
        raise click.UsageError("--rm removes an input only after writing an output file; it does not go with -c / -o -")
    return files, output, to_stdout


def _each(files, work) -> int:
    """work(name) for every file; a file that fails (DDCError, OSError) is one line naming it and the
    others still run. Returns how many failed (`_finish` turns any into exit status 1)."""
    failed = 0
    for name in files:
        try:
            work(name)
        except (DDCError, OSError) as err:
            _err(_describe(name, err))
            failed += 1
    return failed


def _finish(failed: int) -> None:
    if failed:
        raise click.exceptions.Exit(1)


@click.group(cls=DdcGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=(
    "gzip-style: `ddc FILE` compresses; -d, -t, -l choose decompress, test, info anywhere among the "
    "options (`ddc -dc F.ddc`). Inputs are kept unless --rm. Exit status: 0 ok, 1 error, 2 usage."))
@click.version_option(__version__, "-V", "--version", prog_name="ddc")
def main():
    """Lossless text compression with masked diffusion language models."""


def _level_options(f):
    from ..codec.plan import DEFAULT_LEVEL, LEVELS, level_help

    for lv in sorted(LEVELS, reverse=True):
        shown = lv in (min(LEVELS), DEFAULT_LEVEL, max(LEVELS))
        f = click.option(f"-{lv}", "level", flag_value=lv, help=level_help(lv) if shown else None)(f)
    return f


class ByteSize(click.ParamType):
    """A byte count: 1000000, 64K, 512M, 2G, 1T, also written KiB/MiB/GiB/TiB (powers of 1024, as xz's
    --memlimit)."""
    name = "SIZE"
    UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip()
        unit = text.lstrip("0123456789")
        number, unit = text[: len(text) - len(unit)], unit.upper().removesuffix("IB").removesuffix("B")
        if not number or unit not in self.UNITS:
            self.fail(f"{value!r} is not a size (e.g. 1000000, 64K, 512M, 2G)", param, ctx)
        return int(number) << self.UNITS[unit]


_max_output = click.option("--max-output", type=ByteSize(), default=None,
                           help="Refuse, before decoding anything, a file that claims to decode to more bytes (e.g. 2G).")


def _common(f):
    f = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(f)
    f = click.option("-v", "--verbose", is_flag=True, help="Print sizes, bits/byte and speed.")(f)
    f = click.option("--batch", "batch", type=click.IntRange(min=1), default=None, help=batch_help())(f)
    f = click.option("--device", default="cpu", show_default=True, help="cpu or cuda (a file decodes on either).")(f)
    f = click.option("--model", "model", default=None, help="Shipped model name or checkpoint directory [default: ddc-small].")(f)
    f = click.option("-f", "--force", is_flag=True, help="Overwrite existing files; write binary to a terminal.")(f)
    f = click.option("--rm", "rm", is_flag=True, help="Remove each input once its output is written (and, when compressing, verified by decoding it).")(f)
    f = click.option("-k", "--keep", is_flag=True, help="Keep input files: the default (accepted for gzip compatibility); contradicts --rm.")(f)
    f = click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to standard output.")(f)
    f = click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default=None,
                     help="Output file (one input only); '-' is standard output.")(f)
    return f


@main.command()
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True))
@_common
@_level_options
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Reverse steps per chunk (overrides the level; >= L means one token per step).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the unmasking orders (stored in the file).")
@click.option("--method", type=click.Choice(["auto", "mdm", "xz", "store"]), default="auto", show_default=True,
              help="auto: the model, unless the input looks binary or xz (or a stored copy) comes out smaller.")
@click.option("--group-size", type=click.IntRange(min=1), default=None, help=group_size_help())
def compress(files, output, to_stdout, keep, rm, force, model, device, batch, verbose, quiet, level, steps, seed, method,
             group_size):
    """Compress FILES (or stdin) to FILE.ddc; inputs are kept (unless --rm)."""
    files, output, to_stdout = _plan(files, output, to_stdout, keep, rm)
    if not force and _isatty(sys.stdout) and (to_stdout or (output is None and "-" in files)):
        raise DDCError("refusing to write compressed data to a terminal (use -o, redirect, or -f)")
    _check_device(device)
    opts = dict(level=level, steps=steps, model=model, device=device, seed=seed, group_size=group_size, method=method,
                batch_chunks=batch)
    _finish(_each(files, lambda name: _compress_one(name, output, to_stdout, force, rm, verbose and not quiet, quiet, opts)))


def _compress_one(name: str, output: str | None, to_stdout: bool, force: bool, rm: bool, verbose: bool, quiet: bool,
                  opts: dict) -> None:
    stdout = to_stdout or (name == "-" and output is None)
    if not stdout and output is None and name.endswith(SUFFIX) and not force:
        raise DDCError(f"already has {SUFFIX} suffix (use -f to compress anyway)")
    out = None if stdout else Path(output or name + SUFFIX)
    removing = rm and name != "-" and out is not None
    if name != "-":  # a FIFO or device: refused before the output is looked at (unless -f)
        _input_status(name, force, removing, names_output=out is not None and output is None)
    if out is not None:
        _check_output(out, force, name)
    data, src = _read_input(name, force, removing)
    from .. import api

    prog = _Progress(f"compress {_display(name)}", not quiet)
    t0 = time.monotonic()
    timings: dict = {}
    try:
        blob = api.compress(data, **opts, progress=prog.advance, on_start=prog.start, timings=timings)
    finally:
        prog.close()
    secs = time.monotonic() - t0
    if removing:  # decode what will be written before the input goes
        try:
            same = api.decompress(blob, model=opts["model"], device=opts["device"], batch_chunks=opts["batch_chunks"]) == data
        except DDCError as err:
            raise DDCError(f"verification failed ({err}); input kept, nothing written") from err
        if not same:
            raise DDCError("verification failed (decoded data differs); input kept, nothing written")
    _emit(blob, out, force, src)
    if removing:
        _remove_input(name, src, "compressed")
    if verbose:
        _summary(_display(name), len(data), blob, secs, timings)


def _arithmetic() -> str:
    """What native code ran in this process (native.kernels.status), e.g. ", C kernels, rANS in C,
    mixing in C"; "" before any (never imports torch itself: `ddc` starts without it, and the parts
    import the kernels module before they record)."""
    native = sys.modules.get("ddcompress.native.kernels")
    return "".join(f", {x}" for x in native.status().values()) if native else ""


def _shares(timings: dict, secs: float) -> str:
    """Where the time went (the api's timings): ", denoiser 91%, coder 8%"; "" when no model ran."""
    if not timings or secs <= 0:
        return ""
    return f", denoiser {timings.get('model', 0) / secs:.0%}, coder {timings.get('coder', 0) / secs:.0%}"


def _summary(name: str, n_in: int, blob: bytes, secs: float, timings: dict) -> None:
    h = _info(blob)
    bpb = f"{8 * len(blob) / n_in:.3f} bits/byte" if n_in else "-"
    extra = ""
    if h.get("ideal_bits"):
        extra = f", {h['tokens']} tokens, {h['steps']} steps, coded/ideal {8 * len(blob) / h['ideal_bits']:.4f}"
        if h.get("mixer") and h.get("denoiser_bits"):
            extra += f", mixing saved {100 * (1 - h['ideal_bits'] / h['denoiser_bits']):.1f}%"
        extra += _arithmetic() + _shares(timings, secs)
    click.echo(f"{name}: {n_in} -> {len(blob)} bytes, {bpb} [{h['method']}{extra}], {n_in / 1024 / max(secs, 1e-9):.2f} KB/s", err=True)


@main.command()
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True))
@_common
@_max_output
def decompress(files, output, to_stdout, keep, rm, force, model, device, batch, verbose, quiet, max_output):
    """Decompress FILE.ddc to FILE (or stdout); inputs are kept (unless --rm)."""
    files, output, to_stdout = _plan(files, output, to_stdout, keep, rm)
    _check_device(device)
    run = dict(model=model, device=device, batch_chunks=batch, max_output=max_output)
    _finish(_each(files, lambda name: _decompress_one(name, output, to_stdout, force, rm, verbose and not quiet, quiet,
                                                      run)))


def _decompress_one(name: str, output: str | None, to_stdout: bool, force: bool, rm: bool, verbose: bool, quiet: bool,
                    run: dict) -> None:
    stdout = to_stdout or (name == "-" and output is None)
    out = None
    removing = rm and name != "-" and not stdout
    if name != "-":  # a FIFO or device: refused before the output is looked at (unless -f)
        _input_status(name, force, removing, names_output=not stdout and output is None)
    if not stdout:
        if output is None:
            stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else ""
            if not stem or stem.endswith(("/", os.sep)):
                raise DDCError(f"unknown suffix (expected {SUFFIX}); use -o or -c")
        out = Path(output or stem)
        _check_output(out, force, name)  # before decoding: an existing output is refused at once
    blob, src = _read_input(name, force, removing)
    from .. import api

    prog = _Progress(f"decompress {_display(name)}", not quiet)
    t0 = time.monotonic()
    size = [0]
    timings: dict = {}

    def pieces():  # xz frames come 1 MiB at a time (a small frame may expand to gigabytes): written as they come
        for piece in api.iter_decompress(blob, **run, progress=prog.advance, on_start=prog.start, timings=timings):
            size[0] += len(piece)
            yield piece

    try:  # a frame's length and CRC32 are checked before its last piece; an error removes a file's temp file
        _emit(pieces(), out, force, src)
    finally:
        prog.close()
    if removing:
        _remove_input(name, src, "decompressed")
    if verbose:
        secs = time.monotonic() - t0
        ran = _arithmetic() + _shares(timings, secs)
        how = f" [{ran[2:]}]" if ran and "mdm" in _info(blob).get("methods", ()) else ""
        click.echo(f"{_display(name)}: {len(blob)} -> {size[0]} bytes{how}, {size[0] / 1024 / max(secs, 1e-9):.2f} KB/s", err=True)


@main.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--model", default=None, help="Model name or checkpoint directory (default: found by the file's model id).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch", "batch", type=click.IntRange(min=1), default=None, help=batch_help())
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of internal errors.")
@_max_output
def test_cmd(files, model, device, batch, quiet, verbose, max_output):
    """Decode FILES and verify every checksum; write nothing."""
    _check_device(device)

    def test_one(name: str) -> None:
        blob, _ = _read_input(name, hint="pass it on stdin instead: ddc test - < FILE")
        from .. import api

        prog = _Progress(f"test {_display(name)}", not quiet)
        try:  # pieces counted and dropped: an xz frame is never held whole
            n = sum(len(p) for p in api.iter_decompress(blob, model=model, device=device, batch_chunks=batch,
                                                        max_output=max_output, progress=prog.advance,
                                                        on_start=prog.start))
        finally:
            prog.close()
        if not quiet:
            click.echo(f"{_display(name)}: OK ({n} bytes)")

    _finish(_each(files, test_one))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (each frame's under per_frame).")
@click.option("-v", "--verbose", is_flag=True, help="Also show each frame of concatenated files.")
def info(files, as_json, verbose):
    """Show what a .ddc file holds (header, sizes, model) without decoding it. Concatenated files: the
    sums and the frame count (-v: each frame)."""
    rows = []

    def read_one(name: str) -> None:
        blob, _ = _read_input(name, hint="pass it on stdin instead: ddc info - < FILE")
        rows.append(_info(blob) | {"file": name})

    failed = _each(files, read_one)
    if as_json:
        if rows:
            click.echo(json.dumps(rows[0] if len(files) == 1 else rows, indent=2, sort_keys=True))
    else:
        for h in rows:
            _print_info(h, verbose)
    _finish(failed)


def _print_info(h: dict, verbose: bool = False, indent: str = "") -> None:
    bpb = f"{h['bits_per_byte']:.3f}" if h["bits_per_byte"] is not None else "-"
    g = lambda k: "-" if h.get(k) is None else h[k]  # noqa: E731
    n = h.get("frames", 1)
    if "file" in h:
        head = f"{_display(h['file'])}: " + (f"{n} frames ({', '.join(h['methods'])}), " if n > 1 else "")
    else:
        head = f"frame {h['index']} at byte {h['offset']}: "
    click.echo(f"{indent}{head}format {g('format_version')}, method {h['method']}, "
               f"{h['original_bytes']} -> {h['compressed_bytes']} bytes ({bpb} bits/byte)")
    if "mdm" in h.get("methods", [h["method"]]):
        click.echo(f"{indent}  model {g('model_id')}, numerics {g('numerics')}, tokenizer {g('tokenizer_id')}, "
                   f"L={g('seq_len')}, {g('steps')} steps ({g('grid')} grid), seed {g('seed')}, group {g('group_size')}")
        ideal = h.get("ideal_bits")
        if isinstance(ideal, (int, float)) and ideal > 0:
            tail = f"ideal {ideal / 8:.0f} bytes"
            if h["method"] == "mdm":  # coded/ideal of a file with xz or stored frames would mean nothing
                tail += f" (coded/ideal {8 * h['compressed_bytes'] / ideal:.4f})"
        else:
            tail = "ideal -"
        click.echo(f"{indent}  {g('tokens')} tokens in {g('chunks')} chunks, {tail}")
        dn = h.get("denoiser_bits")
        if h.get("mixer") and isinstance(ideal, (int, float)) and dn:  # format 5: what the file's own statistics saved
            click.echo(f"{indent}  mixer {h['mixer']}: {(dn - ideal) / 8:.0f} bytes saved against the denoiser alone "
                       f"({100 * (1 - ideal / dn):.1f}% of its {dn / 8:.0f})")
    if verbose and n > 1:
        for i, f in enumerate(h["per_frame"], start=1):
            _print_info(dict(f, index=i), indent=indent + "  ")


@main.command("models")
def models_cmd():
    """List the shipped models and their ids."""
    from ..model import registry

    for name, path in registry.available_models().items():
        try:
            d = registry.describe(path)  # read from the files: no torch, nothing loaded
        except (OSError, ValueError, KeyError) as err:
            click.echo(f"{name}: unreadable ({err}), {path}")
            continue
        c = d["config"]
        default = " (default)" if name == registry.DEFAULT_MODEL else ""
        click.echo(f"{name}{default}: id {d['id']}, {c.get('n_layer')}x{c.get('d_model')}, L={c.get('seq_len')}, "
                   f"{d['params'] / 1e6:.1f}M params, {path}")


if __name__ == "__main__":
    main()
