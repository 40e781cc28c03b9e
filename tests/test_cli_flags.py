"""The gzip/zstd conventions of `ddc`: flags in any position, early errors, many files, --rm, an instant
CLI that does not import torch, and `ddc bench`'s offline message and report folder.

Nearly everything runs with `--method store` (no model): these tests are about the command line, not
the coder. Where a test must show that no coding work happened, `api.compress`/`api.decompress` are
replaced by recorders that fail the test when called."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ddcompress.api as api
import ddcompress.cli.commands as cli
from ddcompress.cli import main
from ddcompress.errors import IntegrityError
from samples import ddc, names, ok, words

MAGIC = b"\x89DDC"
DATA = b"some text to keep, some text to keep. " * 20


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


@pytest.fixture
def packed(tmp_path, monkeypatch) -> Path:
    """cwd = tmp_path holding a.txt.ddc (a stored copy of DATA) and nothing else."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.txt", DATA)
    ok(ddc("--method", "store", "a.txt"))
    (tmp_path / "a.txt").unlink()
    return tmp_path / "a.txt.ddc"


@pytest.fixture
def no_coding(monkeypatch):
    """Fail the test if any compression or decoding work starts."""
    def boom(*a, **k):
        raise AssertionError("coding work started before the error was found")

    monkeypatch.setattr(api, "compress", boom)
    monkeypatch.setattr(api, "decompress", boom)


# -- 1. mode flags anywhere ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, want", [
    (["-d", "a.txt.ddc"], "file"),
    (["-v", "-d", "a.txt.ddc"], "file"),
    (["-f", "-d", "a.txt.ddc"], "file"),
    (["-kd", "a.txt.ddc"], "file"),
    (["-dk", "a.txt.ddc"], "file"),
    (["--decompress", "a.txt.ddc"], "file"),
    (["a.txt.ddc", "-d"], "file"),
    (["-q", "--decompress", "-f", "a.txt.ddc"], "file"),
    (["-d", "-o", "out", "a.txt.ddc"], "out"),
    (["-o", "out", "-d", "a.txt.ddc"], "out"),
    (["-do", "out", "a.txt.ddc"], "out"),
    (["-doout", "a.txt.ddc"], "out"),
    (["--output=out", "-d", "a.txt.ddc"], "out"),
    (["-dc", "a.txt.ddc"], "stdout"),
    (["-cd", "a.txt.ddc"], "stdout"),
    (["-cdf", "a.txt.ddc"], "stdout"),
    (["-c", "-d", "a.txt.ddc"], "stdout"),
    (["-d", "-o", "-", "a.txt.ddc"], "stdout"),
    (["-d", "--", "a.txt.ddc"], "file"),
])
def test_decompress_flags_in_any_position(packed, args, want):
    res = ok(ddc(*args))
    if want == "stdout":
        assert res.stdout_bytes == DATA and names(packed.parent) == ["a.txt.ddc"]
    else:
        target = "a.txt" if want == "file" else "out"
        assert (packed.parent / target).read_bytes() == DATA and names(packed.parent) == sorted(["a.txt.ddc", target])


@pytest.mark.parametrize("args", [["-t"], ["--test"], ["-q", "-t"], ["-tq"], ["-dt"], ["-v", "--test"], ["test"]])
def test_test_flags(packed, args):
    res = ok(ddc(*args, "a.txt.ddc"))
    assert ("OK" in res.stdout) == ("q" not in "".join(args)) and names(packed.parent) == ["a.txt.ddc"]


@pytest.mark.parametrize("args", [["-l"], ["--list"], ["info"], ["-l", "--json"]])
def test_list_flags(packed, args):
    res = ok(ddc(*args, "a.txt.ddc"))
    assert "store" in res.stdout and str(len(DATA)) in res.stdout


