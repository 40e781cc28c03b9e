"""Files for the command line: reading inputs, checking and writing outputs atomically, removing
inputs (--rm), one-line messages that name the file, and the progress bar. No torch here."""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
from pathlib import Path

import click

from .errors import DDCError

def _err(msg: str) -> None:
    click.echo(f"ddc: {msg}", err=True)


class _Named(DDCError):
    """An error whose message already names the file it is about (an output path, say)."""


def _display(name: str) -> str:
    return "stdin" if name == "-" else name


def _describe(name: str, err: BaseException) -> str:
    """One line naming the file: `NAME: reason`."""
    if isinstance(err, _Named):
        return str(err)
    if isinstance(err, OSError):
        return f"{err.filename if err.filename else _display(name)}: {err.strerror or err}"
    return f"{_display(name)}: {err}"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Progress:
    """A rich progress bar (tokens/s) on stderr that appears only once work has run for a second."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled and _isatty(sys.stderr)
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
        if _isatty(sys.stdin):
            raise click.UsageError("no input file and standard input is a terminal (see ddc --help)")
        return sys.stdin.buffer.read()
    p = Path(name)
    if p.is_dir():
        raise DDCError("is a directory")
    return p.read_bytes()


def _check_output(out: Path, force: bool, src: str) -> None:
    """Everything that can be known about writing `out` before any work: it exists (without -f), it is
    the input, or its directory is missing or not writable. Messages name `out`, never a temp file."""
    if out.exists() or out.is_symlink():
        if out.is_dir():
            raise _Named(f"{out}: is a directory")
        if not force:
            raise _Named(f"{out}: already exists; use -f to overwrite")
        if src != "-" and os.path.exists(src) and os.path.samefile(out, src):
            raise _Named(f"{out}: is the input file")
    parent = out.parent
    if not parent.exists():
        raise _Named(f"{out}: {os.strerror(errno.ENOENT)}")
    if not parent.is_dir():
        raise _Named(f"{out}: {os.strerror(errno.ENOTDIR)}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _Named(f"{out}: {os.strerror(errno.EACCES)} (cannot write in {parent})")


def _write_atomic(path: Path, data: bytes, force: bool) -> None:
    """Write via a temp file + rename in the same directory: never a partial or clobbered file. Errors
    name `path` (the user's output), not the temp file."""
    if path.exists() and not force:
        raise _Named(f"{path}: already exists; use -f to overwrite")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode of a new file
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)  # the rename is durable before any input is removed (--rm)
    except OSError as err:
        raise _Named(f"{path}: {err.strerror or err}") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(str(d), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _emit(data: bytes, out: Path | None, force: bool) -> None:
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_atomic(out, data, force)


def _remove_input(name: str) -> None:
    try:
        os.unlink(name)
    except OSError as err:
        raise _Named(f"{name}: output written but the input could not be removed: {err.strerror or err}") from err
