"""Files for the command line: reading inputs, checking and writing outputs atomically, removing
inputs (--rm), one-line messages that name the file, and the progress bar. No torch here."""
from __future__ import annotations

import errno
import os
import select
import stat
import sys
import tempfile
import time
from pathlib import Path

import click

from ..errors import DDCError
from ..progress import Bars


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
    """The api's on_start/progress callbacks as a bar of tokens done and tok/s, on a terminal once the
    work has run for a second."""

    COLUMNS = ("{task.description}", "bar", "percent", "{task.completed:,.0f}/{task.total:,.0f} tok",
               "{task.fields[rate]:,.0f} tok/s", "remaining")

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled
        self.total, self.done, self.bars = 0, 0, None

    def start(self, total: int) -> None:
        self.total, self.bars = total, Bars(self.COLUMNS, self.enabled, delay=1.0)  # the second counts from here

    def advance(self, n: int) -> None:
        self.done += n
        if self.bars is not None:
            rate = self.done / max(time.monotonic() - self.bars.t0, 1e-9)
            self.bars.update(self.label, self.done, self.total, rate=rate)

    def close(self) -> None:
        if self.bars is not None:
            self.bars.close()


def _read_input(name: str, force: bool = False, remove: bool = False,
                hint: str = "use -f to read it anyway") -> tuple[bytes, os.stat_result | None]:
    """(the bytes of `name` or of stdin for "-", the input's status or None for stdin).

    As gzip and zstd: only a regular file is read, unless `force` (a FIFO, a device: `hint` says how
    to read it anyway); one that is to be removed (`remove`, --rm) must be regular even then. Nothing
    else is opened before the name's status is known (opening a FIFO would wait for a writer; some
    devices act when opened), and the opened file is checked again (the name may have changed)."""
    if name == "-":
        if sys.stdin is None:
            raise _Named(f"stdin: {os.strerror(errno.EBADF)}")
        if _isatty(sys.stdin):
            raise click.UsageError("no input file and standard input is a terminal (see ddc --help)")
        try:
            return sys.stdin.buffer.read(), None
        except OSError as err:
            raise _Named(f"stdin: {err.strerror or err}") from err
    regular = stat.S_ISREG(_input_status(name, force, remove, hint).st_mode)
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | (os.O_NONBLOCK if regular else 0))
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        _check_input_kind(st, force, remove, hint)
        os.set_blocking(fd, True)
        return f.read(), st


def _input_status(name: str, force: bool, remove: bool = False, hint: str = "use -f to read it anyway",
                  names_output: bool = False) -> os.stat_result:
    """The status of the input file `name`, after the checks of _read_input (which it does first, before
    any output is looked at). `names_output`: the output's name would be made from this one; a FIFO's
    or device's (`ddc -f /dev/null`: /dev/null.ddc) is refused, -o or -c names the output."""
    st = os.stat(name)
    _check_input_kind(st, force, remove, hint)
    if names_output and not stat.S_ISREG(st.st_mode):
        raise DDCError("not a regular file; name the output with -o or -c")
    return st


