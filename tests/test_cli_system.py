"""`ddc` on a real system (issue 22): short and failed writes on stdout and on output files, special
files (FIFOs, devices), the input's mode and mtime on the output, outputs created without replacing,
inputs that change under `--rm`, SIGTERM, and `ddc info` on concatenated frames.

No model runs here (`--method store` or stored frames): these are tests of the command line's file
handling. Full disks and short writes are simulated (a raw file object that writes less than asked,
or `os.write` replaced); FIFOs are made with os.mkfifo, device nodes with os.mknod where this user and
file system allow it (skipped with the reason otherwise)."""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ddcompress.api as api
from ddcompress.cli import main
from samples import ddc, names, ok

pytestmark = pytest.mark.slow  # a system test (setup.cfg: markers)

DATA = b"the keeper lit the lamp at dusk and wrote the wind in his log.\n" * 3000  # 192,000 bytes
GOLDEN = Path(__file__).resolve().parent / "golden"
ROOT = Path(__file__).resolve().parents[1]


def stored(tmp_path: Path, data: bytes = DATA, name: str = "a.txt.ddc") -> Path:
    p = tmp_path / name
    p.write_bytes(api.compress(data, method="store"))
    return p


def run_main(monkeypatch, capsys, stdout, *args) -> tuple[int, str]:
    """Run `ddc ARGS` in this process with sys.stdout replaced by `stdout`: (exit status, stderr)."""
    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(sys, "stdout", stdout)
        code = main([str(a) for a in args], standalone_mode=False)
    return code or 0, capsys.readouterr().err


# -- 1. every write complete, or one line naming the output -------------------------------------------


class ShortRaw(io.RawIOBase):
    """A raw stream (as sys.stdout.buffer is under PYTHONUNBUFFERED=1) that takes at most `per_call`
    bytes per write, and fails with ENOSPC once `room` bytes are in (a full disk)."""

    def __init__(self, per_call: int, room: int | None = None):
        self.per_call, self.room, self.got, self.calls = per_call, room, bytearray(), 0

    def writable(self):
        return True

    def write(self, b):
        self.calls += 1
        if self.room is not None and len(self.got) >= self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(b), self.per_call)
        self.got += bytes(memoryview(b)[:n])
        return n


class NoFdStdout:
    """A text stdout without a file descriptor, whose binary layer is `raw`."""

    def __init__(self, raw):
        self.buffer = raw

    def write(self, s):
        raise AssertionError(f"text written to stdout: {s!r}")

    def flush(self):
        pass

    def fileno(self):
        raise io.UnsupportedOperation("fileno")

    def isatty(self):
        return False


@pytest.mark.parametrize("direction", ["decompress", "compress"])
def test_short_writes_on_stdout_are_completed(tmp_path, monkeypatch, capsys, direction):
    raw = ShortRaw(per_call=4096)
    if direction == "decompress":
        code, err = run_main(monkeypatch, capsys, NoFdStdout(raw), "-dc", stored(tmp_path))
        assert (code, err) == (0, "") and bytes(raw.got) == DATA, (code, err, len(raw.got))
    else:
        (tmp_path / "a.txt").write_bytes(DATA)
        code, err = run_main(monkeypatch, capsys, NoFdStdout(raw), "-c", "--method", "store", tmp_path / "a.txt")
        assert (code, err) == (0, "") and api.decompress(bytes(raw.got)) == DATA
    assert raw.calls > len(DATA) // 4096


@pytest.mark.parametrize("direction", ["decompress", "compress"])
def test_full_disk_on_stdout_is_an_error_naming_stdout(tmp_path, monkeypatch, capsys, direction):
    raw = ShortRaw(per_call=4096, room=100_000)
    if direction == "decompress":
        args = ("-dc", stored(tmp_path))
    else:
        (tmp_path / "a.txt").write_bytes(DATA)
        args = ("-c", "--method", "store", tmp_path / "a.txt")
    code, err = run_main(monkeypatch, capsys, NoFdStdout(raw), *args)
    assert code == 1 and err == f"ddc: stdout: {os.strerror(errno.ENOSPC)}\n", (code, err)


