"""ddc train: the loss goes down, resume is exact, and the shipped model is what files record."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ddcompress
from ddcompress import registry
from ddcompress.train import TrainConfig, train

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


def test_shipped_model_loads_and_its_id_is_recorded_in_files():
    shipped = registry.available_models()
    if registry.DEFAULT_MODEL not in shipped:
        pytest.fail(f"default model {registry.DEFAULT_MODEL} is not in models/")
    lm = registry.resolve(None)
    cfg = json.loads((shipped[registry.DEFAULT_MODEL] / "config.json").read_text())
    assert cfg["info"]["trained_by"] == "ddc train"
    data = "A short sentence, compressed by the shipped model.\n".encode()
    blob = ddcompress.compress(data, steps=4, method="mdm")
    info = ddcompress.info(blob)
    assert info["model_id"] == lm.id and info["numerics"] == "int8-exact-1"
    assert ddcompress.decompress(blob) == data
    # a sensible model: far better than a uniform code over the vocabulary (15.6 bits/token)
    assert info["ideal_bits"] / info["tokens"] < 12


def test_auto_keeps_the_shipped_model_where_it_beats_xz(eval_dir):
    text = (eval_dir / "canterbury" / "alice29.txt").read_bytes()[20000:24000]  # CRLF prose, one chunk
    blob = ddcompress.compress(text, level=3)
    h = ddcompress.info(blob)
    assert h["method"] == "mdm" and h["transform"] == "crlf"
    assert len(blob) < len(ddcompress.compress(text, method="xz"))
    assert ddcompress.decompress(blob) == text


def test_sharded_checkpoint_loads_with_the_same_id(tmp_path):
    from ddcompress.model import Denoiser, DenoiserConfig, load_checkpoint, save_checkpoint, weight_files

    torch.manual_seed(0)
    m = Denoiser(DenoiserConfig(seq_len=32, n_layer=2, n_head=2, d_model=32, d_mlp=64))
    one = save_checkpoint(m, tmp_path / "one", "int8")
    many = save_checkpoint(m, tmp_path / "many", "int8", max_shard_bytes=200_000)
    files = weight_files(tmp_path / "many")
    from safetensors import safe_open

    assert len(files) >= 3
    for f in files:  # whole tensors: a shard is under the limit unless it holds a single larger tensor
        with safe_open(str(f), "pt") as st:
            assert f.stat().st_size < 210_000 or len(list(st.keys())) == 1
    a, b = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "many")
    assert one == many == a.id == b.id
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert registry.resolve(str(tmp_path / "many")).id == one