def test_split_mode_keeps_the_other_options():
    split = main.split_mode
    assert split(["-dc", "f"]) == ("decompress", ["-c", "f"], False)
    assert split(["-cdfv", "f"]) == ("decompress", ["-cfv", "f"], True)
    assert split(["-1c", "f"]) == (None, ["-1c", "f"], False)
    assert split(["-19", "-z", "f"]) == ("compress", ["-19", "f"], False)
    # option values are never taken for mode flags, attached or not
    assert split(["-od.txt", "-d", "f"]) == ("decompress", ["-od.txt", "f"], False)
    assert split(["-o", "-d", "f"]) == (None, ["-o", "-d", "f"], False)
    assert split(["--model", "-d", "--seed", "-5", "f"]) == (None, ["--model", "-d", "--seed", "-5", "f"], False)
    assert split(["--output=-d", "f"]) == (None, ["--output=-d", "f"], False)
    # `--` ends the options: what follows is a file name, even "-d"
    assert split(["-v", "--", "-d", "-t"]) == (None, ["-v", "--", "-d", "-t"], True)
    assert split(["-d", "-t", "f"])[0] == "test"  # -t implies decoding


def test_compress_flags_reach_the_coder(tmp_path, monkeypatch):
    """`-1c`, `-19`, `-c -3` and `--steps` arrive at api.compress as gzip users mean them."""
    calls = []
    real = api.compress

    def record(data, **kw):
        calls.append(kw)
        return real(data, method="store")

    monkeypatch.setattr(api, "compress", record)
    src = _write(tmp_path / "x.txt", DATA)
    for args, level in ((["-1c"], 1), (["-19", "-c"], 9), (["-c", "-3"], 3), (["-z", "-c", "-7"], 7), (["--compress", "-c"], None)):
        res = ok(ddc(*args, src))
        assert res.stdout_bytes.startswith(MAGIC) and calls[-1]["level"] == level, args
    ok(ddc("-c", "--steps", "5", "--seed", "-2", src))
    assert calls[-1]["steps"] == 5 and calls[-1]["seed"] == -2
    assert names(tmp_path) == ["x.txt"]


def test_dash_dash_ends_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "-d", DATA)
    ok(ddc("--method", "store", "--", "-d"))
    assert (tmp_path / "-d.ddc").is_file()
    (tmp_path / "-d").unlink()
    ok(ddc("-d", "--", "-d.ddc"))
    assert (tmp_path / "-d").read_bytes() == DATA


@pytest.mark.parametrize("args", [["-d", "-z"], ["-dl"], ["-t", "--list"], ["--compress", "--decompress"]])
def test_conflicting_modes_are_usage_errors(packed, args):
    res = ddc(*args, "a.txt.ddc")
    assert res.exit_code == 2 and "conflicting modes" in res.output


def test_version_and_help_forms():
    for args in (["--version"], ["-V"]):
        assert ok(ddc(*args)).stdout.strip().endswith(cli.__version__)
    for args in (["--help"], ["-h"]):
        out = ok(ddc(*args)).stdout
        assert "bench" in out and "train" in out and "decompress" in out
    assert "--rm" in ok(ddc("-d", "--help")).stdout  # the mode flag picks the subcommand's help
    assert "--steps" in ok(ddc("-1", "--help")).stdout


# -- 2. early errors ---------------------------------------------------------------------------------


def test_stdout_terminal_refused_before_work(tmp_path, monkeypatch, no_coding):
    monkeypatch.setattr(cli, "_isatty", lambda s: s is sys.stdout)  # stdout is a terminal
    src = _write(tmp_path / "x.txt", DATA)
    for args in (["-c", src], ["-1c", src], ["-o", "-", src], ["-"]):
        res = ddc("--method", "mdm", *args, input=DATA)
        assert res.exit_code == 1 and res.stderr.startswith("ddc: refusing to write compressed data to a terminal"), args
    monkeypatch.setattr(api, "compress", lambda data, **kw: b"blob")
    assert ok(ddc("-c", "-f", src)).stdout_bytes == b"blob"  # -f writes anyway


