"""The `ddc` command line: round trips, stdin/stdout, refusals, and one-line errors for bad input.

Most runs go through click's CliRunner (in process, fast); a few run the real `ddc` executable to check
exit codes and stderr as a shell sees them. Every run passes `--model <tiny checkpoint>` (or finds it
by id through $DDC_MODELS)."""
from __future__ import annotations

import gzip
import json
import os
import random
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ddcompress.cli import main
from ddcompress.codec.container import FORMAT_VERSION, parse
from ddcompress.model.denoiser import Denoiser, DenoiserConfig
from ddcompress.model.checkpoint import save_checkpoint
from samples import CONTENT as SAMPLES
from samples import read_leb128, words

L = 64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory) -> Path:
    """A second tiny model, same shape as `tiny_ckpt`, different weights (so a different id)."""
    torch.manual_seed(12345)
    d = tmp_path_factory.mktemp("other_models") / "tiny-b"
    save_checkpoint(Denoiser(DenoiserConfig(seq_len=L, n_layer=2, n_head=2, d_model=32, d_mlp=64)), d)
    return d


def ddc(*args, input: bytes | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def ok(res):
    assert res.exit_code == 0, (res.exit_code, res.stderr, res.exception)
    return res


def assert_one_line_error(res, match: str | None = None):
    assert res.exit_code == 1, (res.exit_code, res.output)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("ddc: "), lines[0]
    assert "Traceback" not in res.output and "internal error" not in lines[0], lines[0]
    assert res.stdout_bytes == b""
    if match:
        assert match in lines[0], lines[0]
    return lines[0]


CONTENT = dict(SAMPLES, boundaries=words(3 * L + 5))


def roundtrip_files(tmp_path: Path, data: bytes, ckpt: Path, *flags) -> dict:
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    ok(ddc("compress", src, "--model", ckpt, *flags))
    packed = tmp_path / "in.bin.ddc"
    assert packed.is_file() and src.read_bytes() == data  # input kept
    src.unlink()
    ok(ddc("-d", packed, "--model", ckpt))
    assert src.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin", "in.bin.ddc"]
    return json.loads(ok(ddc("info", "--json", packed)).stdout)


@pytest.mark.parametrize("name", sorted(CONTENT))
def test_roundtrip_auto(tmp_path, tiny_ckpt, name):
    roundtrip_files(tmp_path, CONTENT[name], tiny_ckpt, "-1")


@pytest.mark.parametrize("flags", [("-1",), ("-5",), ("-9",), ("--steps", "3"), ("--steps", "1000")])
@pytest.mark.parametrize("name", ["boundaries", "all_bytes", "emoji_cjk", "invalid_utf8"])
def test_roundtrip_mdm_levels(tmp_path, tiny_ckpt, name, flags):
    h = roundtrip_files(tmp_path, CONTENT[name], tiny_ckpt, "--method", "mdm", *flags)
    assert h["method"] == "mdm"
    want = {"-1": 2, "-5": 16, "-9": L, "3": 3, "1000": L}[flags[-1]]
    assert h["steps"] == want


@pytest.mark.parametrize("n", [L, L + 1, 2 * L - 1, 5 * L + 7])
def test_roundtrip_chunk_boundaries(tmp_path, tiny_ckpt, n):
    h = roundtrip_files(tmp_path, words(n, seed=n), tiny_ckpt, "--method", "mdm", "--steps", "4", "--group-size", "2", "--seed", "3")
    assert h["tokens"] == n and h["seed"] == 3 and h["group_size"] == 2


def test_canterbury_binary(tmp_path, tiny_ckpt, eval_dir):
    data = (eval_dir / "canterbury" / "sum").read_bytes()
    assert roundtrip_files(tmp_path, data, tiny_ckpt)["method"] == "xz"
    for p in tmp_path.iterdir():
        p.unlink()
    h = roundtrip_files(tmp_path, data[:1200], tiny_ckpt, "--method", "mdm", "-1")
    assert h["method"] == "mdm"


def test_info_json_fields(tmp_path, tiny_ckpt):
    from ddcompress.model.checkpoint import load_checkpoint

    data = words(2 * L + 3)
    h = roundtrip_files(tmp_path, data, tiny_ckpt, "--method", "mdm", "-5")
    blob = (tmp_path / "in.bin.ddc").read_bytes()
    assert h["format_version"] == FORMAT_VERSION
    assert h["model_id"] == load_checkpoint(tiny_ckpt).id
    assert h["original_bytes"] == len(data)
    assert h["compressed_bytes"] == len(blob)
    assert h["tokens"] == 2 * L + 3 and h["steps"] == 16 and h["chunks"] == 3
    assert h["ideal_bits"] == parse(blob).header.ideal_bits > 0
    assert h["bits_per_byte"] == pytest.approx(8 * len(blob) / len(data))
    assert h["file"] == str(tmp_path / "in.bin.ddc")
    # human-readable form mentions the same numbers
    text = ok(ddc("info", tmp_path / "in.bin.ddc")).stdout
    assert f"{len(data)} -> {len(blob)} bytes" in text and h["model_id"] in text and h["tokenizer_id"] in text
    assert f"{h['tokens']} tokens in {h['chunks']} chunks" in text and f"seed {h['seed']}" in text
    # two files -> a JSON list
    rows = json.loads(ok(ddc("info", "--json", tmp_path / "in.bin.ddc", tmp_path / "in.bin.ddc")).stdout)
    assert isinstance(rows, list) and len(rows) == 2
    # stored files have the fields too (as null where they do not apply)
    st = tmp_path / "s.ddc"
    st.write_bytes(ddc("-c", "--method", "store", tmp_path / "in.bin").stdout_bytes)
    hs = json.loads(ok(ddc("info", "--json", st)).stdout)
    assert hs["method"] == "store" and hs["tokens"] is None and hs["model_id"] is None and hs["original_bytes"] == len(data)


def test_stdout_and_stdin(tmp_path, tiny_ckpt):
    data = CONTENT["emoji_cjk"]
    src = tmp_path / "t.txt"
    src.write_bytes(data)
    blob = ok(ddc("-c", "--method", "mdm", "-1", "--model", tiny_ckpt, src)).stdout_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]  # -c writes no file
    assert blob.startswith(b"\x89DDC")
    # stdin -> stdout, both directions, explicit "-" and implicit
    blob2 = ok(ddc("compress", "-", "--method", "mdm", "-1", "--model", tiny_ckpt, input=data)).stdout_bytes
    assert blob2 == blob  # deterministic: same bytes whichever way the data came in
    assert ok(ddc("-d", "-", "--model", tiny_ckpt, input=blob)).stdout_bytes == data
    assert ok(ddc("decompress", "--model", tiny_ckpt, input=blob)).stdout_bytes == data
    assert ok(ddc("-d", "-c", "--model", tiny_ckpt, _write(tmp_path / "x.ddc", blob))).stdout_bytes == data
    # -o names the output
    ok(ddc("-d", "-o", tmp_path / "named.out", "--model", tiny_ckpt, tmp_path / "x.ddc"))
    assert (tmp_path / "named.out").read_bytes() == data
    ok(ddc("compress", "-", "-o", tmp_path / "from_stdin.ddc", "--method", "mdm", "-1", "--model", tiny_ckpt, input=data))
    assert (tmp_path / "from_stdin.ddc").read_bytes() == blob


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def test_test_command(tmp_path, tiny_ckpt):
    src = _write(tmp_path / "a.txt", CONTENT["crlf"])
    ok(ddc(src, "-1", "--method", "mdm", "--model", tiny_ckpt))  # `ddc FILE` = compress
    before = sorted(p.name for p in tmp_path.iterdir())
    for cmd in ("-t", "test", "--test"):
        res = ok(ddc(cmd, tmp_path / "a.txt.ddc", "--model", tiny_ckpt))
        assert "OK" in res.stdout and str(len(CONTENT["crlf"])) in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # test writes nothing
    assert ok(ddc("-t", "-q", tmp_path / "a.txt.ddc", "--model", tiny_ckpt)).stdout == ""
    bad = bytearray((tmp_path / "a.txt.ddc").read_bytes())
    bad[-40] ^= 0x55
    _write(tmp_path / "bad.ddc", bytes(bad))
    assert_one_line_error(ddc("-t", tmp_path / "bad.ddc", "--model", tiny_ckpt), f"{tmp_path / 'bad.ddc'}: ")


