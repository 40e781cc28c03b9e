"""The denoiser mu_theta: a bidirectional transformer over a partly masked sequence.

mu_theta(x_t)[n] is a distribution over the clean token at position n. There is no time input: the
optimal denoiser of an absorbing-state diffusion does not depend on t (Ou et al. 2024; MDLM drops it).
SUBS parameterization (MDLM): the output ranges over the V clean tokens only (the mask is never
predicted) and revealed positions are carried over unchanged, so only masked positions are scored.

Checkpoint files (safetensors + config.json) are read and written by checkpoint.py.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..codec.tokenizer import MASK_ID, VOCAB_SIZE


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


assert MASK_ID == VOCAB_SIZE