def test_stdout_terminal_refused_real_pty(tmp_path):
    """The real executable with stdout on a pseudo-terminal: refused at once, before the model loads."""
    src = _write(tmp_path / "x.txt", DATA)
    master, slave = os.openpty()
    try:
        p = subprocess.run(_ddc_exe() + ["-c", "--method", "mdm", "--model", str(tmp_path / "nowhere"), str(src)],
                           stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 1 and p.stderr.decode().startswith("ddc: refusing to write compressed data to a terminal"), p.stderr


def test_output_path_errors_before_work(tmp_path, monkeypatch, no_coding):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "x.txt", DATA)
    for out, why in (("/nonexistent/dir/x.ddc", os.strerror(errno.ENOENT)), ("x.txt/y.ddc", os.strerror(errno.ENOTDIR))):
        res = ddc("--method", "mdm", "-o", out, "x.txt")
        assert res.exit_code == 1 and res.stderr == f"ddc: {out}: {why}\n", res.stderr
    res = ddc("--method", "mdm", "-o", ".", "x.txt")
    assert res.exit_code == 2 and "is a directory" in res.stderr
    packed = _write(tmp_path / "x.txt.ddc", b"not decoded")
    res = ddc("-d", "-o", "/nonexistent/dir/y", packed)
    assert res.exit_code == 1 and res.stderr == f"ddc: /nonexistent/dir/y: {os.strerror(errno.ENOENT)}\n"
    res = ddc("-d", "-f", "-o", packed, packed)  # -f never lets the output replace its own input
    assert res.exit_code == 1 and "is the input file" in res.stderr
    assert names(tmp_path) == ["x.txt", "x.txt.ddc"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any directory, so there is no unwritable one to test")
def test_unwritable_directory_before_work(tmp_path, no_coding):
    ro = tmp_path / "ro"
    ro.mkdir()
    src = _write(tmp_path / "x.txt", DATA)
    ro.chmod(0o555)
    try:
        res = ddc("--method", "mdm", "-o", ro / "x.ddc", src)
    finally:
        ro.chmod(0o755)
    assert res.exit_code == 1 and res.stderr.startswith(f"ddc: {ro / 'x.ddc'}: {os.strerror(errno.EACCES)}")


def test_write_failure_names_the_output_not_the_temp_file(tmp_path, monkeypatch):
    src = _write(tmp_path / "x.txt", DATA)

    def fail(a, b):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), a)

    monkeypatch.setattr(os, "replace", fail)
    monkeypatch.setattr(os, "link", fail)  # without -f the output is named by a hard link
    res = ddc("--method", "store", "--rm", src)
    assert res.exit_code == 1 and res.stderr == f"ddc: {src}.ddc: {os.strerror(errno.EACCES)}\n", res.stderr
    assert names(tmp_path) == ["x.txt"]  # no temp file left, input kept


def test_dash_output_is_stdout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "x.txt", DATA)
    blob = ok(ddc("--method", "store", "-o", "-", "x.txt")).stdout_bytes
    assert blob.startswith(MAGIC) and names(tmp_path) == ["x.txt"]
    _write(tmp_path / "y.ddc", blob)
    assert ok(ddc("-d", "-o", "-", "y.ddc")).stdout_bytes == DATA
    assert names(tmp_path) == ["x.txt", "y.ddc"]
    assert ddc("-c", "-o", "z.ddc", "x.txt").exit_code == 2  # -c and a named output contradict


