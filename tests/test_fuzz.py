"""Fuzzing (issue 11): hostile headers whose checksums are valid, and random round trips.

1. Hostile headers. Valid files (store, xz, and mdm made with the tiny model: one group, several groups
   with a tail chunk, concatenated frames) are taken apart by a field-level codec of format 3 written
   in tests/support/fuzz.py, independently of `ddcompress.codec.container`. A mutation sets any header field or table entry to
   any value (extremes, "negative" ones such as 2^64-1, overlong or non-minimal varints, unknown enum
   codes, values inconsistent with the table), drops or duplicates entries, flips payload bytes (with
   the payload CRC recomputed, so the rANS decoder or the token CRCs must catch it), or changes N, the
   version or the header CRC. The header CRC is then RECOMPUTED, so every mutation reaches the checks
   behind it. `decompress` and `info` must return the right result (a mutation that changes nothing
   the decoder uses, such as `level`) or raise a DDCError with a one-line message: no other exception,
   no run past a time bound (2 CPU s per call, by SIGPROF), no allocation in proportion to a claimed
   size (per call: tracemalloc's peak, which sees Python and numpy, and the growth of the resident
   set's high-water mark, which sees torch too, reset through /proc/self/clear_refs).
2. Random round trips: random byte strings (empty, binary, invalid UTF-8, CRLF mixes, long runs,
   unicode) through compress/decompress with random levels, steps, seeds and group sizes.

`benchmarks/fuzz.py` runs the same generators at scale: everything in support/fuzz.py is plain functions
of a `random.Random` (hypothesis drives them here through `st.randoms`, shrinkable and derandomized;
the benchmark seeds one `random.Random` per case, so a failure is reproduced from its seed).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ddcompress.errors import DDCError

from support.fuzz import (COMMON_FIELDS, F32S, Field, MDM_FIELDS, RAW_F32S, RAW_VARINTS, U32S, U8S, VARINTS,
                          apply, attack_files, check_hostile, check_roundtrip, guarded, hostile_case,
                          judge_error, layout, make_bases, read_frames, roundtrip_case, run_mutation)

# ============================================================================================================
# the tests (the generators and checks are in support/fuzz.py, shared with benchmarks/fuzz.py)

pytestmark = pytest.mark.usefixtures("one_thread")
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CTX: dict = {}  # the hypothesis tests read bases/frames/lm here, so that a falsifying example prints only rng


@pytest.fixture(scope="module")
def ctx(tiny_lm):
    import ddcompress

    bases = make_bases(tiny_lm)
    for blob, data in bases.values():  # warm up the tokenizer, the exact model and the entropy coder
        assert ddcompress.decompress(blob, model=tiny_lm) == data
    CTX.update(bases=bases, frames={n: read_frames(b) for n, (b, _) in bases.items()}, lm=tiny_lm)
    yield CTX
    CTX.clear()


def mutate(base: str, muts: list, **kw) -> str:
    return run_mutation(base, muts, CTX["bases"], CTX["frames"], CTX["lm"], **kw)


def test_independent_codec_reads_the_files(ctx):
    fr = ctx["frames"]["mdm_multi"][0]
    assert [f.name for f in fr.fields[:15]] == [n for n, _ in COMMON_FIELDS + MDM_FIELDS]
    assert (fr.get("seq_len").value, fr.get("group_size").value, fr.get("tokens").value) == (64, 2, 197)
    assert layout(197, 64, 2) == (4, 3) and len(fr.payloads) == 3
    assert [len(f.payloads) for f in ctx["frames"]["concat"]] == [1, 1, 1]
    assert apply(ctx["frames"]["mdm_multi"], [["set", 0, "level", 1]]) == ctx["bases"]["mdm_multi"][0]  # a no-op


def sweep_values(f: Field) -> list[list]:
    """Every extreme value of a field's kind."""
    if f.kind == "varint":
        return [["set", v] for v in VARINTS] + [["raw", h] for h in RAW_VARINTS]
    if f.kind == "u8":
        return [["set", v] for v in U8S]
    if f.kind == "u32":
        return [["set", v] for v in U32S + (f.value ^ 1,)]
    if f.kind == "f32":
        return [["set", v] for v in F32S] + [["raw", h] for h in RAW_F32S]
    return [["raw", "00" * len(f.value)], ["raw", "ff" * len(f.value)], ["raw", ""]]