def _fake_os_write(monkeypatch, fds, per_call: int, room: int | None = None) -> dict:
    """Replace os.write for the descriptors `fds(fd)` accepts: short writes, ENOSPC after `room` bytes."""
    real, seen = os.write, {"calls": 0, "bytes": 0}

    def write(fd, b):
        if not fds(fd):
            return real(fd, b)
        seen["calls"] += 1
        if room is not None and seen["bytes"] >= room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(memoryview(b)[:per_call]))
        seen["bytes"] += n
        return n

    monkeypatch.setattr(os, "write", write)
    return seen


def test_short_writes_and_full_disk_on_a_stdout_descriptor(tmp_path, monkeypatch, capsys):
    """stdout with a descriptor (a redirect to a file): written with os.write until all is written."""
    packed = stored(tmp_path)
    with open(tmp_path / "out", "w") as f:
        seen = _fake_os_write(monkeypatch, lambda fd: fd == f.fileno(), per_call=5000)
        code, err = run_main(monkeypatch, capsys, f, "-dc", packed)
    assert (code, err) == (0, "") and (tmp_path / "out").read_bytes() == DATA
    assert seen["calls"] > len(DATA) // 5000
    with open(tmp_path / "out", "w") as f:
        seen = _fake_os_write(monkeypatch, lambda fd: fd == f.fileno(), per_call=5000, room=50_000)
        code, err = run_main(monkeypatch, capsys, f, "-dc", packed)
    assert code == 1 and err == f"ddc: stdout: {os.strerror(errno.ENOSPC)}\n", (code, err)


def test_short_writes_and_full_disk_on_an_output_file(tmp_path, monkeypatch):
    src = tmp_path / "a.txt"
    src.write_bytes(DATA)
    seen = _fake_os_write(monkeypatch, lambda fd: fd > 2, per_call=3000)
    ok(ddc("--method", "store", src))
    assert seen["calls"] > len(DATA) // 3000 and api.decompress((tmp_path / "a.txt.ddc").read_bytes()) == DATA
    (tmp_path / "a.txt.ddc").unlink()
    seen = _fake_os_write(monkeypatch, lambda fd: fd > 2, per_call=3000, room=60_000)
    res = ddc("--method", "store", "--rm", src)
    assert res.exit_code == 1 and res.stderr == f"ddc: {src}.ddc: {os.strerror(errno.ENOSPC)}\n", res.stderr
    assert names(tmp_path) == ["a.txt"] and src.read_bytes() == DATA  # no temp file, input kept


def _ddc_cmd() -> list[str]:
    return [sys.executable, "-m", "ddcompress.cli"]


def test_closed_stdout_is_a_one_line_error(tmp_path):
    packed = stored(tmp_path)
    before = packed.read_bytes()
    p = subprocess.run(_ddc_cmd() + ["-dc", str(packed)], capture_output=False, stderr=subprocess.PIPE,
                       preexec_fn=lambda: os.close(1), timeout=60)
    assert p.returncode == 1 and p.stderr.decode() == f"ddc: stdout: {os.strerror(errno.EBADF)}\n", p.stderr
    assert packed.read_bytes() == before and names(tmp_path) == ["a.txt.ddc"]