def test_overwrite_refusal_and_force(tmp_path, tiny_ckpt):
    src = _write(tmp_path / "f.txt", b"version one " * 20)
    ok(ddc(src, "--model", tiny_ckpt, "-1"))
    first = (tmp_path / "f.txt.ddc").read_bytes()
    src.write_bytes(b"version two, longer " * 20)
    assert_one_line_error(ddc(src, "--model", tiny_ckpt, "-1"), "already exists")
    assert (tmp_path / "f.txt.ddc").read_bytes() == first  # untouched
    ok(ddc(src, "--model", tiny_ckpt, "-1", "-f"))
    assert (tmp_path / "f.txt.ddc").read_bytes() != first
    # decompress onto an existing file
    assert_one_line_error(ddc("-d", tmp_path / "f.txt.ddc", "--model", tiny_ckpt), "already exists")
    assert src.read_bytes() == b"version two, longer " * 20
    src.write_bytes(b"clobber me")
    ok(ddc("-d", "-f", tmp_path / "f.txt.ddc", "--model", tiny_ckpt))
    assert src.read_bytes() == b"version two, longer " * 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "f.txt.ddc"]  # no temp files left
    # compressing a .ddc file needs -f; decompressing needs the suffix (or -o / -c)
    assert_one_line_error(ddc(tmp_path / "f.txt.ddc", "--model", tiny_ckpt), "suffix")
    assert_one_line_error(ddc("-d", src, "--model", tiny_ckpt), "suffix")


