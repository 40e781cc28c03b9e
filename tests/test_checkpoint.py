"""Checkpoints and the model registry (ddcompress/model/checkpoint.py, registry.py): safetensors and a JSON
config, one model id however the weights are stored, models found by name, directory or id."""
from __future__ import annotations

import json

import pytest
import torch

import ddcompress
from ddcompress.errors import ModelError
from ddcompress.model import registry


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


def test_sharded_checkpoint_loads_with_the_same_id(tmp_path):
    from ddcompress.model.denoiser import Denoiser, DenoiserConfig
    from ddcompress.model.checkpoint import load_checkpoint, save_checkpoint, weight_files

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
    from ddcompress.model.checkpoint import describe  # the same id read from the files, without torch

    bf16 = save_checkpoint(m, tmp_path / "bf16", "bfloat16")
    fp32 = save_checkpoint(m, tmp_path / "fp32", "float32")
    for name, want in (("one", one), ("many", one), ("bf16", bf16), ("fp32", fp32)):
        d = describe(tmp_path / name)
        assert d["id"] == want == load_checkpoint(tmp_path / name).id, name
        assert d["params"] == m.num_params() and d["config"]["seq_len"] == 32
    assert len({one, bf16, fp32}) == 3


def test_models_are_found_by_name_directory_or_id(tmp_path, monkeypatch):
    from ddcompress.model.checkpoint import save_checkpoint
    from ddcompress.model.denoiser import Denoiser, DenoiserConfig

    torch.manual_seed(1)
    mid = save_checkpoint(Denoiser(DenoiserConfig(seq_len=16, n_layer=1, n_head=2, d_model=16, d_mlp=32)),
                          tmp_path / "zoo" / "tiny-x", "int8")
    assert registry.locate(tmp_path / "zoo" / "tiny-x") == (tmp_path / "zoo" / "tiny-x").resolve()
    with pytest.raises(ModelError, match="^model 'tiny-x' not found"):
        registry.locate("tiny-x")
    monkeypatch.setenv("DDC_MODELS", str(tmp_path / "zoo"))  # a folder of models, searched before the shipped ones
    assert registry.locate("tiny-x") == tmp_path / "zoo" / "tiny-x"
    assert registry.find_by_id(mid).id == mid and registry.find_by_id("0" * 16) is None
    (tmp_path / "zoo" / "pickled").mkdir()  # a pickle is never a checkpoint: safetensors and config.json only
    (tmp_path / "zoo" / "pickled" / "config.json").write_text(json.dumps({"seq_len": 16}))
    torch.save({"w": torch.zeros(1)}, tmp_path / "zoo" / "pickled" / "model.pt")
    assert "pickled" not in registry.available_models() and "tiny-x" in registry.available_models()
