"""Optimizers and the learning rate of `ddc train`, and the state that lets a run resume bit for bit.

- AdamW (weight decay on matrices only), or Muon (orthogonalized momentum) for the blocks' matrices with
  AdamW for the embedding and the norms, as in the nanoGPT speedrun records;
- learning rate: linear warmup, then cosine decay to --min-lr-frac, or warmup-stable-decay;
- the exact-resume state (safetensors + JSON): weights, EMA, every optimizer's state, the masking generator.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..errors import UsageError
from ..model.denoiser import Denoiser
from .config import TrainConfig


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Learning rate at `step` (warmup) and `progress` in [0, 1] of the run (decay)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(max(progress, 0.0), 1.0)
    if cfg.lr_schedule == "wsd":
        frac = max(0.0, (cfg.decay_frac - (1.0 - p)) / cfg.decay_frac)
        return cfg.lr * (1.0 - (1.0 - cfg.min_lr_frac) * frac)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def build_optimizers(model: Denoiser, cfg: TrainConfig, device: torch.device) -> list[torch.optim.Optimizer]:
    """AdamW (weight decay on matrices only), or Muon for the blocks' matrices + AdamW for the rest."""
    params = dict(model.named_parameters())
    hidden = [n for n, p in params.items() if cfg.optimizer == "muon" and p.ndim == 2 and n.startswith("blocks.")]
    rest = [p for n, p in params.items() if n not in hidden]
    opts: list[torch.optim.Optimizer] = []
    if hidden:
        opts.append(_muon([params[n] for n in hidden], cfg))
    groups = [{"params": [p for p in rest if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in rest if p.ndim < 2], "weight_decay": 0.0}]
    opts.append(torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), fused=device.type == "cuda"))
    return opts


def _muon(params: list[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """torch.optim.Muon with the update RMS matched to AdamW's (0.2 sqrt(max(A, B)) lr), so --lr and
    --weight-decay mean what they mean for AdamW."""
    try:
        return torch.optim.Muon(params, lr=cfg.lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw")
    except TypeError:  # a Muon without adjust_lr_fn scales by sqrt(max(1, A/B)): rescale each matrix by hand
        groups = []
        for p in params:
            scale = 0.2 * math.sqrt(max(p.shape)) / math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
            groups.append({"params": [p], "lr_scale": scale, "weight_decay": cfg.weight_decay / scale})
        return torch.optim.Muon(groups, lr=cfg.lr)


def save_state(path: Path, model, ema, opts, gen, meta: dict) -> None:
    """Weights, EMA, every optimizer's state and the masking generator: enough to continue bit for bit."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    if ema is not None:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in ema.state_dict().items()}, str(path / "ema.safetensors"))
    flat, layout, groups = {}, {}, []
    for i, opt in enumerate(opts):  # keys "pid.name" for the first optimizer (older checkpoints), "oI:pid.name" after
        sd = opt.state_dict()
        groups.append(sd["param_groups"])
        for pid, st in sd["state"].items():
            for k, v in st.items():
                key = f"{pid}.{k}" if i == 0 else f"o{i}:{pid}.{k}"
                flat[key] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
                layout[key] = torch.is_tensor(v)
    flat["generator_state"] = gen.get_state().cpu()
    save_file(flat, str(path / "optim.safetensors"))
    meta = meta | {"param_groups": groups[0], "more_param_groups": groups[1:], "optim_layout": layout}
    tmp = path / "state.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path / "state.json")


def load_state(path: Path, model, ema, opts, gen, device) -> dict:
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)))
    if ema is not None and (path / "ema.safetensors").exists():
        ema.load_state_dict(load_file(str(path / "ema.safetensors"), device=str(device)))
    flat = load_file(str(path / "optim.safetensors"))
    gen.set_state(flat.pop("generator_state"))
    groups = [meta["param_groups"], *meta.get("more_param_groups", [])]
    if len(groups) != len(opts):
        raise UsageError(f"{path} holds {len(groups)} optimizer(s), this run has {len(opts)}: same --optimizer to resume")
    states: list[dict] = [{} for _ in opts]
    for key, is_tensor in meta["optim_layout"].items():
        i, rest = (int(key[1:key.index(":")]), key[key.index(":") + 1:]) if key.startswith("o") else (0, key)
        pid, k = rest.split(".", 1)
        v = flat[key]
        states[i].setdefault(int(pid), {})[k] = v.to(device) if is_tensor and k != "step" else (v if is_tensor else v.item())
    for opt, state, pg in zip(opts, states, groups):
        opt.load_state_dict({"state": state, "param_groups": pg})
    return meta
