"""Checkpoints: safetensors + JSON, never pickle.

A checkpoint directory holds `config.json` (DenoiserConfig, plus the storage dtype and an `info` record)
and `model.safetensors`, or shards `model-0000K-of-0000N.safetensors` when the weights exceed
`--max-shard-mb`. Weights are fp32, bf16, or int8 with one fp32 scale per output row (what ships: the
exact coder reads the int8 rows directly). The model id, which every .ddc file records, is a hash of the
canonical config and the stored tensors, so it does not depend on how they are split into files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads where tensors are touched: finding models and reading configs need none
    import torch

    from .denoiser import Denoiser, DenoiserConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale.float()


def state_for_saving(model: Denoiser, dtype: str = "float32") -> dict[str, torch.Tensor]:
    """Tensors to store: fp32, bf16, or int8 (per-row scale) for 2-D weights."""
    import torch

    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().float().cpu().contiguous()
        if dtype == "int8" and v.ndim == 2:
            q, s = _quantize_int8(v)
            out[k] = q.contiguous()
            out[k + ".scale"] = s.contiguous()
        elif dtype == "bfloat16":
            out[k] = v.to(torch.bfloat16).contiguous()
        else:
            out[k] = v
    return out


def tensors_to_fp32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    state = {}
    for k, v in tensors.items():
        if k.endswith(".scale"):
            continue
        if v.dtype == torch.int8:
            state[k] = v.float() * tensors[k + ".scale"]
        else:
            state[k] = v.float()
    return state


def _model_id(config: dict, tensors) -> str:
    """The model id: sha256 of the canonical config, then for each tensor in name order its name, torch
    dtype name, shape tuple and raw little-endian bytes; `tensors` yields (name, dtype, shape, bytes) in
    name order (a generator: one tensor's bytes at a time)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, dtype, shape, data in tensors:
        h.update(name.encode() + dtype.encode() + str(tuple(shape)).encode())
        h.update(data)
    return h.hexdigest()[:16]


def compute_model_id(config: dict, tensors: dict[str, torch.Tensor]) -> str:
    import torch

    def entry(name: str):
        t = tensors[name].contiguous()
        return name, str(t.dtype), tuple(t.shape), t.view(torch.uint8).numpy().tobytes() if t.numel() else b""

    return _model_id(config, (entry(k) for k in sorted(tensors)))


def weight_files(directory: str | Path) -> list[Path]:
    """The checkpoint's safetensors files: model.safetensors, or its shards in order."""
    directory = Path(directory)
    single = directory / WEIGHTS_FILE
    return [single] if single.is_file() else sorted(directory.glob("model-*-of-*.safetensors"))


def write_weights(tensors: dict[str, torch.Tensor], directory: Path, model_id: str, max_shard_bytes: int | None) -> None:
    """One file, or shards of at most max_shard_bytes (whole tensors, name order). The id does not depend
    on the split: it hashes the tensors, not the files."""
    from safetensors.torch import save_file

    for old in weight_files(directory):
        old.unlink()
    shards: list[dict] = [{}]
    size = 0
    for k in sorted(tensors):
        n = tensors[k].numel() * tensors[k].element_size()
        if max_shard_bytes and shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = tensors[k]
        size += n
    for i, shard in enumerate(shards):
        name = WEIGHTS_FILE if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"model_id": model_id})