LAYOUT_FIELDS = ("method", "tokens", "seq_len", "group_size")  # what the table's size follows from


@pytest.mark.parametrize("base", ["store", "store_empty", "xz", "mdm_one", "mdm_multi", "concat"])  # mdm_crlf: random only
def test_every_field_at_every_extreme(base, ctx):
    """A deterministic sweep: each header field and table entry of each file, alone, at each extreme."""
    outcomes: dict[str, int] = {}
    for i, fr in enumerate(ctx["frames"][base]):
        if base == "concat" and i == 0:
            continue  # the same frame as mdm_one: here only the later frames
        for f in fr.fields:
            if f.name.startswith("token_crc[") and f.name not in ("token_crc[0]", "token_crc[2]"):
                continue  # token CRCs are alike: the first and the tail group's
            if base == "mdm_multi" and "[" not in f.name and f.name not in LAYOUT_FIELDS:
                continue  # swept on mdm_one; here the fields that shape the tables, and the tables
            for op, v in sweep_values(f):
                for out in mutate(base, [[op, i, f.name, v]]).split("|"):
                    outcomes[out] = outcomes.get(out, 0) + 1
    assert sum(outcomes.values()) > 60 and set(outcomes) <= {"ok", "FormatError", "IntegrityError", "ModelError"}, outcomes


@pytest.mark.usefixtures("ctx")
@settings(FUZZ, max_examples=200)
@given(rng=st.randoms(use_true_random=False))
def test_hostile_headers(rng):
    """1-3 random mutations of a random file (see random_mutation)."""
    hostile_case(rng, CTX["bases"], CTX["frames"], CTX["lm"])


HUGE = (10**12, 2**40, 2**48 - 1, 2**63, 2**64 - 1)


@pytest.mark.parametrize("claim", ["tokens", "original_bytes", "seq_len", "group_size", "payload_size[0]"])
def test_huge_claims_fail_fast_without_allocating(claim, ctx):
    """A claimed size up to 2^64, made consistent with the fields it is checked against, is refused in
    well under a second with almost no memory."""
    for base in ("mdm_multi", "mdm_one", "xz", "concat"):
        if ctx["frames"][base][0].get(claim) is None:
            continue
        for v in HUGE:
            mutate(base, [["set" if claim.startswith("payload") else "consistent", 0, claim, v]], limit_s=1.0,
                   max_alloc=1 << 20)


def test_decompression_bomb_is_bounded(ctx):
    """An xz payload that inflates to 16 MiB under a header that says 1200 bytes is refused without
    inflating it (allowing for the 64 MiB dictionary lzma allocates for any preset-9 stream)."""
    mutate("xz", [["bomb", 0, 1 << 24]], limit_s=2.0, max_alloc=8 << 20)


def test_header_seq_len_other_than_the_models(ctx):
    """seq_len 65 keeps the layout of the 197-token file (4 chunks, 3 groups), so the framing accepts
    it; the decoder must refuse a chunk length that is not its model's."""
    mutate("mdm_multi", [["set", 0, "seq_len", 65]])