def test_new_files_get_the_usual_mode(tmp_path, tiny_ckpt):
    src = _write(tmp_path / "m.txt", b"mode check " * 10)
    ok(ddc(src, "--method", "store"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.txt.ddc").stat().st_mode) == 0o666 & ~umask


# -- bad input: exit 1, one line on stderr, nothing written ---------------------------------------


@pytest.fixture(scope="module")
def good_file(tmp_path_factory, tiny_ckpt) -> bytes:
    d = tmp_path_factory.mktemp("good")
    src = _write(d / "g.txt", words(3 * L + 5, seed=42))
    ok(ddc(src, "--method", "mdm", "-5", "--group-size", "2", "--model", tiny_ckpt))
    return (d / "g.txt.ddc").read_bytes()


def _regions(blob: bytes, payload_at: int) -> dict[str, int]:
    """Offsets of the framing fields, for format 1 (JSON header, table after its CRC) and format 2 (one
    header + table region, then its CRC)."""
    if blob.startswith(b"\x89DDC\r\n\x1a\n"):  # format 1: magic(8) u16 version, u32 length, header, crc, table, crc
        hlen = int.from_bytes(blob[10:14], "little")
        return {"version": 9, "length": 11, "header": 14 + hlen // 2, "header_crc": 14 + hlen + 1,
                "table": 14 + hlen + 4 + 6, "cut_header": 14 + hlen // 2, "cut_table": 14 + hlen + 10}
    # format 2: magic(4) u8 version, varint length, header + table, u32 crc
    n, pos = read_leb128(blob, 5)
    end = pos + n
    assert end + 4 == payload_at
    return {"version": 4, "length": 5, "header": pos + 3, "header_crc": end + 1, "table": end - 6,
            "cut_header": pos + 3, "cut_table": end - 3}


def _bad_cases(blob: bytes) -> dict[str, bytes]:
    c = parse(blob)
    payload_at = len(blob) - sum(c.group_sizes)
    at = _regions(blob, payload_at)

    def flip(i: int, bit: int = 0x20) -> bytes:
        b = bytearray(blob)
        b[i] ^= bit
        return bytes(b)

    return {
        "payload_ff": blob[:payload_at] + b"\xff" * c.group_sizes[0] + blob[payload_at + c.group_sizes[0]:],
        "flip_payload": flip(payload_at + 3),
        "flip_payload_mid": flip(payload_at + c.group_sizes[0] + 11),
        "flip_magic": flip(1),
        "flip_version": flip(at["version"]),
        "flip_header_len": flip(at["length"]),
        "flip_header": flip(at["header"]),
        "flip_header_crc": flip(at["header_crc"]),
        "flip_chunk_table": flip(at["table"]),
        "flip_chunk_crc": flip(payload_at - 8),
        "cut_0": b"",
        "cut_5": blob[:5],
        "cut_12": blob[:12],
        "cut_header": blob[: at["cut_header"]],
        "cut_table": blob[: at["cut_table"]],
        "cut_payload": blob[: payload_at + 5],
        "cut_last": blob[:-1],
        "appended": blob + b"\0",
        "foreign_gzip": gzip.compress(b"hello hello hello"),
        "foreign_random": random.Random(3).randbytes(2000),
        "foreign_text": b"just some text\n",
    }


BAD = ["payload_ff", "flip_payload", "flip_payload_mid", "flip_magic", "flip_version", "flip_header_len", "flip_header",
       "flip_header_crc", "flip_chunk_table", "flip_chunk_crc", "cut_0", "cut_5", "cut_12", "cut_header",
       "cut_table", "cut_payload", "cut_last", "appended", "foreign_gzip", "foreign_random", "foreign_text"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input(tmp_path, tiny_ckpt, good_file, case):
    bad = _write(tmp_path / "bad.ddc", _bad_cases(good_file)[case])
    for args in (("-d", bad), ("-t", bad), ("-d", "-c", bad)):
        assert_one_line_error(ddc(*args, "--model", tiny_ckpt))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ddc"]
    if "payload" not in case or case.startswith("cut"):  # the framing is checked without decoding
        assert_one_line_error(ddc("info", bad))
    assert_one_line_error(ddc("-d", "-", "--model", tiny_ckpt, input=bad.read_bytes()))


@pytest.mark.parametrize("method", ["xz", "store"])
def test_bad_fallback_payload(tmp_path, method):
    src = _write(tmp_path / "p.txt", b"some text to pack, some text to pack. " * 50)
    ok(ddc(src, "--method", method))
    blob = (tmp_path / "p.txt.ddc").read_bytes()
    assert json.loads(ok(ddc("info", "--json", "-", input=blob)).stdout)["method"] == method
    src.unlink()
    for at in (len(blob) - 1, len(blob) - 30):
        bad = bytearray(blob)
        bad[at] ^= 0x04
        _write(tmp_path / "p.txt.ddc", bytes(bad))
        assert_one_line_error(ddc("-d", tmp_path / "p.txt.ddc"))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt.ddc"]


def test_wrong_model(tmp_path, tiny_ckpt, other_ckpt, good_file):
    f = _write(tmp_path / "g.txt.ddc", good_file)
    from ddcompress.model.checkpoint import load_checkpoint

    line = assert_one_line_error(ddc("-d", f, "--model", other_ckpt), "wrong model")
    assert load_checkpoint(tiny_ckpt).id in line and line.startswith(f"ddc: {f}: ")
    assert_one_line_error(ddc("-t", f, "--model", other_ckpt), "wrong model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.txt.ddc"]


def test_model_lookup_by_id(tmp_path, tiny_ckpt, good_file, monkeypatch):
    f = _write(tmp_path / "g.txt.ddc", good_file)
    empty = tmp_path / "no_models"
    empty.mkdir()
    monkeypatch.setenv("DDC_MODELS", str(empty))
    assert_one_line_error(ddc("-d", f), "--model")  # the id is not among the installed models
    assert not (tmp_path / "g.txt").exists()
    monkeypatch.setenv("DDC_MODELS", str(tiny_ckpt.parent))
    ok(ddc("-d", f))  # found by the id in the header
    assert (tmp_path / "g.txt").read_bytes() == words(3 * L + 5, seed=42)
    ok(ddc("-t", f))


def test_other_errors(tmp_path, tiny_ckpt):
    assert_one_line_error(ddc(tmp_path / "missing.txt", "--model", tiny_ckpt), "missing.txt")
    assert_one_line_error(ddc(tmp_path, "--model", tiny_ckpt), "directory")
    src = _write(tmp_path / "x.txt", b"hello")
    assert_one_line_error(ddc(src, "--model", tmp_path / "nowhere"), "not found")
    # usage errors exit 2 (and write nothing)
    for steps in ("0", "-3"):
        res = ddc(src, "--model", tiny_ckpt, "--steps", steps)
        assert res.exit_code == 2 and "--steps" in res.stderr
    res = ddc(src, tmp_path / "x.txt", "-o", tmp_path / "o.ddc", "--model", tiny_ckpt)
    assert res.exit_code == 2 and "-o" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    assert ddc(src, "--bogus-option").exit_code == 2


def test_verbose_summary(tmp_path, tiny_ckpt):
    from ddcompress.native import kernels as native

    src = _write(tmp_path / "v.txt", words(100))
    res = ok(ddc(src, "-v", "-1", "--method", "mdm", "--model", tiny_ckpt))
    assert "bits/byte" in res.stderr and "coded/ideal" in res.stderr
    # what the arithmetic ran on: the C kernels, or the torch operations and why; then the coder, the mixer
    ran = native.status()
    assert ran["denoiser"] in ("C kernels", "C kernels, AMX GEMMs") or ran["denoiser"].startswith("torch operations (")
    assert ran["coder"] in ("rANS in C", "rANS in Python") and ran["mixer"] in ("mixing in C", "mixing in Python")
    how = ", ".join(ran.values())
    shares = r", denoiser \d+%, coder \d+%\]"  # where the time went (the api's timings)
    assert re.search(re.escape(f", {how}") + shares, res.stderr), res.stderr
    res = ok(ddc("-d", "-f", "-v", tmp_path / "v.txt.ddc", "--model", tiny_ckpt))
    assert res.stderr.count("\n") == 1 and re.search(re.escape(f"[{how}") + shares, res.stderr), res.stderr
    xz = ok(ddc(src, "-v", "-f", "--method", "xz", "-o", tmp_path / "x.ddc"))
    assert "kernels" not in xz.stderr and "torch" not in xz.stderr
    assert "torch" not in ok(ddc("-d", "-f", "-v", "-o", tmp_path / "x.out", tmp_path / "x.ddc")).stderr
    assert ok(ddc(src, "-q", "-f", "-1", "--model", tiny_ckpt)).stderr == ""


def test_internal_errors_are_one_line_unless_verbose(tmp_path, monkeypatch):
    """An unexpected exception is reported on one line; `-v` on the ddc command line (not in the host
    program's sys.argv) shows the traceback."""
    import ddcompress.api

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    f = _write(tmp_path / "x.txt", b"hello")
    monkeypatch.setattr(ddcompress.api, "compress", boom)
    monkeypatch.setattr(sys, "argv", ["pytest", "-v"])
    res = ddc("-c", "-f", f)
    assert res.exit_code == 1 and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("ddc: internal error: RuntimeError: simulated bug") and "-v" in res.stderr
    res = ddc("-c", "-f", "-v", f)
    assert isinstance(res.exception, RuntimeError)


# -- the real executable ----------------------------------------------------------------------------


def _ddc_exe() -> list[str]:
    exe = Path(sys.executable).with_name("ddc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ddcompress.cli"]


def test_real_process(tmp_path, tiny_ckpt, other_ckpt):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    data = CONTENT["invalid_utf8"] * 3
    run = lambda args, inp=None: subprocess.run(_ddc_exe() + [str(a) for a in args], input=inp, capture_output=True,
                                                env=env, cwd=tmp_path, timeout=120)
    p = run(["-c", "--method", "mdm", "-1", "--model", tiny_ckpt, "-"], data)
    assert p.returncode == 0 and p.stderr == b""
    blob = p.stdout
    p = run(["-d", "--model", tiny_ckpt], blob)
    assert p.returncode == 0 and p.stdout == data
    _write(tmp_path / "f.ddc", blob)
    p = run(["-d", "--model", other_ckpt, "f.ddc"])
    assert p.returncode == 1 and p.stdout == b""
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddc: ") and "wrong model" in lines[0]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.ddc"]


def test_models_lists_the_shipped_default_with_its_id():
    from ddcompress.model import registry

    res = ddc("models")
    assert res.exit_code == 0, res.output
    lm = registry.resolve(None)
    assert f"{registry.DEFAULT_MODEL} (default): id {lm.id}" in res.output and "M params" in res.output
