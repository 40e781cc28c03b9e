"""The denoiser mu_theta: a bidirectional transformer over a partly masked sequence.

mu_theta(x_t)[n] is a distribution over the clean token at position n. There is no time input: the
optimal denoiser of an absorbing-state diffusion does not depend on t (Ou et al. 2024; MDLM drops it).
SUBS parameterization (MDLM): the output ranges over the V clean tokens only (the mask is never
predicted) and revealed positions are carried over unchanged, so only masked positions are scored.

Checkpoints: `config.json` (this dataclass) + `model.safetensors`, or shards `model-0000K-of-0000N.safetensors`
when the weights exceed `--max-shard-mb` (fp32, bf16, or int8 with one fp32 scale per output row). Loading always yields fp32 weights, so coding is deterministic whatever the
storage. The model id is a hash of the canonical config and the stored tensors.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tokenizer import MASK_ID, VOCAB_SIZE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class DenoiserConfig:
    vocab_size: int = VOCAB_SIZE  # clean tokens; the mask token id is vocab_size
    seq_len: int = 1024  # L: chunk length the model was trained on
    n_layer: int = 8
    n_head: int = 8
    d_model: int = 512
    d_mlp: int = 1408  # GLU hidden width
    rope_theta: float = 10000.0
    tie_embeddings: bool = True  # output head = the first V rows of the input embedding
    dropout: float = 0.0
    tokenizer: str = "gpt2"
    # Experimental, off by default: RMS-normalized queries and keys (with learned gains) before RoPE.
    # The exact integer network that coding uses (exact.py) does not implement it, so a model with
    # qk_norm cannot code files yet; when off, it is left out of the config dict (model ids unchanged).
    qk_norm: bool = False

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not d["qk_norm"]:
            del d["qk_norm"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DenoiserConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions (rotate-half convention); x: (B, H, L, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos = torch.cat([cos, cos], dim=-1).to(x.dtype)
    sin = torch.cat([sin, sin], dim=-1).to(x.dtype)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout
        if cfg.qk_norm:
            self.q_norm = nn.RMSNorm(cfg.d_model // cfg.n_head, eps=1e-6)
            self.k_norm = nn.RMSNorm(cfg.d_model // cfg.n_head, eps=1e-6)

    def forward(self, x, cos, sin):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class GLU(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.d_mlp, bias=False)
        self.down = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.mlp = GLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin):
        x = x + self.drop(self.attn(self.norm1(x), cos, sin))
        return x + self.drop(self.mlp(self.norm2(x)))


class Denoiser(nn.Module):
    """mu_theta: token ids (B, L) with mask id V -> logits over the V clean tokens."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size + 1, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = nn.LayerNorm(cfg.d_model, bias=False)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.seq_len, cfg.d_model // cfg.n_head // 2 * 2, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # scaled residual projections (GPT-2)
            if name.endswith("proj.weight") or name.endswith("down.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def head_weight(self) -> torch.Tensor:
        return self.embed.weight[: self.cfg.vocab_size] if self.head is None else self.head.weight

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, L, d) for token ids x (B, L)."""
        L = x.shape[1]
        if L > self.cfg.seq_len:
            raise ValueError(f"sequence of {L} tokens exceeds the model's length {self.cfg.seq_len}")
        h = self.embed(x)
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        for block in self.blocks:
            h = block(h, cos, sin)
        return self.norm_f(h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits over the V clean tokens from hidden states (..., d): SUBS never predicts the mask."""
        return F.linear(h, self.head_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------------------
# checkpoints: safetensors + JSON, never pickle


def _quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale.float()


def state_for_saving(model: Denoiser, dtype: str = "float32") -> dict[str, torch.Tensor]:
    """Tensors to store: fp32, bf16, or int8 (per-row scale) for 2-D weights."""
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
    state = {}
    for k, v in tensors.items():
        if k.endswith(".scale"):
            continue
        if v.dtype == torch.int8:
            state[k] = v.float() * tensors[k + ".scale"]
        else:
            state[k] = v.float()
    return state


def compute_model_id(config: dict, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(k.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


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
        if self._model is None:  # coding never needs it: building it costs seconds at 50M parameters
            model = Denoiser(self.cfg)
            model.load_state_dict(tensors_to_fp32(self.tensors))
            self._model = model.eval()
        return self._model

    def exact(self, device: str | torch.device = "cpu"):
        from .exact import ExactDenoiser

        key = str(torch.device(device))
        if key not in self._exact:
            self._exact[key] = ExactDenoiser(self.cfg, self.tensors, device)
        return self._exact[key]


def load_checkpoint(directory: str | Path) -> LoadedModel:
    from safetensors.torch import load_file

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


assert MASK_ID == VOCAB_SIZE