def save_checkpoint(model: Denoiser, directory: str | Path, dtype: str = "float32", extra: dict | None = None,
                    max_shard_bytes: int | None = None) -> str:
    """Write config.json + the weights (one file or shards); returns the model id."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = state_for_saving(model, dtype)
    config = model.cfg.to_dict() | {"weights_dtype": dtype}
    model_id = compute_model_id(config, tensors)
    write_weights(tensors, directory, model_id, max_shard_bytes)
    meta = dict(config)
    if extra:
        meta["info"] = extra
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return model_id


# safetensors dtype codes -> the torch dtype names that compute_model_id hashes
_ST_DTYPES = {"I8": "torch.int8", "U8": "torch.uint8", "I16": "torch.int16", "I32": "torch.int32", "I64": "torch.int64",
              "F16": "torch.float16", "BF16": "torch.bfloat16", "F32": "torch.float32", "F64": "torch.float64",
              "BOOL": "torch.bool"}


def describe(directory: str | Path) -> dict:
    """{"id", "config", "params"} of a checkpoint read straight from its files, without torch: the same
    id as load_checkpoint computes (safetensors stores each tensor's bytes as torch holds them,
    little-endian, row-major). For listing models and finding one by id without loading it."""
    directory = Path(directory)
    meta = json.loads((directory / CONFIG_FILE).read_text())
    config = {k: v for k, v in meta.items() if k != "info"}
    entries = []  # (name, dtype, shape, file, start, end)
    for f in weight_files(directory):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for name, e in header.items():
            if name != "__metadata__":
                entries.append((name, e["dtype"], tuple(e["shape"]), f, 8 + n + e["data_offsets"][0], 8 + n + e["data_offsets"][1]))
    if not entries:
        raise FileNotFoundError(f"no weights in {directory}")

    def raw(f: Path, a: int, b: int) -> bytes:
        with open(f, "rb") as fh:
            fh.seek(a)
            return fh.read(b - a)

    model_id = _model_id(config, ((name, _ST_DTYPES[dtype], shape, raw(f, a, b)) for name, dtype, shape, f, a, b in sorted(entries)))
    params = sum(int(np.prod(shape, dtype=np.int64)) for name, _, shape, *_ in entries if not name.endswith(".scale"))
    return {"id": model_id, "config": config, "params": params}


class LoadedModel:
    """A denoiser's stored tensors with its id and provenance: `exact(device)` is the integer network
    that coding uses, `model` the fp32 network (training, NELBO estimates), both built on first use."""

    def __init__(self, cfg: DenoiserConfig, model_id: str, path: Path | None, info: dict,
                 tensors: dict[str, torch.Tensor], model: Denoiser | None = None):
        self.cfg, self.id, self.path, self.info, self.tensors = cfg, model_id, path, info, tensors
        self._model = model
        self._exact: dict[str, object] = {}

    @property
    def model(self) -> Denoiser:
        from .denoiser import Denoiser

        if self._model is None:  # coding never needs it: building it costs seconds at 50M parameters
            model = Denoiser(self.cfg)
            model.load_state_dict(tensors_to_fp32(self.tensors))
            self._model = model.eval()
        return self._model

    def exact(self, device: str | torch.device = "cpu"):
        import torch

        from ..numerics.exact import ExactDenoiser

        key = str(torch.device(device))
        if key not in self._exact:
            self._exact[key] = ExactDenoiser(self.cfg, self.tensors, device)
        return self._exact[key]


def load_checkpoint(directory: str | Path) -> LoadedModel:
    from safetensors.torch import load_file

    from .denoiser import DenoiserConfig

    directory = Path(directory)
    meta = json.loads((directory / CONFIG_FILE).read_text())
    files = weight_files(directory)
    if not files:
        raise FileNotFoundError(f"no weights in {directory}")
    tensors = {k: v for f in files for k, v in load_file(str(f)).items()}
    config = {k: v for k, v in meta.items() if k != "info"}
    model_id = compute_model_id(config, tensors)
    return LoadedModel(DenoiserConfig.from_dict(config), model_id, directory, meta.get("info", {}), tensors)


def from_module(model: Denoiser) -> LoadedModel:
    """Wrap an in-memory model (tests, training) with an id computed from its fp32 weights."""
    model.eval()
    tensors = state_for_saving(model, "float32")
    model_id = compute_model_id(model.cfg.to_dict() | {"weights_dtype": "float32"}, tensors)
    return LoadedModel(model.cfg, model_id, None, {}, tensors, model)
