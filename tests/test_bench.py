"""`ddc bench` end to end on small slices of the local corpora with the tiny model, plus its parts."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ddcompress.bench.run import baselines, usable_length
from ddcompress.bench.cli import parse_steps
from ddcompress.cli import main
from ddcompress.bench.corpora import SEP, DatasetUnavailable, load_corpus, stream_bytes, token_stream, wikitext_articles
from ddcompress.codec.tokenizer import EOS_ID

MAX_TOKENS = 150  # -> 128 tokens: two chunks of the tiny model's L = 64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def offline(monkeypatch):
    """Hermetic: never reach the hub, whatever the machine's network (restored after the test)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def report(tiny_ckpt, eval_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    args = ["bench", "--dataset", "all", "--data-dir", str(eval_dir), "--model", str(tiny_ckpt), "--offline",
            "--max-tokens", str(MAX_TOKENS), "--steps", "2", "L", "--verify", "--max-passes", "3",
            "--json", str(out / "r.json"), "--markdown", str(out / "r.md"), "--plot", str(out / "r.png")]
    t0 = time.monotonic()
    res = CliRunner().invoke(main, args)
    mp.undo()
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "r.json").read_text())
    rep["_out"], rep["_output"], rep["_secs"] = out, res.output, time.monotonic() - t0
    return rep


def _by(report):
    return {r["dataset"]: r for r in report["results"]}


def test_all_datasets_reported_lm1b_unavailable(report):
    by = _by(report)
    assert list(by) == ["lambada", "wikitext2", "ptb", "wikitext103", "lm1b"]
    assert not by["lm1b"]["available"] and "lm1b" in by["lm1b"]["reason"]
    assert all(by[d]["available"] for d in ("lambada", "wikitext2", "ptb", "wikitext103"))
    assert "WikiText-2" in by["wikitext103"]["note"]
    assert report["command"].startswith("ddc bench --dataset all")
    assert {"hardware", "torch", "device"} <= set(report["machine"])


def test_json_fields_consistent(report, tiny_ckpt):
    for r in report["results"]:
        if not r["available"]:
            continue
        for key in ("dataset", "model", "bytes", "gpt2_tokens", "elbo_ppl", "elbo_stderr", "coded_ppl", "bpb", "steps", "baselines"):
            assert key in r, key
        n = r["gpt2_tokens"]
        assert n == 128 and r["truncated"] and r["dropped_tail_tokens"] == MAX_TOKENS - 128
        assert r["elbo_ppl"] == pytest.approx(math.exp(r["nelbo_nats_per_token"]))
        assert 0 < r["elbo_stderr"] < r["elbo_ppl"] and 2 <= r["nelbo_passes"] <= 3
        assert r["model_bytes"] == (tiny_ckpt / "model.safetensors").stat().st_size
        assert r["steps"] == [2, 64] and [c["grid"] for c in r["coded"]] == ["sine", "uniform"]
        for c in r["coded"]:
            # flushing costs >= 32 bits per group, far above what 24-bit quantization can win back on
            # 128 tokens (a near-uniform model on 65k tokens did come out ~0.0006 bit/token under ideal)
            assert c["coded_bits"] == 8 * c["payload_bytes"] >= c["ideal_bits"] > 0
            assert r["bpb"][str(c["steps"])] * r["bytes"] == pytest.approx(c["coded_bits"])
            assert r["coded_ppl"][str(c["steps"])] == pytest.approx(2 ** (c["coded_bits"] / n))
            assert c["ratio_to_nelbo"] == pytest.approx(c["coded_bits"] / r["nelbo_bits"])
            # with and without format 5's mixing: the denoiser's own ideal bits, as a perplexity too
            assert c["denoiser_bits"] > 0 and c["unmixed_ppl"] == pytest.approx(2 ** (c["denoiser_bits"] / n))
            assert c["mixing_saved"] == pytest.approx(1 - c["ideal_bits"] / c["denoiser_bits"])
        assert r["coded"][0]["verified"] is True and r["coded"][1]["verified"] is None
        for name, b in r["baselines"].items():
            assert b is None or b["bpb"] == pytest.approx(8 * b["bytes"] / r["bytes"]), name


def test_bytes_match_the_token_stream(report, eval_dir):
    r = _by(report)["wikitext2"]
    tokens, truncated = token_stream(load_corpus("wikitext2", "test", eval_dir).documents, MAX_TOKENS)
    data = stream_bytes(tokens[:128])
    assert truncated and len(data) == r["bytes"] and r["documents"] == data.count(SEP)


