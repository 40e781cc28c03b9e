"""ddc train: the loss goes down, resume is exact, the named steps and recipes (checkpoints: test_checkpoint.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ddcompress
from ddcompress.model import registry
from ddcompress.train.loop import TrainConfig, train

TEXT = ("The quick brown fox jumps over the lazy dog. " * 40 + "\n") * 6


def _cfg(tmp: Path, **kw) -> TrainConfig:
    data = tmp / "data.txt"
    data.write_text(TEXT)
    base = dict(data=[str(data)], valid=str(data), out=str(tmp / "run"), d_model=32, n_layer=1, n_head=2,
                seq_len=32, batch_size=8, lr=3e-3, warmup=2, steps=40, eval_every=0, eval_windows=8,
                eval_passes=2, save_every=0, log_every=1, ema=0.0, device="cpu", export_dtype="float32")
    base.update(kw)
    return TrainConfig(**base)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_few_steps_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    info = train(_cfg(tmp_path, eval_every=20), log=lambda *_: None)
    rows = _log(tmp_path / "run")
    losses = [r["loss"] for r in rows if "loss" in r]
    valid = [r["valid_nelbo"] for r in rows if "valid_nelbo" in r]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])  # single batches are noisy (1/t weights)
    # fixed held-out windows and times: the NELBO falls, far below a uniform model's log(V) = 10.8 nats
    assert len(valid) == 2 and valid[1] < valid[0] < 10.0 and valid[1] < 7.5
    assert info["final_valid_nelbo"] == valid[-1]
    lm = registry.resolve(str(tmp_path / "run" / "model"))
    assert lm.id == info["model_id"]


def test_resume_reproduces_the_next_steps_exactly(tmp_path):
    kw = dict(steps=8, ema=0.9)
    torch.manual_seed(0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train(_cfg(tmp_path / "a", **kw), log=lambda *_: None)
    torch.manual_seed(0)
    train(_cfg(tmp_path / "b", stop_after=5, **kw), log=lambda *_: None)
    torch.manual_seed(1)  # resume must not depend on the global RNG
    train(_cfg(tmp_path / "b", resume=True, **kw), log=lambda *_: None)
    la = [r["loss"] for r in _log(tmp_path / "a" / "run") if "loss" in r]
    lb = [r["loss"] for r in _log(tmp_path / "b" / "run") if "loss" in r]
    assert len(la) == len(lb) == 8
    assert la == lb  # bit-identical losses, the resumed steps included
    wa = load_file(str(tmp_path / "a" / "run" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "run" / "model" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_auto_keeps_the_shipped_model_where_it_beats_xz(eval_dir):
    text = (eval_dir / "canterbury" / "alice29.txt").read_bytes()[20000:22000]  # CRLF prose, one chunk
    blob = ddcompress.compress(text, level=3)
    h = ddcompress.info(blob)
    assert h["method"] == "mdm" and h["transform"] == "crlf"
    assert len(blob) < len(ddcompress.compress(text, method="xz"))
    assert ddcompress.decompress(blob) == text


# ---------------------------------------------------------------------------------------------------
# the named steps, recipe options, and the GPU campaign at tiny scale on CPU


def test_arguments_are_checked_before_any_data_is_loaded(tmp_path, monkeypatch):
    from ddcompress.errors import UsageError
    from ddcompress.train import loop as train_mod

    monkeypatch.setattr(train_mod, "load_tokens", lambda *a, **k: pytest.fail("data loaded before the arguments were checked"))
    cfg = TrainConfig(data=[str(tmp_path / "missing.txt")], out=str(tmp_path / "run"), steps=0, max_minutes=0, optimizer="sgd",
                      lr_schedule="linear", n_head=3, device="cpu", init_from=str(tmp_path))
    with pytest.raises(UsageError) as err:  # (the library never raises click's errors; `ddc train` translates)
        train(cfg, log=lambda *_: None)
    msg = str(err.value)
    for part in ("no such data source", "--steps or --max-minutes", "--optimizer must be one of adamw, muon",
                 "--lr-schedule must be one of", "--d-model must be an even multiple of --n-head", "--init-from"):
        assert part in msg
    assert not (tmp_path / "run").exists()


def test_wsd_schedule_holds_then_decays():
    from ddcompress.train.optim import lr_at

    cfg = TrainConfig(lr=1e-3, warmup=10, lr_schedule="wsd", decay_frac=0.2, min_lr_frac=0.0)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 50, 0.5) == lr_at(cfg, 60, 0.79) == 1e-3
    assert lr_at(cfg, 90, 0.9) == pytest.approx(5e-4) and lr_at(cfg, 100, 1.0) == 0.0


def test_document_aligned_windows_start_where_the_coder_cuts(tmp_path):
    from ddcompress.train.data import WindowSampler, document_chunk_starts
    from ddcompress.codec.tokenizer import EOS_ID

    docs = [np.arange(1, 1 + n, dtype=np.uint16) for n in (5, 12, 3, 9)]
    tokens = np.concatenate([np.append(d, EOS_ID) for d in docs]).astype(np.uint16)
    starts = document_chunk_starts(tokens, 4)
    doc_starts = [0, 6, 19, 23]
    # every document's first token starts a chunk, then every 4 tokens within it; the last start is clipped
    assert list(starts) == [0, 4, 6, 10, 14, 18, 19, 23, 27, 29]
    assert set(doc_starts) <= set(starts.tolist())
    s = WindowSampler(tokens, 4, "docs", seed=3)
    seen = np.concatenate([s.batch(5, k)[:, 0] for k in range(2)])  # one epoch: each chunk exactly once
    assert sorted(seen.tolist()) == sorted(tokens[starts].tolist())
    assert np.array_equal(s.batch(5, 1), WindowSampler(tokens, 4, "docs", seed=3).batch(5, 1))


@pytest.mark.slow
def test_muon_wsd_docs_recipe_trains_and_resumes_exactly(tmp_path):
    kw = dict(steps=8, optimizer="muon", lr_schedule="wsd", packing="docs", lr=3e-3, ema=0.9)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    info = train(_cfg(tmp_path / "a", **kw), log=lambda *_: None)
    train(_cfg(tmp_path / "b", stop_after=5, **kw), log=lambda *_: None)
    train(_cfg(tmp_path / "b", resume=True, **kw), log=lambda *_: None)
    la = [r["loss"] for r in _log(tmp_path / "a" / "run") if "loss" in r]
    lb = [r["loss"] for r in _log(tmp_path / "b" / "run") if "loss" in r]
    assert la == lb and all(np.isfinite(la))  # two optimizers (Muon + AdamW) saved and restored bit for bit
    assert info["config"]["optimizer"] == "muon"


def test_init_from_starts_from_the_weights_with_a_fresh_optimizer(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = train(_cfg(tmp_path / "a", steps=15), log=lambda *_: None)
    model_dir = tmp_path / "a" / "run" / "model"
    second = train(_cfg(tmp_path / "b", steps=3, init_from=str(model_dir), d_model=64, warmup=2), log=lambda *_: None)
    assert second["params"] == first["params"]  # the architecture came from the model directory, not --d-model
    lb = [r["loss"] for r in _log(tmp_path / "b" / "run") if "loss" in r]
    la = [r["loss"] for r in _log(tmp_path / "a" / "run") if "loss" in r]
    assert lb[0] < np.mean(la[:3])  # trained weights, not a fresh initialization
    assert second["steps"] == 3


def _campaign(tmp_path: Path, resume: Path, run: str, eval_dir: Path) -> dict:
    """prepare -> start (a real detached trainer) -> add -> finish -> collect, all on CPU at tiny scale."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_campaign", Path(__file__).parents[1] / "tools" / "campaign" / "gpu_campaign.py")
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    stage, work, out = tmp_path / f"stage-{run}", tmp_path / f"work-{run}", tmp_path / f"out-{run}"
    m = gc.main(["prepare", "--stage", str(stage), "--cache", str(tmp_path / "cache"), "--resume-from", str(resume),
                 "--train", str(tmp_path / "train.jsonl"), "--valid", str(tmp_path / "valid.txt"), "--eval-dir", str(eval_dir),
                 "--eval-max-tokens", "200", "--cap-bytes", "3000000", "--part0-tokens", "1500", "--parts", "2"])
    assert m == 0 and sorted(p.name for p in stage.iterdir() if p.name.startswith("part")) == ["part0", "part1", "part2"]
    assert gc.main(["start", "--stage", str(stage / "part0"), "--work", str(work), "--device", "cpu", "--minutes", "0.04",
                    "--batch-size", "4", "--warmup", "2", "--eval-samples", "1", "--eval-passes", "2"]) == 0
    assert gc.main(["add", "--stage", str(stage / "part1"), "--work", str(work)]) == 0
    assert gc.main(["finish", "--stage", str(stage / "part2"), "--work", str(work), "--out", str(out)]) == 0
    files = sorted(out.iterdir())
    assert len(files) <= 8 and all(f.stat().st_size <= 16 << 20 for f in files)
    rep = json.loads((out / "campaign.json").read_text())
    assert rep["train"]["parts_loaded"] == 3  # the parts that landed while it trained were picked up
    for name in ("valid128", "valid", "wikitext2", "ptb", "lambada"):
        assert np.isfinite(rep["final"][name]["nelbo"]) and np.isfinite(rep["baseline"][name]["nelbo"])
    dest = tmp_path / f"model-{run}"
    gc.main(["collect", str(out), "--to", str(dest)])
    return rep | {"dest": dest}