def _check_input_kind(st: os.stat_result, force: bool, remove: bool, hint: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise DDCError("is a directory")
    if stat.S_ISREG(st.st_mode):
        return
    if not force:
        raise DDCError(f"not a regular file ({hint})")
    if remove:
        raise DDCError("not a regular file; --rm removes only regular files")


def _check_output(out: Path, force: bool, src: str) -> None:
    """Everything that can be known about writing `out` before any work: it exists (without -f), it is
    the input, or its directory is missing or not writable. Messages name `out`, never a temp file."""
    if out.exists() or out.is_symlink():
        if out.is_dir():
            raise _Named(f"{out}: is a directory")
        if not force and not _is_devnull(out):
            raise _Named(f"{out}: already exists; use -f to overwrite")
        if src != "-" and os.path.exists(src) and os.path.samefile(out, src):
            raise _Named(f"{out}: is the input file")
        if out.exists() and not stat.S_ISREG(out.stat().st_mode):
            return  # a device or FIFO: written into by opening it (its directory need not be writable)
    parent = out.parent
    if not parent.exists():
        raise _Named(f"{out}: {os.strerror(errno.ENOENT)}")
    if not parent.is_dir():
        raise _Named(f"{out}: {os.strerror(errno.ENOTDIR)}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _Named(f"{out}: {os.strerror(errno.EACCES)} (cannot write in {parent})")


def _is_devnull(out: Path) -> bool:
    """`-o /dev/null` needs no -f (as zstd)."""
    try:
        return os.path.samefile(out, os.devnull)
    except OSError:
        return False


def _write_all(fd: int, data) -> None:
    """os.write until every byte is written: a short write continues, a write that takes nothing is a
    full device (ENOSPC), a non-blocking descriptor is waited on."""
    view = memoryview(data).cast("B")
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        if not n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _write_stdout(data: bytes) -> None:
    """All of `data` to stdout, or _Named('stdout: reason'): a closed stdout, a full disk, a reader
    that went away. Through its descriptor where it has one (nothing stays in Python's buffer to fail
    again at exit), else through its binary layer, whose short writes are continued as well."""
    out = sys.stdout
    if out is None:  # started with descriptor 1 closed (`ddc -dc F >&-`)
        raise _Named(f"stdout: {os.strerror(errno.EBADF)}")
    try:
        try:
            fd = out.fileno()
        except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation: no descriptor (a test's)
            fd = None
        out.flush()
        if fd is not None:
            _write_all(fd, data)
            return
        buf = getattr(out, "buffer", out)
        view = memoryview(data).cast("B")
        while view:
            try:
                n = buf.write(view)
            except BlockingIOError as err:
                n = err.characters_written
            if n is None:  # a non-blocking raw stream takes nothing now
                time.sleep(0.01)
                continue
            if not n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[n:]
        buf.flush()
    except OSError as err:
        raise _Named(f"stdout: {err.strerror or err}") from err
    except ValueError as err:  # a closed file object
        raise _Named(f"stdout: {os.strerror(errno.EBADF)} ({err})") from err


def _new_file_mode(src: os.stat_result | None) -> int:
    """The input's permission bits (as gzip); for stdin those of any new file (0666 & ~umask)."""
    if src is not None and stat.S_ISREG(src.st_mode):
        return stat.S_IMODE(src.st_mode) & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _pieces(data) -> list:
    """Output given as bytes, or as an iterable of pieces (a decoder's, written as they come)."""
    return [data] if isinstance(data, (bytes, bytearray, memoryview)) else data


def _write_atomic(path: Path, data, force: bool, src: os.stat_result | None = None) -> None:
    """Write a temp file in the same directory, give it the input's mode and times, then name it:
    without -f by a hard link, which fails when the name exists (two ddc writing one output: the
    second fails; nothing is replaced), with -f by a rename. Never a partial or clobbered file; the
    temp file goes on any error, ^C or SIGTERM. Errors name `path` (the user's output), never the
    temp file."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        try:
            for piece in _pieces(data):  # (an error while decoding a piece removes the temp file too)
                _write_all(fd, piece)
            os.fchmod(fd, _new_file_mode(src))
            if src is not None:
                os.utime(fd, ns=(src.st_atime_ns, src.st_mtime_ns))
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
            tmp = None
        else:
            _link_no_replace(tmp, path)  # the temp name goes in `finally`
        _fsync_dir(path.parent)  # the new name is durable before any input is removed (--rm)
    except FileExistsError as err:
        raise _Named(f"{path}: already exists; use -f to overwrite") from err
    except OSError as err:
        raise _Named(f"{path}: {err.strerror or err}") from err
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)


def _link_no_replace(tmp: str, path: Path) -> None:
    """Give the written temp file the name `path` unless that name exists (FileExistsError). Where the
    file system has no hard links, the name is claimed with O_EXCL first and then renamed over."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV,
                             errno.EACCES):
            raise
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(path)
        raise


def _write_into(path: Path, data) -> None:
    """An existing device or FIFO (-f, or /dev/null) is written into by opening it, never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            for piece in _pieces(data):
                _write_all(fd, piece)
        finally:
            os.close(fd)
    except OSError as err:
        raise _Named(f"{path}: {err.strerror or err}") from err


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


def _emit(data, out: Path | None, force: bool, src: os.stat_result | None = None) -> None:
    """`data` (bytes, or pieces as a decoder yields them: an xz frame never held whole) to stdout (out
    None) or to the file `out` with the input's mode and times (`src`)."""
    if out is None:
        for piece in _pieces(data):
            _write_stdout(piece)
        return
    try:
        st = os.stat(out)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        if not force and not _is_devnull(out):
            raise _Named(f"{out}: already exists; use -f to overwrite")
        _write_into(out, data)
    else:
        _write_atomic(out, data, force, src)


def _remove_input(name: str, before: os.stat_result | None, doing: str = "compressed") -> None:
    """Remove the input (--rm) once its output is written, unless it changed while ddc worked (its
    size, modification time or inode differ from when it was read: appended data would be lost, as
    gzip warns) or it is no longer a regular file: then it is kept, and that is an error."""
    try:
        now = os.stat(name)
        link = os.lstat(name)
    except OSError as err:
        raise _Named(f"{name}: output written but the input could not be removed: {err.strerror or err}") from err
    if not (stat.S_ISREG(link.st_mode) or stat.S_ISLNK(link.st_mode)) or not stat.S_ISREG(now.st_mode):
        raise _Named(f"{name}: not a regular file; output written, input kept")
    if before is not None and (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != (
            before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns):
        raise _Named(f"{name}: changed while being {doing} (size or modification time); output written, input kept")
    try:
        os.unlink(name)
    except OSError as err:
        raise _Named(f"{name}: output written but the input could not be removed: {err.strerror or err}") from err