def test_reports_written(report):
    md = (report["_out"] / "r.md").read_text()
    assert "| MD4 small | 48.43 | 34.94 | 102.26 | 35.90 | 68.10 | published |" in md
    assert "NELBO bound" in md and "measured" in md and "TRUNCATED" in md and "gzip -9" in md
    try:
        import matplotlib  # noqa: F401  (optional extra: the plot is skipped without it)
    except ImportError:
        assert not (report["_out"] / "r.png").exists()
    else:
        assert (report["_out"] / "r.png").stat().st_size > 1000
    assert "Zero-shot perplexity" in report["_output"] and "lm1b: unavailable" in report["_output"]


def test_short_stream_single_chunk_and_bad_model(tiny_ckpt, eval_dir, tmp_path, offline):
    res = CliRunner().invoke(main, ["bench", "--dataset", "ptb", "--data-dir", str(eval_dir), "--model", str(tiny_ckpt),
                                    "--max-tokens", "40", "--steps", "4", "--no-baselines", "--max-passes", "2",
                                    "--out-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (js,) = tmp_path.glob("bench-*.json")
    (r,) = json.loads(js.read_text())["results"]
    assert r["gpt2_tokens"] == 40 and r["chunks"] == 1 and r["baselines"] == {} and r["steps"] == [4]
    res = CliRunner().invoke(main, ["bench", "--model", str(tmp_path / "nope"), "--out-dir", str(tmp_path)])
    assert res.exit_code == 1 and "not found" in res.output


def test_parse_steps():
    assert parse_steps((), 1024) == [(16, "sine")]
    assert parse_steps(("16", "64,1024", "L", "2000"), 1024) == [(16, "sine"), (64, "sine"), (1024, "uniform")]
    with pytest.raises(Exception):
        parse_steps(("x",), 64)


def test_usable_length():
    assert usable_length(300, 64) == 256 and usable_length(40, 64) == 40 and usable_length(128, 64) == 128


def test_wikitext_articles_match_published_titles(eval_dir):
    text = (eval_dir / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8")
    arts = wikitext_articles(text)
    want = json.loads((eval_dir / "wikitext2" / "wikitext2_test_valid_titles.json").read_text())["wikitext2_test_titles"]
    assert "".join(arts) == text
    assert [a.strip().splitlines()[0].strip()[2:-2] for a in arts] == want


def test_token_stream_and_bytes():
    docs = ["hello world", "caf\u00e9 \u2603", "x"]
    tokens, truncated = token_stream(docs)
    assert not truncated and np.count_nonzero(tokens == EOS_ID) == 3 and tokens[-1] == EOS_ID
    assert stream_bytes(tokens) == SEP.join(d.encode() for d in docs) + SEP
    cut, truncated = token_stream(docs, 3)
    assert truncated and len(cut) == 3


def test_lm1b_offline_fails_fast(offline):
    t0 = time.monotonic()
    with pytest.raises(DatasetUnavailable, match="lm1b"):
        load_corpus("lm1b", offline=True)
    assert time.monotonic() - t0 < 20


def test_baselines_round_trip_and_missing_module(monkeypatch):
    data = b"the quick brown fox jumps over the lazy dog\n" * 50
    res = baselines(data)
    assert res["gzip -9"]["bpb"] < 8 and res["xz -9e"]["bytes"] > 0
    monkeypatch.setitem(sys.modules, "brotli", None)  # import now raises ImportError
    assert baselines(data)["brotli -11"] is None


def test_reports_render_from_the_json_alone(tmp_path):
    """`ddc bench --render` re-makes a committed report's Markdown from its JSON, byte for byte."""
    from click.testing import CliRunner

    from ddcompress.cli import main

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    src = results / "bench-ddc-small-20261128-050719.json"
    (tmp_path / "r.json").write_bytes(src.read_bytes())
    res = CliRunner().invoke(main, ["bench", "--render", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.md").read_text() == src.with_suffix(".md").read_text()


def test_without_the_bench_extra_messages_name_it(monkeypatch, tmp_path):
    """Plain installs lack `datasets`: hub corpora and hf: training sources say which extra to install."""
    import importlib.util

    from ddcompress.train.data import iter_documents
    from ddcompress.errors import DDCError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "datasets" else real(n, *a))
    with pytest.raises(DatasetUnavailable, match=r"--data-dir.*'bench' extra"):
        load_corpus("ptb", data_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DDCError, match=r"'bench' extra"):
        next(iter_documents("hf:some/corpus"))