def test_existing_output_refused_before_decoding(tmp_path, monkeypatch):
    """The README sequence: `ddc compress book.txt` keeps book.txt, so `ddc decompress book.txt.ddc`
    refuses (as zstd does) - at once, without decoding."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "book.txt", DATA)
    ok(ddc("compress", "--method", "store", "book.txt"))
    monkeypatch.setattr(api, "decompress", lambda *a, **k: pytest.fail("decoded before refusing"))
    res = ddc("decompress", "book.txt.ddc")
    assert res.exit_code == 1 and res.stderr == "ddc: book.txt: already exists; use -f to overwrite\n"


# -- 3. many files -----------------------------------------------------------------------------------


def test_many_files_compress_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for n in ("a.txt", "b.txt"):
        _write(tmp_path / n, DATA + n.encode())
    _write(tmp_path / "c.txt.ddc", b"old")
    res = ddc("-1", "--method", "store", "nosuch.txt", "a.txt", "c.txt", "b.txt", ".")
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["ddc: nosuch.txt: No such file or directory",
                                       "ddc: c.txt: No such file or directory",  # the input first, as gzip
                                       "ddc: .: is a directory"]
    assert names(tmp_path) == ["a.txt", "a.txt.ddc", "b.txt", "b.txt.ddc", "c.txt.ddc"]


def test_many_files_decompress_and_test_go_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for n in ("a.txt", "b.txt"):
        _write(tmp_path / n, DATA + n.encode())
    ok(ddc("--method", "xz", "a.txt", "b.txt"))
    (tmp_path / "a.txt").unlink()
    (tmp_path / "b.txt").unlink()
    blob = (tmp_path / "a.txt.ddc").read_bytes()
    _write(tmp_path / "bad.ddc", blob[:-3] + bytes([blob[-3] ^ 1]) + blob[-2:])
    res = ddc("test", "a.txt.ddc", "bad.ddc", "nosuch.ddc", "b.txt.ddc")
    assert res.exit_code == 1
    assert res.stdout.splitlines() == ["a.txt.ddc: OK (%d bytes)" % (len(DATA) + 5), "b.txt.ddc: OK (%d bytes)" % (len(DATA) + 5)]
    err = res.stderr.splitlines()
    assert len(err) == 2 and err[0].startswith("ddc: bad.ddc: corrupt") and err[1] == "ddc: nosuch.ddc: No such file or directory"
    res = ddc("-d", "nosuch.ddc", "a.txt.ddc", "bad.ddc", "b.txt.ddc")
    assert res.exit_code == 1 and [line.split(":")[1] for line in res.stderr.splitlines()] == [" nosuch.ddc", " bad.ddc"]
    assert (tmp_path / "a.txt").read_bytes() == DATA + b"a.txt" and (tmp_path / "b.txt").read_bytes() == DATA + b"b.txt"
    assert not (tmp_path / "bad").exists()
    res = ddc("info", "a.txt.ddc", "nosuch.ddc")
    assert res.exit_code == 1 and "a.txt.ddc: format" in res.stdout and res.stderr.startswith("ddc: nosuch.ddc: ")


def test_usage_errors_exit_2(tmp_path):
    src = _write(tmp_path / "x.txt", DATA)
    for args in (["--steps", "0", src], ["--steps", "-1", src], ["--group-size", "0", src], ["--bogus", src],
                 ["--method", "zip", src], ["-o", tmp_path / "o", src, src], ["--rm", "-k", src], ["--rm", "-c", src]):
        res = ddc(*args)
        assert res.exit_code == 2, (args, res.output)
    assert names(tmp_path) == ["x.txt"]


# -- 4. --device -------------------------------------------------------------------------------------


def test_device_errors_before_work(tmp_path, no_coding):
    import torch

    cases = [("foo", "not a device"), ("cuda:x", "not a device"), ("meta", "unsupported")]
    if not torch.cuda.is_available():
        cases.append(("cuda", "CUDA is not available" if torch.version.cuda is None else "no CUDA device"))
    for dev, why in cases:
        for args in (["nosuch.txt"], ["-d", "nosuch.ddc"], ["-t", "nosuch.ddc"]):
            res = ddc("--device", dev, *args)
            assert res.exit_code == 1 and res.stderr.startswith(f"ddc: --device {dev}: ") and why in res.stderr, res.stderr
            assert len(res.stderr.splitlines()) == 1 and "nosuch" not in res.stderr


# -- 5. --rm / -k ------------------------------------------------------------------------------------


def test_keep_is_a_no_op_and_rm_removes_after_success(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "x.txt", DATA)
    ok(ddc("-k", "--method", "xz", "x.txt"))
    assert names(tmp_path) == ["x.txt", "x.txt.ddc"]
    ok(ddc("--rm", "-f", "--method", "xz", "x.txt"))
    assert names(tmp_path) == ["x.txt.ddc"]
    ok(ddc("-d", "--rm", "x.txt.ddc"))
    assert names(tmp_path) == ["x.txt"] and (tmp_path / "x.txt").read_bytes() == DATA
    ok(ddc("--rm", "--method", "store", "-", input=DATA))  # stdin: nothing to remove
    assert names(tmp_path) == ["x.txt"]
    # -k changes nothing, except that it contradicts --rm: a usage error, as the README says
    assert ddc("-k", "--rm", "--method", "store", "x.txt").exit_code == 2 and names(tmp_path) == ["x.txt"]
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "`-k --rm` is a usage error" in readme and "`-k` (a no-op" not in readme


def _rm_failures(tmp_path, monkeypatch):
    """(what goes wrong, args) pairs: each must leave x.txt alone."""
    def verify_wrong(blob, **kw):
        return b"something else"

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    def corrupt(*a, **k):
        raise IntegrityError("checksum mismatch: decoded data differs from the original")

    return [
        ("output exists", None, ["--rm", "--method", "store", "x.txt"], 1, "already exists"),
        ("verification differs", ("decompress", verify_wrong), ["--rm", "--method", "store", "-f", "x.txt"], 1, "verification failed"),
        ("verification raises", ("decompress", corrupt), ["--rm", "--method", "store", "-f", "x.txt"], 1, "verification failed"),
        ("interrupted compress", ("compress", interrupted), ["--rm", "-f", "x.txt"], 130, "interrupted"),
        ("interrupted verify", ("decompress", interrupted), ["--rm", "-f", "--method", "store", "x.txt"], 130, "interrupted"),
    ]


def test_rm_never_removes_the_input_on_failure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = _write(tmp_path / "x.txt", DATA)
    _write(tmp_path / "x.txt.ddc", b"older output")
    for what, patch, args, code, msg in _rm_failures(tmp_path, monkeypatch):
        with monkeypatch.context() as m:
            if patch:
                m.setattr(api, *patch)
            res = ddc(*args)
        assert res.exit_code == code and msg in res.stderr, (what, res.stderr)
        assert src.read_bytes() == DATA, what
        assert names(tmp_path) == ["x.txt", "x.txt.ddc"] and (tmp_path / "x.txt.ddc").read_bytes() == b"older output", what
    # decompress --rm: a corrupt or interrupted decode keeps the .ddc and writes nothing
    blob = api.compress(DATA, method="store")
    _write(tmp_path / "y.ddc", blob[:-1] + bytes([blob[-1] ^ 1]))
    res = ddc("-d", "--rm", "y.ddc")
    assert res.exit_code == 1 and res.stderr.startswith("ddc: y.ddc: ")
    _write(tmp_path / "z.ddc", blob)
    with monkeypatch.context() as m:
        m.setattr(api, "iter_decompress", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))  # (ddc -d streams)
        assert ddc("-d", "--rm", "z.ddc").exit_code == 130
    assert names(tmp_path) == ["x.txt", "x.txt.ddc", "y.ddc", "z.ddc"]


def test_rm_with_the_model_verifies_by_decoding(tmp_path, tiny_ckpt, monkeypatch, one_thread):
    """The one run through the real coder: --rm decodes the blob (with the tiny model) before removing."""
    monkeypatch.chdir(tmp_path)
    data = words(40)
    _write(tmp_path / "w.txt", data)
    seen = []
    real = api.decompress
    monkeypatch.setattr(api, "decompress", lambda blob, **kw: seen.append(kw) or real(blob, **kw))
    ok(ddc("--rm", "--method", "mdm", "-1", "--model", tiny_ckpt, "w.txt"))
    assert names(tmp_path) == ["w.txt.ddc"] and seen and seen[0]["model"] == str(tiny_ckpt)
    ok(ddc("-d", "--rm", "--model", tiny_ckpt, "w.txt.ddc"))
    assert names(tmp_path) == ["w.txt"] and (tmp_path / "w.txt").read_bytes() == data


# -- 6. an instant CLI that does not import torch ------------------------------------------------------


def _ddc_exe() -> list[str]:
    exe = Path(sys.executable).with_name("ddc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ddcompress.cli"]


def test_help_and_version_are_instant(tmp_path):
    packed = _write(tmp_path / "s.ddc", api.compress(DATA, method="store"))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for args, code, where in ((["--help"], 0, "stdout"), (["--version"], 0, "stdout"), ([], 2, "stderr"),
                              (["info", str(packed)], 0, "stdout"), (["--bogus"], 2, "stderr"),
                              (["train", "--help"], 0, "stdout")):
        # no wall-time bound (it flaked on busy machines): test_torch_not_imported checks what makes them instant
        p = subprocess.run(_ddc_exe() + args, capture_output=True, stdin=subprocess.DEVNULL, env=env, timeout=60)
        assert p.returncode == code and (p.stdout if where == "stdout" else p.stderr), (args, p)


def test_torch_not_imported(tmp_path):
    packed = _write(tmp_path / "s.ddc", api.compress(DATA, method="store"))
    code = f"""