CLI_CASES = {
    "claims_1e12_tokens": [["consistent", 0, "tokens", 10**12]],
    "overlong_varint": [["raw", 0, "seed", "80" * 10 + "01"]],
    "unknown_grid": [["set", 0, "grid", 7]],
    "token_crc_flipped": [["set", 0, "token_crc[1]", 0]],
    "payload_flipped_crc_fixed": [["flip", 0, 0, 5, 0x10, True]],
    "sizes_beyond_the_file": [["set", 0, "payload_size[2]", 1 << 20]],
    "seq_len_65": [["set", 0, "seq_len", 65]],
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_hostile(case, tmp_path, ctx, tiny_ckpt):
    """Through the command line: exit 1, one line on stderr, nothing on stdout, no file written."""
    from ddcompress.cli import main

    bad = tmp_path / "bad.ddc"
    bad.write_bytes(apply(ctx["frames"]["mdm_multi"], CLI_CASES[case]))
    for args in (["-d", "-c", bad], ["-d", bad], ["-t", bad]):
        res = CliRunner().invoke(main, [str(a) for a in args] + ["--model", str(tiny_ckpt)])
        assert res.exit_code == 1, (args, res.exit_code, res.output)
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ddc: "), res.stderr
        assert "internal error" not in lines[0] and "Traceback" not in res.output, lines[0]
        assert res.stdout_bytes == b""
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ddc"]


@pytest.mark.usefixtures("ctx")
@settings(FUZZ, max_examples=60, phases=[Phase.explicit, Phase.generate])  # a failure states its input; no slow shrinking
@given(rng=st.randoms(use_true_random=False))
def test_random_roundtrips(rng):
    roundtrip_case(rng, CTX["lm"])


EDGE_INPUTS = {"empty": b"", "nul": b"\0", "ff": b"\xff", "crlf": b"\r\n", "lf": b"\n", "cr": b"\r", "emoji": "😀".encode(),
               "surrogates": b"\xed\xa0\x80" * 30, "run": b"a" * 300, "crlf_run_then_lf": b"\r\n" * 40 + b"\n"}


@pytest.mark.parametrize("name", sorted(EDGE_INPUTS))
def test_roundtrip_edge_inputs(name, ctx):
    data = EDGE_INPUTS[name]
    for params in ({"method": "mdm", "level": 1}, {"method": "auto"}, {"method": "mdm", "steps": 64, "group_size": 1}):
        check_roundtrip(data, params, ctx["lm"])


ATTACKS = ("group_size_2^20_empty_streams", "group_size_cap+1", "tokens_2^40_short_table", "chunks_at_cap_empty_streams",
           "chunks_at_cap_shortest_payloads", "chunks_at_cap_first_group_whole")


@pytest.fixture(scope="module")
def attacks(ctx):
    from ddcompress.codec.tokenizer import get_tokenizer

    return attack_files(ctx["lm"].id, get_tokenizer().id[:8], 64)


@pytest.mark.parametrize("name", ATTACKS)
def test_chunk_count_and_group_size_attacks(name, attacks, ctx):
    """Each attack ends in its one-line DDCError within the harness's bounds: CPU time, 16 MiB traced by
    tracemalloc (Python and numpy), 128 MiB of growth of the resident set (torch too). The last one
    decodes a whole group at the cap first (64 chunks: the most a group can make a decoder hold), whose
    row blocks of frequencies (512 rows of V = 50257, ~100 MB as float32, with their sums) a process
    that decoded nothing that large before maps anew: 512 MiB there, a constant of the decoder, not
    of any claim."""
    blob, want = attacks[name]
    whole = name.endswith("whole")
    out = check_hostile(blob, b"", True, ctx["lm"], limit_s=6.0 if whole else 1.0, max_alloc=16 << 20,
                        max_rss_mb=512 if whole else 128)
    assert out.split("|")[0] == want, out


def test_attacks_under_an_address_space_limit(attacks, tiny_ckpt, tmp_path):
    """The same files decoded in a fresh process whose address space may grow by only 1 GiB past what
    the loaded model maps (RLIMIT_AS): a decoder that sized anything by a claim would end in a
    MemoryError (the 17 KB file built 2^30 chunk objects; 2^26 tokens at the cap allocated 8 bytes each)."""
    import subprocess
    import sys

    paths = []
    for name in ATTACKS:
        paths.append(tmp_path / f"{name}.ddc")
        paths[-1].write_bytes(attacks[name][0])
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from support import fuzz as t; "
            "print(json.dumps([t.probe(p, sys.argv[2], 1024) for p in sys.argv[3:]]))")
    res = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tiny_ckpt), *map(str, paths)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for name, rec in zip(ATTACKS, got):
        assert rec["outcome"] == attacks[name][1], (name, rec)
        assert rec["rss_growth_mib"] < 256, (name, rec)


def test_the_guards_catch_a_hang_and_a_foreign_exception():
    def spin():
        while True:
            pass

    _, err, _, _, _ = guarded(spin, limit_s=0.2)  # returns at all: the CPU-time guard stopped the spin
    with pytest.raises(AssertionError, match="hang"):
        judge_error(err, "sleep")
    _, err, _, _, _ = guarded(int, "x", limit_s=1)
    with pytest.raises(AssertionError, match="ValueError is not a DDCError"):
        judge_error(err, "int")
    assert judge_error(DDCError("one line"), "f") == "DDCError"
    with pytest.raises(AssertionError, match="one-line"):
        judge_error(DDCError("two\nlines"), "f")
