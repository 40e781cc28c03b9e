"""`ddc train`: fit the denoiser mu_theta on the continuous-time MD4 NELBO (nanoGPT-style loop).

The loop is six named steps, plain functions of the configuration or of a `Run` (the training state):

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import numpy as np
import torch

from ..errors import UsageError
from ..progress import Bars
from ..model.checkpoint import load_checkpoint, save_checkpoint, tensors_to_fp32
from .data import WindowSampler, eval_windows, load_tokens
from .elbo import antithetic_times, estimate_nelbo_chunks, nelbo_per_sequence
from ..model.denoiser import Denoiser, DenoiserConfig
from .optim import build_optimizers, load_state, lr_at, save_state
from .schedule import MaskingSchedule
from .config import TrainConfig, check_args
from .report import final_train_loss, plot_metrics, progress_line


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


def train(cfg: TrainConfig, log=None) -> dict:
    """Run training; returns a summary dict (also written to OUT/summary.json).

    `log` receives one line per event; by default a rich progress line on a terminal, else print."""
    check_args(cfg)
    line = progress_line(log is None, cfg.steps or cfg.max_minutes * 60, "steps" if cfg.steps else "s")
    if log is None:
        log = line.print if line.enabled else print
    try:
        return _train(cfg, log, line)
    finally:
        line.close()


def _train(cfg: TrainConfig, log, line: Bars | None = None) -> dict:
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
        meta = load_state(ckpt, model, ema, opts, gen, device)
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


def report(run: Run, stats: dict, log, line: Bars | None = None) -> None:
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
        if line is None or not line.enabled:
            log(msg)
        else:
            valid = f" | valid {run.last_valid[0]:.3f}" if run.last_valid else ""
            line.update("train", step if cfg.steps else run.elapsed(), info=msg.split(" ", 2)[2] + valid)
    elif line is not None and line.enabled and step % 5 == 0:
        line.update("train", step if cfg.steps else run.elapsed())


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
    save_state(run.out / "ckpt", run.model, run.ema, run.opts, run.gen,
                {"step": run.step, "elapsed": run.elapsed(), "config": dataclasses.asdict(run.cfg)})


def export(run: Run, log=print, extra: dict | None = None) -> dict:
    """The shipped model OUT/NAME (EMA weights in --export-dtype, re-validated after quantization),
    OUT/summary.json and OUT/loss.png; returns the summary (`extra` is merged into it)."""
    cfg, step, out = run.cfg, run.step, run.out
    B, L = cfg.batch_size, run.model.cfg.seq_len
    if run.model.cfg.qk_norm:
        raise UsageError("qk_norm models cannot be exported: the exact coder (exact.py) does not implement QK-norm")
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
        "final_train_nelbo": final_train_loss(out / "metrics.jsonl"),
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
    if plot_metrics(out / "metrics.jsonl", out / "loss.png"):
        log(f"plot: {out / 'loss.png'}")
    log(f"model {model_id} -> {model_dir} ({step} steps, {train_time:.0f} s)")
    return info


def _shard_bytes(cfg: TrainConfig) -> int | None:
    return int(cfg.max_shard_mb * 1e6) if cfg.max_shard_mb > 0 else None

