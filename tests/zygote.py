"""A zygote for tests that run `ddc` as a shell command many times: one process imports torch and the
CLI once, then forks a fresh child per command. Each `ddc` call then costs a fork instead of a 2 s
torch import (tests/test_readme.py runs a dozen model commands twice).

    python tests/zygote.py serve SOCKET     # prints "ready", then serves until killed
    ddc ...                                 # `ddc` = a shim on PATH: python -S tests/zygote.py call ...

The shim passes its argv, working directory, environment and its stdin/stdout/stderr descriptors over a
Unix socket (SCM_RIGHTS); the child takes them over and runs `ddcompress.cli.main` exactly as the
console script does, and the shim exits with the child's status. The server itself runs no torch
operation, so each child starts with no thread pool to inherit. The console script proper is run by
tests/test_cli.py (test_real_process) and tests/test_package.py (an installed wheel).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

_LEN = struct.Struct("!I")


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = conn.recv(n - len(buf))
        if not part:
            raise EOFError("zygote: connection closed")
        buf += part
    return buf


def serve(path: str) -> None:
    import ddcompress.api  # noqa: F401  (the imports every model command needs, done once)
    import ddcompress.cli
    import ddcompress.codec.coder  # noqa: F401
    import ddcompress.numerics.exact  # noqa: F401
    import torch  # noqa: F401

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        if os.fork() == 0:
            srv.close()
            _run(conn, ddcompress.cli.main)
        conn.close()


def _run(conn: socket.socket, main) -> None:
    code = 1
    try:
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        msg += _recv_exact(conn, max(0, _LEN.size - len(msg)))
        (n,) = _LEN.unpack(msg[: _LEN.size])
        body = msg[_LEN.size :]
        body += _recv_exact(conn, n - len(body))
        req = json.loads(body)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sys.stdin, sys.stdout, sys.stderr = (open(0, "r", closefd=False), open(1, "w", closefd=False),
                                             open(2, "w", closefd=False))
        try:
            main.main(args=req["argv"], prog_name="ddc")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what the console script would print: a traceback, status 1
            import traceback

            traceback.print_exc()
            code = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass
        conn.sendall(struct.pack("!i", code))
    finally:
        os._exit(code)


def call(path: str, argv: list[str]) -> int:
    body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        socket.send_fds(s, [_LEN.pack(len(body)) + body], [0, 1, 2])
        return struct.unpack("!i", _recv_exact(s, 4))[0]


def start(tmp: "os.PathLike[str]"):
    """Start a zygote; return (its process, a folder holding the `ddc` shim to put first on PATH,
    the environment variable that points the shim at it)."""
    import subprocess
    from pathlib import Path

    import tempfile

    tmp = Path(tmp)
    sock = os.path.join(tempfile.mkdtemp(prefix="ddcz"), "s")  # short: socket paths are limited to ~100 bytes
    proc = subprocess.Popen([sys.executable, __file__, "serve", sock], stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("zygote did not start")
    bindir = tmp / "bin"
    bindir.mkdir()
    shim = bindir / "ddc"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{__file__}" call "$@"\n')
    shim.chmod(0o755)
    return proc, bindir, {"DDC_ZYGOTE": sock}


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(call(os.environ["DDC_ZYGOTE"], sys.argv[2:]))
