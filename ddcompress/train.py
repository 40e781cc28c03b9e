"""`ddc train`: fit the denoiser mu_theta on the continuous-time MD4 NELBO (nanoGPT-style loop).

The loop is five named steps, each a plain function of a `Run` (the training state):

    check_args(cfg)       every argument checked before any data is loaded
    run = setup(cfg)      device, data, model, EMA, optimizers, exact resume or a weights-only start
    train_step(run)       one optimizer step on one batch
    evaluate(run)         validation NELBO of the EMA weights on fixed held-out windows and times
    save(run)             exact-resume checkpoint (weights, EMA, optimizer state, masking generator)
    export(run)           the shipped model (safetensors + JSON), summary.json and the loss plot

Loss per token: NELBO(x0) / L with antithetic times t_i = (u + i/B) mod 1 (elbo.py). Gradient
clipping, bf16 autocast + torch.compile on CUDA (fp32 on CPU), EMA weights (what gets shipped), a JSONL
metrics log and a loss plot. Recipe options (defaults: the recipe that trained ddc-small):
- optimizer: AdamW, or Muon (orthogonalized momentum, torch.optim.Muon with AdamW-matched update RMS, so
  the same --lr) for the blocks' matrices with AdamW for the embedding and the norms;
- learning rate: linear warmup, then cosine decay to --min-lr-frac, or warmup-stable-decay (constant,
  then linear decay over the last --decay-frac of the run: a run can be extended before it decays);
  the decay follows --steps, or the wall-clock budget --max-minutes when --steps is 0;
- packing: random windows of the EOS-joined stream, or document-aligned chunks (data.WindowSampler);
- --init-from DIR: a weights-only start from a model directory (fresh optimizer, warmup again).
Checkpoints resume exactly (--resume): batches are keyed by step and the masking generator's state is saved.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import click
import numpy as np
import torch

from .data import WindowSampler, eval_windows, load_tokens
from .elbo import antithetic_times, estimate_nelbo_chunks, nelbo_per_sequence
from .checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint, tensors_to_fp32, weight_files
from .model import Denoiser, DenoiserConfig
from .schedule import SCHEDULES, MaskingSchedule

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
        if self.init_from:
            meta = json.loads((Path(self.init_from) / CONFIG_FILE).read_text())
            return DenoiserConfig.from_dict({k: v for k, v in meta.items() if k != "info"})
        d_mlp = self.d_mlp or int(round(8 * self.d_model / 3 / 64)) * 64
        return DenoiserConfig(seq_len=self.seq_len, n_layer=self.n_layer, n_head=self.n_head, d_model=self.d_model,
                              d_mlp=d_mlp, tie_embeddings=self.tie_embeddings, dropout=self.dropout)


def check_args(cfg: TrainConfig) -> None:
    """Every argument problem at once, as a usage error, before any data is loaded."""
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
        raise click.UsageError("; ".join(bad))


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


# ---------------------------------------------------------------------------------------------------
# exact-resume checkpoints (safetensors + JSON)


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


def _save_state(path: Path, model, ema, opts, gen, meta: dict) -> None:
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


def _load_state(path: Path, model, ema, opts, gen, device) -> dict:
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)))
    if ema is not None and (path / "ema.safetensors").exists():
        ema.load_state_dict(load_file(str(path / "ema.safetensors"), device=str(device)))
    flat = load_file(str(path / "optim.safetensors"))
    gen.set_state(flat.pop("generator_state"))
    groups = [meta["param_groups"], *meta.get("more_param_groups", [])]
    if len(groups) != len(opts):
        raise click.UsageError(f"{path} holds {len(groups)} optimizer(s), this run has {len(opts)}: same --optimizer to resume")
    states: list[dict] = [{} for _ in opts]
    for key, is_tensor in meta["optim_layout"].items():
        i, rest = (int(key[1:key.index(":")]), key[key.index(":") + 1:]) if key.startswith("o") else (0, key)
        pid, k = rest.split(".", 1)
        v = flat[key]
        states[i].setdefault(int(pid), {})[k] = v.to(device) if is_tensor and k != "step" else (v if is_tensor else v.item())
    for opt, state, pg in zip(opts, states, groups):
        opt.load_state_dict({"state": state, "param_groups": pg})
    return meta


# ---------------------------------------------------------------------------------------------------


def validate(model: Denoiser, windows: np.ndarray, cfg: TrainConfig, device, autocast) -> tuple[float, float]:
    """Validation NELBO in nats/token of fixed windows: (mean, Monte Carlo standard error), from
    elbo.estimate_nelbo_chunks with `eval_passes` passes of two antithetic times per window and a fixed
    seed, so every validation of a run (and of other runs) sees the same times and masks."""
    was_training = model.training
    passes = max(2, cfg.eval_passes)
    r = estimate_nelbo_chunks(model, windows, samples=2, batch=cfg.batch_size, target=0.0, min_passes=passes,
                              max_passes=passes, seed=12345, device=str(device),
                              schedule=MaskingSchedule(cfg.schedule, cfg.power), autocast=autocast)
    model.train(was_training)
    return r["nats"] / windows.size, r["stderr_nats"] / windows.size


def _plot(metrics_path: Path, out_png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    tr = [(r["tokens"] / 1e6, r["loss"]) for r in rows if "loss" in r]
    va = [(r["tokens"] / 1e6, r["valid_nelbo"]) for r in rows if "valid_nelbo" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if tr:
        ax.plot(*zip(*tr), lw=0.8, label="train NELBO (batch)")
    if va:
        ax.plot(*zip(*va), "o-", label="valid NELBO (EMA)")
    ax.set_xlabel("tokens seen (M)")
    ax.set_ylabel("nats / token")
    ax.set_ylim(top=min(11.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return True


class _ProgressLine:
    """A rich progress line (step, loss, lr, tok/s, valid NELBO) on a terminal; plain log lines elsewhere."""

    def __init__(self, enabled: bool, total: float, unit: str):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} " + unit),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, info="")

    def update(self, completed: float, info: str | None = None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, **({"info": info} if info is not None else {}))

    def print(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.console.print(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(cfg: TrainConfig, log=None) -> dict:
    """Run training; returns a summary dict (also written to OUT/summary.json).

    `log` receives one line per event; by default a rich progress line on a terminal, else print."""
    check_args(cfg)
    line = _ProgressLine(log is None and sys.stderr.isatty(), cfg.steps or cfg.max_minutes * 60, "steps" if cfg.steps else "s")
    if log is None:
        log = line.print if line.bar is not None else print
    try:
        return _train(cfg, log, line)
    finally:
        line.close()


def _train(cfg: TrainConfig, log, line: _ProgressLine | None = None) -> dict:
    """The loop: setup, then train_step / report / evaluate / save until done, then export."""
    run = setup(cfg, log)
    try:
        while not run.finished():
            if cfg.stop_after and run.step - run.start_step >= cfg.stop_after:
                save(run)
                log(f"stopped after {cfg.stop_after} steps at step {run.step}; continue with --resume")
                return {"stopped_at": run.step}
            stats = train_step(run)
            report(run, stats, log, line)
            if cfg.eval_every and run.step % cfg.eval_every == 0:
                evaluate(run, log)
            if cfg.save_every and run.step % cfg.save_every == 0:
                save(run)
        if run.last_valid_step != run.step:
            evaluate(run, log)
        save(run)
        return export(run, log)
    finally:
        run.metrics.close()


# ---------------------------------------------------------------------------------------------------
# the named steps


@dataclass
class Run:
    """Everything a training run holds between steps."""

    cfg: TrainConfig
    device: torch.device
    out: Path
    model: Denoiser
    ema: Denoiser | None
    opts: list[torch.optim.Optimizer]
    gen: torch.Generator
    autocast: Callable
    sampler: WindowSampler
    vwin: np.ndarray | None
    metrics: IO[str]
    budget: float  # seconds of training (0: --steps decides); a campaign may shorten it while running
    step: int = 0
    start_step: int = 0
    elapsed_before: float = 0.0
    t0: float = field(default_factory=time.time)
    last_log: float = field(default_factory=time.time)
    last_valid: tuple[float, float] | None = None
    last_valid_step: int = -1

    @property
    def schedule(self) -> MaskingSchedule:
        return MaskingSchedule(self.cfg.schedule, self.cfg.power)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.model.cfg.seq_len

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    def progress(self) -> float:
        return self.step / self.cfg.steps if self.cfg.steps else self.elapsed() / self.budget

    def finished(self) -> bool:
        return self.step >= self.cfg.steps if self.cfg.steps else self.elapsed() >= self.budget

    def write(self, rec: dict) -> None:
        self.metrics.write(json.dumps(rec) + "\n")
        self.metrics.flush()


def _device(name: str) -> torch.device:
    return torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def setup(cfg: TrainConfig, log=print, model_cfg: DenoiserConfig | None = None) -> Run:
    """Device, data, model (fresh, --init-from weights, or the exact --resume checkpoint), EMA, optimizers.

    `model_cfg` overrides the architecture (experiments: benchmarks/recipe_compare.py)."""
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cache = cfg.cache_dir or str(out / "cache")
    t_data = time.time()
    tokens = load_tokens(cfg.data, cache, log)
    valid_tokens = load_tokens([cfg.valid], cache, log) if cfg.valid else None
    log(f"data: {len(tokens):,} train tokens ({time.time() - t_data:.0f} s)")
    mcfg = model_cfg or cfg.model_config()
    model = Denoiser(mcfg).to(device)
    if cfg.init_from:
        start = load_checkpoint(cfg.init_from)
        model.load_state_dict(tensors_to_fp32(start.tensors))
        log(f"weights from {cfg.init_from} (model {start.id}); new optimizer, {cfg.warmup} warmup steps")
    ema = copy.deepcopy(model).eval() if cfg.ema > 0 else None
    if ema is not None:
        ema.requires_grad_(False)
    log(f"model: {mcfg.n_layer}x{mcfg.d_model}, L={mcfg.seq_len}, {model.num_params() / 1e6:.1f}M params on {device}, "
        f"{cfg.optimizer} {cfg.lr_schedule} lr {cfg.lr:g}, {cfg.packing} windows")
    opts = build_optimizers(model, cfg, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext
    run = Run(cfg=cfg, device=device, out=out, model=model, ema=ema, opts=opts, gen=gen, autocast=autocast,
              sampler=WindowSampler(tokens, mcfg.seq_len, cfg.packing, cfg.seed),
              vwin=eval_windows(valid_tokens, mcfg.seq_len, cfg.eval_windows) if valid_tokens is not None else None,
              metrics=(out / "metrics.jsonl").open("a"), budget=cfg.max_minutes * 60.0)
    ckpt = out / "ckpt"
    if cfg.resume and (ckpt / "state.json").exists():
        meta = _load_state(ckpt, model, ema, opts, gen, device)
        run.step = run.start_step = meta["step"]
        run.elapsed_before = meta["elapsed"]
        log(f"resumed from {ckpt} at step {run.step}")
    if cfg.compile and device.type == "cuda":
        model.hidden = torch.compile(model.hidden)
    model.train()
    run.t0 = run.last_log = time.time()
    return run


def train_step(run: Run) -> dict:
    """One optimizer step on the batch of this step; returns loss, lr and gradient norm (tensors unsynced)."""
    cfg, model = run.cfg, run.model
    B, L = cfg.batch_size, model.cfg.seq_len
    lr = lr_at(cfg, run.step, run.progress())
    for opt in run.opts:
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
    x0 = torch.from_numpy(run.sampler.batch(B, run.step)).to(run.device, non_blocking=True)
    t = antithetic_times(B, cfg.t_eps, run.gen, device=run.device)
    with run.autocast():
        loss = nelbo_per_sequence(model, x0, t, run.schedule, generator=run.gen).mean() / L
    for opt in run.opts:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    for opt in run.opts:
        opt.step()
    if run.ema is not None:
        with torch.no_grad():
            d = min(cfg.ema, (1 + run.step) / (10 + run.step))
            torch._foreach_lerp_(list(run.ema.parameters()), list(model.parameters()), 1 - d)
    run.step += 1
    return {"loss": loss.detach(), "lr": lr, "grad_norm": gnorm}


def report(run: Run, stats: dict, log, line: _ProgressLine | None = None) -> None:
    """A metrics line every --log-every steps (and the progress line on a terminal)."""
    cfg, step = run.cfg, run.step
    if step % cfg.log_every == 0:
        now = time.time()
        rec = {"step": step, "tokens": step * run.tokens_per_step, "loss": stats["loss"].item(), "lr": stats["lr"],
               "grad_norm": float(stats["grad_norm"]), "elapsed": run.elapsed(),
               "tok_per_s": cfg.log_every * run.tokens_per_step / max(now - run.last_log, 1e-9)}
        run.last_log = now
        run.write(rec)
        msg = (f"step {step} loss {rec['loss']:.4f} lr {rec['lr']:.2e} gnorm {rec['grad_norm']:.2f} "
               f"{rec['tok_per_s'] / 1e3:.0f}k tok/s {run.elapsed():.0f}s")
        if line is None or line.bar is None:
            log(msg)
        else:
            valid = f" | valid {run.last_valid[0]:.3f}" if run.last_valid else ""
            line.update(step if cfg.steps else run.elapsed(), msg.split(" ", 2)[2] + valid)
    elif line is not None and line.bar is not None and step % 5 == 0:
        line.update(step if cfg.steps else run.elapsed())


def evaluate(run: Run, log=print) -> tuple[float, float] | None:
    """Validation NELBO (nats/token) of the EMA weights on the fixed held-out windows; logged and recorded."""
    if run.vwin is None or len(run.vwin) == 0:
        return None
    m, se = validate(run.ema if run.ema is not None else run.model, run.vwin, run.cfg, run.device, run.autocast)
    run.last_valid, run.last_valid_step = (m, se), run.step
    run.write({"step": run.step, "tokens": run.step * run.tokens_per_step, "valid_nelbo": m, "valid_stderr": se,
               "elapsed": run.elapsed()})
    log(f"step {run.step}: valid NELBO {m:.4f} ± {se:.4f} nats/token (ppl {math.exp(m):.1f})")
    return m, se


def save(run: Run) -> None:
    """The exact-resume checkpoint OUT/ckpt."""
    _save_state(run.out / "ckpt", run.model, run.ema, run.opts, run.gen,
                {"step": run.step, "elapsed": run.elapsed(), "config": dataclasses.asdict(run.cfg)})


def export(run: Run, log=print, extra: dict | None = None) -> dict:
    """The shipped model OUT/NAME (EMA weights in --export-dtype, re-validated after quantization),
    OUT/summary.json and OUT/loss.png; returns the summary (`extra` is merged into it)."""
    cfg, step, out = run.cfg, run.step, run.out
    B, L = cfg.batch_size, run.model.cfg.seq_len
    if run.model.cfg.qk_norm:
        raise click.UsageError("qk_norm models cannot be exported: the exact coder (exact.py) does not implement QK-norm")
    train_time = run.elapsed()
    n_tokens = len(run.sampler.tokens)
    info = {
        "trained_by": "ddc train",
        "data": cfg.data,
        "valid": cfg.valid,
        "train_tokens_available": int(n_tokens),
        "tokens_seen": step * B * L,
        "epochs": step * B * L / max(n_tokens, 1),
        "steps": step,
        "batch": [B, L],
        "hardware": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else f"CPU {platform.machine()} x{torch.get_num_threads()}",
        "wall_time_s": round(train_time, 1),
        "final_train_nelbo": _final_train_loss(out / "metrics.jsonl"),
        "final_valid_nelbo": run.last_valid[0] if run.last_valid else None,
        "final_valid_stderr": run.last_valid[1] if run.last_valid else None,
        "params": run.model.num_params(),
        "config": dataclasses.asdict(cfg),
    } | (extra or {})
    export_model = run.ema if run.ema is not None else run.model
    model_dir = out / cfg.name
    model_id = save_checkpoint(export_model, model_dir, cfg.export_dtype, extra=info, max_shard_bytes=_shard_bytes(cfg))
    info["model_id"] = model_id
    if cfg.export_dtype != "float32" and run.vwin is not None and len(run.vwin):
        q = load_checkpoint(model_dir).model.to(run.device)
        m, se = validate(q, run.vwin, cfg, run.device, run.autocast)
        info["export_valid_nelbo"] = m
        fp = run.last_valid[0] if run.last_valid else float("nan")
        log(f"exported {cfg.export_dtype} model: valid NELBO {m:.4f} ± {se:.4f} (EMA fp32: {fp:.4f})")
        save_checkpoint(export_model, model_dir, cfg.export_dtype, extra=info, max_shard_bytes=_shard_bytes(cfg))
    (out / "summary.json").write_text(json.dumps(info, indent=2) + "\n")
    run.metrics.flush()
    if _plot(out / "metrics.jsonl", out / "loss.png"):
        log(f"plot: {out / 'loss.png'}")
    log(f"model {model_id} -> {model_dir} ({step} steps, {train_time:.0f} s)")
    return info


def _shard_bytes(cfg: TrainConfig) -> int | None:
    return int(cfg.max_shard_mb * 1e6) if cfg.max_shard_mb > 0 else None


def _final_train_loss(path: Path, last: int = 20) -> float | None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "loss" in r][-last:]
    return float(np.mean(losses)) if losses else None


# ---------------------------------------------------------------------------------------------------
# CLI: one option per TrainConfig field, help text from the field's metadata


def _click_options(f):
    for fld in reversed(dataclasses.fields(TrainConfig)):
        flag = "--" + fld.name.replace("_", "-")
        help_ = fld.metadata.get("help", "")
        if fld.name == "data":
            f = click.option(flag, "data", multiple=True, required=True, help=help_)(f)
        elif fld.type in ("bool", bool):
            f = click.option(f"{flag}/--no-{fld.name.replace('_', '-')}", fld.name, default=fld.default, show_default=True, help=help_)(f)
        else:
            choices = fld.metadata.get("choices")
            typ = click.Choice(choices) if choices else {"int": int, "float": float}.get(str(fld.type), str)
            f = click.option(flag, fld.name, type=typ, default=fld.default, show_default=True, help=help_)(f)
    return f


@click.command("train")
@_click_options
def train_command(**kwargs):
    """Train a denoiser on the MD4 NELBO and export it as a ddc model (safetensors + JSON)."""
    kwargs["data"] = list(kwargs["data"])
    train(TrainConfig(**kwargs))


if __name__ == "__main__":
    train_command()