def test_broken_pipe_unbuffered_is_one_line(tmp_path):
    """PYTHONUNBUFFERED=1 (containers, CI) and a reader that went away: exit 1, one line, no traceback."""
    packed = stored(tmp_path, DATA * 2)
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run(_ddc_cmd() + ["-dc", str(packed)], stdout=w, stderr=subprocess.PIPE, timeout=60,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        os.close(w)
    assert p.returncode == 1 and p.stderr.decode() == f"ddc: stdout: {os.strerror(errno.EPIPE)}\n", p.stderr


# -- 2. special files ----------------------------------------------------------------------------------


class FifoWriter(threading.Thread):
    """Writes `data` into a FIFO once a reader opens it; gives up when stopped (no reader came)."""

    def __init__(self, path: Path, data: bytes):
        super().__init__(daemon=True)
        self.path, self.data, self.stop, self.wrote = path, data, threading.Event(), False
        self.start()

    def run(self):
        while not self.stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(0.005)
                continue
            os.set_blocking(fd, True)
            try:
                with open(fd, "wb") as f:
                    f.write(self.data)
                self.wrote = True
            except BrokenPipeError:
                pass
            return

    def finish(self) -> bool:
        self.stop.set()
        self.join(10)
        return self.wrote


@pytest.mark.parametrize("mode", ["compress", "decompress", "test", "info"])
def test_fifo_input_refused_without_force(tmp_path, monkeypatch, mode):
    monkeypatch.chdir(tmp_path)
    fifo = tmp_path / "f.ddc"
    os.mkfifo(fifo)
    writer = FifoWriter(fifo, api.compress(b"from a fifo", method="store"))
    args = {"compress": ["--method", "store", "-o", "out"], "decompress": ["-d", "-o", "out"], "test": ["test"],
            "info": ["info"]}[mode]
    res = ddc(*args, fifo)
    assert not writer.finish(), "the FIFO was opened"
    assert res.exit_code == 1 and res.stderr.startswith(f"ddc: {fifo}: not a regular file"), res.stderr
    assert len(res.stderr.splitlines()) == 1
    assert names(tmp_path) == ["f.ddc"] and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_fifo_input_with_force_is_read_and_never_removed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fifo = tmp_path / "f.txt"
    os.mkfifo(fifo)
    writer = FifoWriter(fifo, DATA)
    res = ddc("-f", "--method", "store", "-o", "out.ddc", fifo)
    assert writer.finish() and res.exit_code == 0, res.stderr
    assert api.decompress((tmp_path / "out.ddc").read_bytes()) == DATA
    # --rm never removes a FIFO: refused before it is read, even with -f
    writer = FifoWriter(fifo, DATA)
    res = ddc("-f", "--rm", "--method", "store", "-o", "out2.ddc", fifo)
    assert not writer.finish()
    assert res.exit_code == 1 and "not a regular file" in res.stderr and "--rm" in res.stderr, res.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and names(tmp_path) == ["f.txt", "out.ddc"]
    # -f alone derives no output name from a FIFO's (-o or -c names it)
    writer = FifoWriter(fifo, DATA)
    res = ddc("-f", "--method", "store", fifo)
    assert not writer.finish() and res.exit_code == 1 and "not a regular file" in res.stderr, res.stderr
    assert names(tmp_path) == ["f.txt", "out.ddc"]


def test_dev_null_is_not_compressed_into_dev(tmp_path):
    """`ddc compress /dev/null` (a character device) is refused, and never writes /dev/null.ddc."""
    target = Path(os.devnull + ".ddc")
    existed = target.exists()
    try:
        for args in (["compress", os.devnull], ["compress", "-f", os.devnull], ["-f", "--rm", os.devnull],
                     ["-d", "-o", "-", os.devnull], ["test", os.devnull], ["info", os.devnull]):
            res = ddc(*args)
            assert res.exit_code == 1 and res.stderr.startswith(f"ddc: {os.devnull}: not a regular file"), (args, res.stderr)
            assert len(res.stderr.splitlines()) == 1
            assert target.exists() == existed
        # forced, to stdout: it reads the (empty) device
        res = ok(ddc("-f", "-c", "--method", "store", os.devnull))
        assert api.decompress(res.stdout_bytes) == b""
        assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    finally:
        if not existed and target.is_file():
            target.unlink()


def test_force_output_into_a_fifo_writes_into_it(tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes(b"into a fifo " * 100)  # its stored copy fits in the pipe's buffer
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        res = ddc("--method", "store", "-o", fifo, src)
        assert res.exit_code == 1 and "already exists" in res.stderr  # without -f: refused
        ok(ddc("-f", "--method", "store", "-o", fifo, src))
        assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced"
        got = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    assert api.decompress(got) == src.read_bytes()
    assert names(tmp_path) == ["a.txt", "out"]


def _char_device(path: Path) -> Path:
    """A character device node like /dev/null at `path`, or skip saying why there is none."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError as err:
        pytest.skip(f"cannot make a device node here ({err.strerror}; needs root with CAP_MKNOD)")
    try:
        os.close(os.open(path, os.O_WRONLY))
    except OSError as err:
        pytest.skip(f"a device node in {path.parent} cannot be opened ({err.strerror}; a nodev mount?)")
    return path


def test_force_output_into_a_device_opens_it(tmp_path):
    dev = _char_device(tmp_path / "null")
    src = tmp_path / "a.txt"
    src.write_bytes(DATA)
    res = ddc("--method", "store", "-o", dev, src)
    assert res.exit_code == 1 and "already exists" in res.stderr
    ok(ddc("-f", "--method", "store", "-o", dev, src))
    ok(ddc("-d", "-f", "-o", dev, stored(tmp_path)))
    assert stat.S_ISCHR(dev.lstat().st_mode), "the device node was replaced by a regular file"
    assert names(tmp_path) == ["a.txt", "a.txt.ddc", "null"]
    # a device as input: refused without -f, never removed with --rm
    res = ddc("--method", "store", "-o", tmp_path / "x.ddc", dev)
    assert res.exit_code == 1 and "not a regular file" in res.stderr
    res = ddc("-f", "--rm", "--method", "store", "-o", tmp_path / "x.ddc", dev)
    assert res.exit_code == 1 and stat.S_ISCHR(dev.lstat().st_mode)
    assert names(tmp_path) == ["a.txt", "a.txt.ddc", "null"]


# -- 4. the input's mode and mtime -----------------------------------------------------------------------


def test_output_keeps_the_inputs_mode_and_mtime(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "secret.txt"
    src.write_bytes(DATA)
    src.chmod(0o600)
    os.utime(src, ns=(1_500_000_000_123_456_789, 1_000_000_000_987_654_321))
    ok(ddc("--method", "store", "secret.txt"))
    packed = tmp_path / "secret.txt.ddc"
    assert stat.S_IMODE(packed.stat().st_mode) == 0o600
    assert packed.stat().st_mtime_ns == 1_000_000_000_987_654_321
    src.unlink()
    packed.chmod(0o640)
    os.utime(packed, ns=(1_600_000_000_000_000_000, 1_200_000_000_000_000_000))
    ok(ddc("-d", "secret.txt.ddc"))
    assert stat.S_IMODE(src.stat().st_mode) == 0o640 and src.stat().st_mtime_ns == 1_200_000_000_000_000_000
    assert src.read_bytes() == DATA
    # -f over an existing output: the input's mode, not the old file's
    packed.chmod(0o604)
    ok(ddc("-d", "-f", "secret.txt.ddc"))
    assert stat.S_IMODE(src.stat().st_mode) == 0o604
    # stdin has no mode: a new file's usual one, and the current time
    umask = os.umask(0)
    os.umask(umask)
    t0 = time.time()
    ok(ddc("--method", "store", "-o", "piped.ddc", "-", input=DATA))
    assert stat.S_IMODE((tmp_path / "piped.ddc").stat().st_mode) == 0o666 & ~umask
    assert (tmp_path / "piped.ddc").stat().st_mtime >= t0 - 2


# -- 5. no replacing without -f, inputs that change, SIGTERM -----------------------------------------


def test_an_output_that_appears_during_the_work_is_not_replaced(tmp_path, monkeypatch):
    """Two writers of one output without -f: the later one fails, the first file stays, --rm keeps the
    input (the other writer's file is created while this one compresses)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_bytes(DATA)
    real_fsync = os.fsync

    def racing(fd):  # the other writer's file appears once ddc's data is written, before it is named
        if fd > 2 and not (tmp_path / "a.txt.ddc").exists():
            (tmp_path / "a.txt.ddc").write_bytes(b"the other writer's file")
        return real_fsync(fd)

    for link_works in (True, False):  # os.link, or the fallback where a file system has no hard links
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", racing)
            if not link_works:
                m.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
            res = ddc("--rm", "--method", "store", "a.txt")
        assert res.exit_code == 1 and res.stderr == "ddc: a.txt.ddc: already exists; use -f to overwrite\n", res.stderr
        assert (tmp_path / "a.txt.ddc").read_bytes() == b"the other writer's file"
        assert names(tmp_path) == ["a.txt", "a.txt.ddc"] and (tmp_path / "a.txt").read_bytes() == DATA
        (tmp_path / "a.txt.ddc").unlink()
    # the fallback still writes a new file where nothing is in the way
    monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
    ok(ddc("--method", "store", "a.txt"))
    assert names(tmp_path) == ["a.txt", "a.txt.ddc"] and api.decompress((tmp_path / "a.txt.ddc").read_bytes()) == DATA


@pytest.mark.parametrize("direction", ["compress", "decompress"])
def test_rm_keeps_an_input_that_changed_during_the_work(tmp_path, monkeypatch, direction):
    monkeypatch.chdir(tmp_path)
    if direction == "compress":
        src, args, fn = tmp_path / "a.txt", ["--rm", "--method", "store", "a.txt"], "compress"
        src.write_bytes(DATA)
    else:
        src, args, fn = stored(tmp_path), ["-d", "--rm", "a.txt.ddc"], "iter_decompress"  # (ddc -d streams)
    real = getattr(api, fn)

    def appended(data, **kw):
        out = real(data, **kw)
        if fn == "iter_decompress":
            out = list(out)
        with open(src, "ab") as f:
            f.write(b"appended while ddc worked\n")
        return out

    monkeypatch.setattr(api, fn, appended)
    res = ddc(*args)
    assert res.exit_code == 1 and res.stderr.startswith(f"ddc: {src.name}: changed while"), res.stderr
    assert "input kept" in res.stderr and len(res.stderr.splitlines()) == 1
    assert names(tmp_path) == ["a.txt", "a.txt.ddc"] and src.read_bytes().endswith(b"appended while ddc worked\n")


SLOW_SYNC = """
import os, sys, time
marker, real = sys.argv[1], os.fsync
def fsync(fd):  # the temp file is written: say so, then take long to sync it
    if fd > 2:
        open(marker, "w").close()
        time.sleep(20)
    return real(fd)
os.fsync = fsync
from ddcompress.cli import main
main(sys.argv[2:])
"""


def test_sigterm_during_the_final_write_leaves_no_temp_file(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "big.txt").write_bytes(DATA * 2)
    marker = tmp_path / "writing"
    p = subprocess.Popen([sys.executable, "-c", SLOW_SYNC, str(marker), "--method", "store", "big.txt"], cwd=work,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), p.communicate(timeout=10)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM and err.decode() == "ddc: terminated\n", (p.returncode, err)
    assert names(work) == ["big.txt"], "a temp file or a partial output was left"


# -- 7. info on concatenated frames -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v2", "v4"])
def test_info_on_concatenated_frames_shows_sums(version):
    from ddcompress.codec.container import parse_frames

    path = GOLDEN / version / "concatenated.ddc"
    blob = path.read_bytes()
    frames = [c.header.as_dict() for c in parse_frames(blob)]
    mdm = [h for h in frames if h["method"] == "mdm"]
    assert len(frames) == 2 and len(mdm) == 1  # the golden file: an mdm frame and an xz frame
    h = json.loads(ok(ddc("info", "--json", path)).stdout)
    assert h["frames"] == 2 and h["method"] == "mixed" and h["methods"] == ["mdm", "xz"]
    assert h["original_bytes"] == sum(f["original_bytes"] for f in frames) and h["compressed_bytes"] == len(blob)
    assert h["tokens"] == sum(f["tokens"] for f in mdm) and h["chunks"] == sum(f["chunks"] for f in mdm)
    assert h["ideal_bits"] == pytest.approx(sum(f["ideal_bits"] for f in mdm))
    assert h["original_crc32"] is None  # one frame's CRC is not the whole original's
    per = h["per_frame"]
    assert [f["method"] for f in per] == ["mdm", "xz"] and sum(f["compressed_bytes"] for f in per) == len(blob)
    assert per[0]["offset"] == 0 and per[1]["offset"] == per[0]["compressed_bytes"]
    assert per[0]["tokens"] == mdm[0]["tokens"] and per[1]["original_crc32"] == frames[1]["original_crc32"]
    # text: the frame count and sums; no coded/ideal of a mixed file; -v lists each frame
    text = ok(ddc("info", path)).stdout
    assert "2 frames" in text and "coded/ideal" not in text and "frame 1" not in text, text
    assert f"{h['original_bytes']} -> {len(blob)} bytes" in text
    verbose = ok(ddc("info", "-v", path)).stdout
    assert "frame 1" in verbose and "frame 2" in verbose and "coded/ideal" in verbose, verbose
    # the same file twice: still sums
    h2 = json.loads(ok(ddc("info", "--json", "-", input=blob + blob)).stdout)
    assert h2["frames"] == 4 and h2["tokens"] == 2 * h["tokens"] and h2["original_bytes"] == 2 * h["original_bytes"]


def test_info_on_one_frame_is_unchanged(tmp_path):
    h = json.loads(ok(ddc("info", "--json", GOLDEN / "v4" / "text.txt.ddc")).stdout)
    assert h["frames"] == 1 and "per_frame" not in h and isinstance(h["original_crc32"], int)
    assert h["method"] == "mdm" and isinstance(h["tokens"], int)


def test_decompress_streams_an_xz_frame(tmp_path, monkeypatch):
    """Item 8: `ddc -d` and `ddc test` write or count an xz frame's output piece by piece: a 45 KB frame
    that expands to 128 MiB is never held whole: the peak allocation is xz's own 64 MiB dictionary and a
    few MiB of pieces (holding the output whole took more than 128 MiB)."""
    import lzma
    import tracemalloc

    monkeypatch.chdir(tmp_path)
    big = 128 << 20
    packed = lzma.compress(bytes(big), preset=9 | lzma.PRESET_EXTREME)
    from ddcompress.codec.container import Container, Header

    head = Header("xz", big, __import__("zlib").crc32(bytes(big)))
    (tmp_path / "z.ddc").write_bytes(Container(head, [len(packed)], [], [packed]).to_bytes())
    for args in (["-d", "-f", "-o", os.devnull, "z.ddc"], ["test", "z.ddc"]):
        tracemalloc.start()
        try:
            res = ddc(*args)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert res.exit_code == 0, res.stderr
        assert peak < 96 << 20, (args, peak)


def test_max_output_refuses_a_file_before_decoding(tmp_path):
    """--max-output (decompress, test): a file that claims more bytes is refused in one line, before any
    decoding, with no output file; sizes take K/M/G suffixes (powers of 1024)."""
    f = stored(tmp_path, b"x" * 1000)
    res = ddc("-d", "--max-output", "999", f)
    assert res.exit_code == 1 and res.stderr.count("\n") == 1 and "over max_output 999" in res.stderr
    assert not (tmp_path / "a.txt").exists()
    assert ddc("test", "--max-output", "10", f).exit_code == 1
    ok(ddc("-t", "--max-output", "1K", f))
    ok(ddc("-d", "--max-output", "1KiB", f))
    assert (tmp_path / "a.txt").read_bytes() == b"x" * 1000
    bad = ddc("-d", "-f", "--max-output", "12X", f)
    assert bad.exit_code == 2 and "is not a size" in bad.stderr