@pytest.mark.slow
def test_campaign_end_to_end_and_resume_on_cpu(tmp_path, eval_dir):
    import random

    from ddcompress.model.denoiser import Denoiser, DenoiserConfig

    from ddcompress.model.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    start_id = save_checkpoint(Denoiser(DenoiserConfig(seq_len=32, n_layer=1, n_head=2, d_model=32, d_mlp=64)), tmp_path / "start",
                               "int8", extra={"trained_by": "ddc train", "tokens_seen": 1000, "wall_time_s": 1.0, "final_valid_nelbo": 10.9})
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings".split()
    with open(tmp_path / "train.jsonl", "w") as f:
        for _ in range(60):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(20, 120))) + "."}) + "\n")
    (tmp_path / "valid.txt").write_text(" ".join(rng.choice(words) for _ in range(800)))

    first = _campaign(tmp_path, tmp_path / "start", "1", eval_dir)
    lm = load_checkpoint(first["dest"])
    assert lm.id == first["model_id"] != start_id and lm.cfg.seq_len == 32
    assert registry.resolve(str(first["dest"])).id == lm.id  # a model ddc can use, int8 as shipped
    assert [h["run"] for h in first["history"]] == [0, 1] and first["history"][0]["model_id"] == start_id
    assert first["final"]["valid128"]["nelbo"] < first["baseline"]["valid128"]["nelbo"]
    assert (first["dest"] / "metrics.jsonl").exists() and (first["dest"] / "train.log").exists()

    second = _campaign(tmp_path, first["dest"], "2", eval_dir)  # weights-only resume from the brought-back export
    h = second["history"]
    assert [e["run"] for e in h] == [0, 1, 2] and h[1]["model_id"] == first["model_id"] == second["resume_model_id"]
    assert h[2]["cumulative_tokens"] == h[1]["cumulative_tokens"] + h[2]["tokens_seen"]
    assert second["baseline"]["valid128"]["nelbo"] == pytest.approx(first["final"]["valid128"]["nelbo"], abs=1e-6)
    assert json.loads((second["dest"] / "config.json").read_text())["info"]["config"]["seed"] == 2  # new batches each run


def test_ddc_train_shows_the_librarys_argument_errors_as_a_usage_error(tmp_path):
    """The library raises ddcompress.errors.UsageError (never click's); `ddc train` shows it as a usage
    error: exit 2 and the reasons."""
    from click.testing import CliRunner

    from ddcompress.cli import main

    res = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "run"),
                                    "--steps", "0", "--max-minutes", "0"])
    assert res.exit_code == 2 and "no such data source" in res.output, res.output
    assert not (tmp_path / "run").exists()