import sys
import ddcompress, ddcompress.cli
from click.testing import CliRunner
assert ddcompress.__version__ == "{cli.__version__}"
for args in (["--help"], ["--version"], [], ["info", "--json", {str(packed)!r}], ["-l", {str(packed)!r}],
             ["--steps", "0", "x"], ["--bogus"], ["-d", "-z", "x"], ["-d", "--help"], ["train", "--help"], ["models"]):
    res = CliRunner().invoke(ddcompress.cli.main, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.exception)
bad = [m for m in ("torch", "ddcompress.api", "ddcompress.bench.run", "ddcompress.bench.cli", "ddcompress.train.loop") if m in sys.modules]
assert not bad, bad
assert "compress" in dir(ddcompress)
# the library loads on first use; torch only once a model runs: stored and xz frames, tiny and
# binary inputs need none (instant, as gzip)
for data in (b"", b"tiny", bytes(range(256)) * 40):
    assert ddcompress.decompress(ddcompress.compress(data)) == data
res = CliRunner().invoke(ddcompress.cli.main, ["-dc", {str(packed)!r}])
assert res.exit_code == 0 and res.stdout_bytes == {DATA!r}, res.output
assert "torch" not in sys.modules
ddcompress.compress(b"the keeper lit the lamp at dusk and wrote the wind in his log, as every night.", method="mdm")
assert "torch" in sys.modules
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_lazy_subcommands_load_on_demand():
    assert "Train" in ok(ddc("train", "--help")).stdout
    assert "--data-dir" in ok(ddc("bench", "--help")).stdout


