"""The gzip/zstd-style argument line of `ddc`: `ddc FILE` compresses, the mode flags -d/-t/-l/-z may
stand anywhere among the options (`ddc -v -d F`, `ddc -dc F`, `ddc -kd F`), `--` ends them; `train`
and `bench` load on first use (they import torch and the training/benchmark packages)."""
from __future__ import annotations

import contextlib
import importlib
import signal
import threading

import click

from .files import _err
from ..errors import DDCError

# mode flags of the gzip-style command line -> subcommand
_LONG_MODES = {"--decompress": "decompress", "--uncompress": "decompress", "--test": "test", "--list": "info",
               "--compress": "compress"}
_SHORT_MODES = {"d": "decompress", "t": "test", "l": "info", "z": "compress"}
# subcommands that live in their own (torch-importing) modules: loaded on first use; help is static
_LAZY = {
    "bench": ("ddcompress.bench.cli", "bench_command", "Measure perplexity bound and bits/byte on the published corpora."),
    "train": ("ddcompress.train.cli", "train_command", "Train a denoiser and export it as a ddc model."),
}

class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: raised where the program is, so that `finally` blocks remove temp
    files and partial outputs as they do on ^C (KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_raise():
    """SIGTERM and SIGHUP raise Terminated while a command runs (in the main thread; a signal the
    caller ignores, as under nohup, stays ignored); the previous handlers come back after."""
    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class DdcGroup(click.Group):
    """`ddc FILE` = compress; the mode flags -d/-t/-l/-z anywhere among the options choose the
    subcommand (`ddc -v -d F`, `ddc -dc F`, `ddc -kd F`); `train` and `bench` load on first use."""

    _CORE = ("compress", "decompress", "test", "info")

    def list_commands(self, ctx):
        return sorted(set(self.commands) | set(_LAZY))

    def get_command(self, ctx, name):
        if name in _LAZY and name not in self.commands:
            module, attr, _ = _LAZY[name]
            try:
                cmd = getattr(importlib.import_module(module), attr)
            except ImportError as err:
                raise DDCError(f"ddc {name} needs packages that are not installed ({err}); "
                               f"try: pip install 'ddcompress[bench]'") from None
            self.add_command(cmd, name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        """As click's, but the lazy commands show a static line instead of being imported."""
        names = [n for n in self.list_commands(ctx) if n in _LAZY and n not in self.commands or not self.commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(n, _LAZY[n][2] if n in _LAZY and n not in self.commands else self.commands[n].get_short_help_str(limit))
                for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _value_options(self) -> tuple[set[str], set[str]]:
        """Short option letters and long options of the core commands that take a value."""
        short, long = set(), set()
        for name in self._CORE:
            for p in self.commands[name].params:
                if isinstance(p, click.Option) and not p.is_flag and not p.count:
                    for o in p.opts + p.secondary_opts:
                        (long if o.startswith("--") else short).add(o.lstrip("-") if not o.startswith("--") else o)
        return short, long

    def split_mode(self, args: list[str]) -> tuple[str | None, list[str], bool]:
        """(mode, the arguments without the mode flags, verbose?) of a gzip-style command line."""
        short_val, long_val = self._value_options()
        mode, out, verbose, i = None, [], False, 0

        def merge(new: str) -> None:
            nonlocal mode
            if mode is None or mode == new or {mode, new} == {"decompress", "test"}:
                mode = "test" if "test" in (mode, new) else new
            else:
                raise click.UsageError(f"conflicting modes: {mode} and {new}")

        while i < len(args):
            a = args[i]
            i += 1
            if a == "--":
                out += args[i - 1:]
                break
            if a.startswith("--"):
                name = a.split("=", 1)[0]
                if name in _LONG_MODES:
                    merge(_LONG_MODES[name])
                    continue
                verbose |= name == "--verbose"
                out.append(a)
                if "=" not in a and name in long_val and i < len(args):
                    out.append(args[i])
                    i += 1
                continue
            if a.startswith("-") and len(a) > 1:
                kept = "-"
                for j, ch in enumerate(a[1:], start=1):
                    if ch in _SHORT_MODES:
                        merge(_SHORT_MODES[ch])
                        continue
                    verbose |= ch == "v"
                    kept += ch
                    if ch in short_val:  # the rest of the cluster, or the next argument, is its value
                        kept += a[j + 1:]
                        if j + 1 == len(a) and i < len(args):
                            out += [kept, args[i]]
                            i += 1
                            kept = ""
                        break
                if kept not in ("", "-"):
                    out.append(kept)
                continue
            out.append(a)  # a file name (or "-")
        return mode, out, verbose

    def parse_args(self, ctx, args):
        if args and args[0] in self.list_commands(ctx):  # `ddc decompress ...`, `ddc bench ...`
            if args[0] in self._CORE:
                _, _, verbose = self.split_mode(args[1:])
            else:
                verbose = "-v" in args or "--verbose" in args
            ctx.meta["ddc.verbose"] = verbose
            return super().parse_args(ctx, args)
        if not args:
            return super().parse_args(ctx, args)  # usage (no_args_is_help)
        mode, rest, verbose = self.split_mode(args)
        ctx.meta["ddc.verbose"] = verbose
        if mode is None and rest and rest[0] in ("-h", "--help", "-V", "--version"):
            return super().parse_args(ctx, rest)
        return super().parse_args(ctx, [mode or "compress"] + rest)

    def invoke(self, ctx):
        verbose = ctx.meta.get("ddc.verbose", False)  # this command line, not the host's sys.argv
        with _signals_raise():
            return self._invoke(ctx, verbose)

    def _invoke(self, ctx, verbose):
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
        except Terminated as sig:  # cleaned up on the way here, as on ^C
            _err("terminated" if sig.signum == signal.SIGTERM else f"{signal.Signals(sig.signum).name.lower()}: stopped")
            ctx.exit(128 + sig.signum)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as err:  # never a traceback for users; -v shows it
            if verbose:
                raise
            _err(f"internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} (run with -v for details)")
        ctx.exit(1)
