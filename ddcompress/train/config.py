"""`ddc train`'s arguments: one dataclass (help text and choices in each field's metadata) and the checks
that run before any data is loaded (the command generated from it is train/cli.py; torch loads only
when training starts, so its --help answers at once)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING


from ..errors import UsageError
from ..model.checkpoint import CONFIG_FILE, weight_files
from .data import WindowSampler
from .schedule import SCHEDULES

if TYPE_CHECKING:  # torch loads when training starts: `ddc train --help` answers at once
    from ..model.denoiser import DenoiserConfig

OPTIMIZERS = ("adamw", "muon")
LR_SCHEDULES = ("cosine", "wsd")
EXPORT_DTYPES = ("float32", "bfloat16", "int8")


def _opt(help: str, choices: tuple[str, ...] | None = None, **kw):
    return field(metadata={"help": help, "choices": choices}, **kw)


@dataclass
class TrainConfig:
    data: list[str] = _opt("Training sources: text, .jsonl[.xz|.gz] (field 'text'), .npy / .u16.xz tokens, or hf:NAME[:CONFIG][:SPLIT]. Repeatable.", default_factory=list)
    valid: str | None = _opt("Held-out source for the validation NELBO.", default=None)
    out: str = _opt("Output directory (metrics, checkpoints, final model).", default="runs/ddc")
    cache_dir: str | None = _opt("Where tokenized uint16 arrays are cached (default: OUT/cache).", default=None)
    d_model: int = _opt("Transformer width.", default=512)
    n_layer: int = _opt("Transformer blocks.", default=8)
    n_head: int = _opt("Attention heads.", default=8)
    d_mlp: int = _opt("GLU hidden width (0: 8/3 * d_model rounded to 64).", default=0)
    seq_len: int = _opt("L: training (and coding) chunk length.", default=1024)
    tie_embeddings: bool = _opt("Tie the output head to the input embedding.", default=True)
    dropout: float = _opt("Dropout inside blocks.", default=0.0)
    init_from: str | None = _opt("Start from this model directory's weights (weights-only: new optimizer, warmup again); its architecture replaces the options above.", default=None)
    batch_size: int = _opt("Sequences per step.", default=32)
    packing: str = _opt("Training windows: random offsets of the EOS-joined stream, or document-aligned chunks (docs).", WindowSampler.PACKINGS, default="random")
    optimizer: str = _opt("adamw, or muon (Muon for the blocks' matrices, AdamW for embedding and norms).", OPTIMIZERS, default="adamw")
    lr: float = _opt("Peak learning rate.", default=1e-3)
    lr_schedule: str = _opt("After warmup: cosine decay, or wsd (warmup-stable-decay: constant, then linear decay).", LR_SCHEDULES, default="cosine")
    decay_frac: float = _opt("wsd: fraction of the run spent decaying.", default=0.2)
    min_lr_frac: float = _opt("Final learning rate as a fraction of the peak.", default=0.1)
    warmup: int = _opt("Linear warmup steps.", default=200)
    steps: int = _opt("Total optimizer steps (0: until --max-minutes).", default=0)
    max_minutes: float = _opt("Wall-clock budget; the learning-rate decay follows it when --steps is 0.", default=0.0)
    weight_decay: float = _opt("Decoupled weight decay (on matrices only).", default=0.03)
    beta2: float = _opt("AdamW beta2 (beta1 = 0.9).", default=0.99)
    grad_clip: float = _opt("Gradient norm clip (0: off).", default=1.0)
    ema: float = _opt("EMA decay of the shipped weights (0: no EMA).", default=0.999)
    schedule: str = _opt("alpha_t schedule of the loss: linear, cosine or polynomial.", SCHEDULES, default="linear")
    power: float = _opt("Exponent of the polynomial schedule.", default=1.0)
    t_eps: float = _opt("Smallest diffusion time sampled (t in [eps, 1]).", default=1e-3)
    eval_every: int = _opt("Validate every N steps (and at the end).", default=500)
    eval_windows: int = _opt("Held-out L-token windows per validation.", default=64)
    eval_passes: int = _opt("Validation passes (two antithetic times per window each; at least 2).", default=2)
    save_every: int = _opt("Checkpoint every N steps (and at the end).", default=1000)
    log_every: int = _opt("Log a metrics line every N steps.", default=20)
    seed: int = _opt("Seed of batches, masks and initialization.", default=0)
    device: str = _opt("cpu, cuda, or auto.", default="auto")
    compile: bool = _opt("torch.compile the denoiser body (CUDA only).", default=True)
    export_dtype: str = _opt("Weights of the final model: float32, bfloat16 or int8 (per-row scales).", EXPORT_DTYPES, default="float32")
    max_shard_mb: float = _opt("Split the exported weights into files of at most this many MB (0: one file).", default=0.0)
    name: str = _opt("Name of the exported model directory (OUT/NAME).", default="model")
    resume: bool = _opt("Continue from OUT/ckpt if it exists.", default=False)
    stop_after: int = _opt("Stop this invocation after N steps (checkpointing; the schedule still follows --steps). 0: off.", default=0)

    def model_config(self) -> DenoiserConfig:
        from ..model.denoiser import DenoiserConfig

        if self.init_from:
            meta = json.loads((Path(self.init_from) / CONFIG_FILE).read_text())
            return DenoiserConfig.from_dict({k: v for k, v in meta.items() if k != "info"})
        d_mlp = self.d_mlp or int(round(8 * self.d_model / 3 / 64)) * 64
        return DenoiserConfig(seq_len=self.seq_len, n_layer=self.n_layer, n_head=self.n_head, d_model=self.d_model,
                              d_mlp=d_mlp, tie_embeddings=self.tie_embeddings, dropout=self.dropout)


def check_args(cfg: TrainConfig) -> None:
    """Every argument problem at once, as a usage error, before any data is loaded."""
    import torch

    bad: list[str] = []
    if not cfg.data:
        bad.append("give at least one --data source")
    for src in [*cfg.data, *([cfg.valid] if cfg.valid else [])]:
        if not str(src).startswith("hf:") and not Path(src).exists():
            bad.append(f"no such data source: {src}")
    if not cfg.steps and not cfg.max_minutes:
        bad.append("give --steps or --max-minutes")
    for name in ("steps", "max_minutes", "warmup", "stop_after", "eval_every", "save_every", "d_mlp", "max_shard_mb", "grad_clip", "weight_decay"):
        if getattr(cfg, name) < 0:
            bad.append(f"--{name.replace('_', '-')} must not be negative")
    for name in ("batch_size", "seq_len", "d_model", "n_layer", "n_head", "eval_passes", "log_every", "eval_windows"):
        if getattr(cfg, name) < 1:
            bad.append(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.d_model % max(cfg.n_head, 1) or (cfg.d_model // max(cfg.n_head, 1)) % 2:
        bad.append("--d-model must be an even multiple of --n-head (RoPE rotates pairs)")
    if not cfg.lr > 0:
        bad.append("--lr must be positive")
    if not 0 <= cfg.min_lr_frac <= 1:
        bad.append("--min-lr-frac must be in [0, 1]")
    if not 0 < cfg.decay_frac <= 1:
        bad.append("--decay-frac must be in (0, 1]")
    if not 0 <= cfg.ema < 1 or not 0 <= cfg.dropout < 1:
        bad.append("--ema and --dropout must be in [0, 1)")
    if not 0 <= cfg.t_eps < 1:
        bad.append("--t-eps must be in [0, 1)")
    for f in dataclasses.fields(TrainConfig):
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, f.name) not in choices:
            bad.append(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}, not {getattr(cfg, f.name)!r}")
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith("cuda"):
        bad.append(f"--device must be cpu, cuda[:N] or auto, not {cfg.device!r}")
    elif cfg.device.startswith("cuda") and not torch.cuda.is_available():
        bad.append(f"--device {cfg.device}: CUDA is not available here")
    if cfg.optimizer == "muon" and not hasattr(torch.optim, "Muon"):
        bad.append(f"--optimizer muon needs torch.optim.Muon (torch >= 2.9), this is torch {torch.__version__}")
    if cfg.init_from and not ((Path(cfg.init_from) / CONFIG_FILE).is_file() and weight_files(cfg.init_from)):
        bad.append(f"--init-from {cfg.init_from}: not a model directory (config.json + safetensors)")
    elif cfg.init_from and cfg.model_config().qk_norm:
        bad.append(f"--init-from {cfg.init_from}: a QK-norm model, which the exact coder cannot run (no export)")
    if bad:
        raise UsageError("; ".join(bad))