# -- 7. bench: offline hint, report folder -------------------------------------------------------------


def test_bench_offline_suggests_data_dir_and_writes_nothing(tmp_path, tiny_ckpt, monkeypatch, one_thread):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    res = ddc("bench", "--dataset", "lm1b", "--offline", "--model", tiny_ckpt, "--no-baselines")
    assert res.exit_code == 1, res.output
    assert "lm1b: unavailable" in res.output and "--data-dir DIR" in res.output and "../shared/data/eval" in res.output
    assert names(tmp_path) == []  # no empty report files, no folder
    res = ddc("bench", "--dataset", "lm1b", "--offline", "--model", tiny_ckpt, "--out", tmp_path / "r")
    assert res.exit_code == 1 and not (tmp_path / "r").exists()


def test_bench_default_out_dir(tmp_path):
    from ddcompress.bench.cli import default_out_dir

    assert default_out_dir(tmp_path) == Path(".")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "ddcompress").mkdir()
    (tmp_path / "ddcompress" / "bench.py").write_text("")
    assert default_out_dir(tmp_path) == Path(".")  # a ddc checkout too: never its benchmarks/results unasked


def test_bench_writes_into_the_current_directory_in_a_checkout(tmp_path, tiny_ckpt, eval_dir, monkeypatch, one_thread):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)  # what a ddc checkout looks like
    (tmp_path / "ddcompress").mkdir()
    (tmp_path / "ddcompress" / "bench.py").write_text("")
    ok(ddc("bench", "--dataset", "ptb", "--data-dir", eval_dir, "--model", tiny_ckpt, "--max-tokens", "40",
           "--steps", "4", "--no-baselines", "--max-passes", "2"))
    assert not any((tmp_path / "benchmarks" / "results").iterdir())
    assert {p.suffix for p in tmp_path.glob("bench-*")} >= {".json", ".md"}


def test_bench_out_option(tmp_path, tiny_ckpt, eval_dir, monkeypatch, one_thread):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    ok(ddc("bench", "--dataset", "ptb", "--data-dir", eval_dir, "--model", tiny_ckpt, "--max-tokens", "40",
           "--steps", "4", "--no-baselines", "--max-passes", "2", "--out", "reports"))
    assert names(tmp_path) == ["reports"]
    assert {p.suffix for p in (tmp_path / "reports").iterdir()} >= {".json", ".md"}


def test_batch_option_changes_speed_not_bytes(tmp_path, tiny_ckpt, one_thread):
    """--batch (chunks per forward pass) on compress, decompress and test: same file, same data."""
    data = (b"the keeper lit the lamp and wrote the wind and the sea in his log. " * 40)
    f = tmp_path / "t.txt"
    f.write_bytes(data)
    common = ["--model", tiny_ckpt, "--method", "mdm", "-1", "--group-size", "1", "-c", f]
    a = ok(ddc("compress", "--batch", "1", *common)).stdout_bytes
    b = ok(ddc("compress", "--batch", "64", *common)).stdout_bytes
    assert a == b
    assert ok(ddc("-dc", "--batch", "3", "--model", tiny_ckpt, "-", input=a)).stdout_bytes == data
    ok(ddc("test", "--batch", "2", "--model", tiny_ckpt, "-", input=a))
    assert ddc("compress", "--batch", "0", *common).exit_code == 2  # a usage error
