"""`ddc train`: fit the denoiser mu_theta on the continuous-time MD4 NELBO (nanoGPT-style loop).

Loss per token: NELBO(x0) / L with antithetic times t_i = (u + i/B) mod 1 (elbo.py). AdamW with
linear warmup then cosine decay (over --steps, or over the wall-clock budget --max-minutes), gradient
clipping, bf16 autocast + torch.compile on CUDA (fp32 on CPU), EMA weights (what gets shipped),
periodic validation NELBO of the EMA model on fixed held-out windows, a JSONL metrics log and a loss
plot. Checkpoints are safetensors + JSON and resume exactly (batches are keyed by step; the masking
generator's state is saved).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import torch

from .data import batch_windows, eval_windows, load_tokens
from .elbo import antithetic_times, nelbo_per_sequence
from .model import Denoiser, DenoiserConfig, save_checkpoint


def _opt(help: str, **kw):
    return field(metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    data: list[str] = _opt("Training sources: text, .jsonl[.xz|.gz] (field 'text'), or hf:NAME[:CONFIG][:SPLIT]. Repeatable.", default_factory=list)
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
    batch_size: int = _opt("Sequences per step.", default=32)
    lr: float = _opt("Peak learning rate.", default=1e-3)
    min_lr_frac: float = _opt("Final learning rate as a fraction of the peak.", default=0.1)
    warmup: int = _opt("Linear warmup steps.", default=200)
    steps: int = _opt("Total optimizer steps (0: until --max-minutes).", default=0)
    max_minutes: float = _opt("Wall-clock budget; the cosine decay follows it when --steps is 0.", default=0.0)
    weight_decay: float = _opt("AdamW weight decay (on matrices only).", default=0.03)
    beta2: float = _opt("AdamW beta2 (beta1 = 0.9).", default=0.99)
    grad_clip: float = _opt("Gradient norm clip (0: off).", default=1.0)
    ema: float = _opt("EMA decay of the shipped weights (0: no EMA).", default=0.999)
    schedule: str = _opt("alpha_t schedule of the loss: linear, cosine or polynomial.", default="linear")
    power: float = _opt("Exponent of the polynomial schedule.", default=1.0)
    t_eps: float = _opt("Smallest diffusion time sampled (t in [eps, 1]).", default=1e-3)
    eval_every: int = _opt("Validate every N steps (and at the end).", default=500)
    eval_windows: int = _opt("Held-out L-token windows per validation.", default=64)
    eval_passes: int = _opt("Antithetic time sets per validation window.", default=2)
    save_every: int = _opt("Checkpoint every N steps (and at the end).", default=1000)
    log_every: int = _opt("Log a metrics line every N steps.", default=20)
    seed: int = _opt("Seed of batches, masks and initialization.", default=0)
    device: str = _opt("cpu, cuda, or auto.", default="auto")
    compile: bool = _opt("torch.compile the denoiser body (CUDA only).", default=True)
    export_dtype: str = _opt("Weights of the final model: float32, bfloat16 or int8 (per-row scales).", default="float32")
    max_shard_mb: float = _opt("Split the exported weights into files of at most this many MB (0: one file).", default=0.0)
    name: str = _opt("Name of the exported model directory (OUT/NAME).", default="model")
    resume: bool = _opt("Continue from OUT/ckpt if it exists.", default=False)
    stop_after: int = _opt("Stop this invocation after N steps (checkpointing; the schedule still follows --steps). 0: off.", default=0)

    def model_config(self) -> DenoiserConfig:
        d_mlp = self.d_mlp or int(round(8 * self.d_model / 3 / 64)) * 64
        return DenoiserConfig(seq_len=self.seq_len, n_layer=self.n_layer, n_head=self.n_head, d_model=self.d_model,
                              d_mlp=d_mlp, tie_embeddings=self.tie_embeddings, dropout=self.dropout)


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


# ---------------------------------------------------------------------------------------------------
# exact-resume checkpoints (safetensors + JSON)


def _save_state(path: Path, model, ema, opt, gen, meta: dict) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    if ema is not None:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in ema.state_dict().items()}, str(path / "ema.safetensors"))
    flat, layout = {}, {}
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            key = f"{pid}.{k}"
            flat[key] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
            layout[key] = torch.is_tensor(v)
    flat["generator_state"] = gen.get_state().cpu()
    save_file(flat, str(path / "optim.safetensors"))
    meta = meta | {"param_groups": sd["param_groups"], "optim_layout": layout}
    tmp = path / "state.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path / "state.json")


def _load_state(path: Path, model, ema, opt, gen, device) -> dict:
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)))
    if ema is not None and (path / "ema.safetensors").exists():
        ema.load_state_dict(load_file(str(path / "ema.safetensors"), device=str(device)))
    flat = load_file(str(path / "optim.safetensors"))
    gen.set_state(flat.pop("generator_state"))
    state: dict = {}
    for key, is_tensor in meta["optim_layout"].items():
        pid, k = key.split(".", 1)
        v = flat[key]
        state.setdefault(int(pid), {})[k] = v.to(device) if is_tensor and k != "step" else (v if is_tensor else v.item())
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def validate(model: Denoiser, windows: np.ndarray, cfg: TrainConfig, device, autocast) -> tuple[float, float]:
    """Validation NELBO in nats/token of fixed windows with fixed antithetic times: (mean, stderr)."""
    was_training = model.training
    model.eval()
    g = torch.Generator(device=device).manual_seed(12345)
    L = windows.shape[1]
    per_window = []
    for p in range(cfg.eval_passes):
        vals = []
        for i in range(0, len(windows), cfg.batch_size):
            x0 = torch.from_numpy(windows[i : i + cfg.batch_size]).to(device)
            t = antithetic_times(x0.shape[0], cfg.t_eps, g, device=device)
            with autocast():
                vals.append(nelbo_per_sequence(model, x0, t, cfg.schedule, cfg.power, generator=g).double().cpu())
        per_window.append(torch.cat(vals))
    v = torch.stack(per_window).mean(0).numpy() / L
    model.train(was_training)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


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
    line = _ProgressLine(log is None and sys.stderr.isatty(), cfg.steps or cfg.max_minutes * 60, "steps" if cfg.steps else "s")
    if log is None:
        log = line.print if line.bar is not None else print
    try:
        return _train(cfg, log, line)
    finally:
        line.close()


def _train(cfg: TrainConfig, log, line: _ProgressLine) -> dict:
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
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
    mcfg = cfg.model_config()
    model = Denoiser(mcfg).to(device)
    ema = copy.deepcopy(model).eval() if cfg.ema > 0 else None
    if ema is not None:
        ema.requires_grad_(False)
    n_params = model.num_params()
    log(f"model: {mcfg.n_layer}x{mcfg.d_model}, L={mcfg.seq_len}, {n_params / 1e6:.1f}M params on {device}")
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, cfg.beta2), fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    step, elapsed_before = 0, 0.0
    ckpt = out / "ckpt"
    if cfg.resume and (ckpt / "state.json").exists():
        meta = _load_state(ckpt, model, ema, opt, gen, device)
        step, elapsed_before = meta["step"], meta["elapsed"]
        log(f"resumed from {ckpt} at step {step}")
    if device.type == "cuda":
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:
        import contextlib

        autocast = contextlib.nullcontext
    if cfg.compile and device.type == "cuda":
        model.hidden = torch.compile(model.hidden)
    vwin = eval_windows(valid_tokens, mcfg.seq_len, cfg.eval_windows) if valid_tokens is not None else None
    metrics = (out / "metrics.jsonl").open("a")
    budget = cfg.max_minutes * 60.0
    if not cfg.steps and not budget:
        raise click.UsageError("give --steps or --max-minutes")
    B, L = cfg.batch_size, mcfg.seq_len
    t0 = time.time()
    last_log, last_valid, last_valid_step = t0, None, -1
    model.train()

    def elapsed() -> float:
        return elapsed_before + time.time() - t0

    def progress() -> float:
        return step / cfg.steps if cfg.steps else elapsed() / budget

    def save():
        _save_state(ckpt, model, ema, opt, gen, {"step": step, "elapsed": elapsed(), "config": dataclasses.asdict(cfg)})

    def do_eval():
        nonlocal last_valid, last_valid_step
        if vwin is None or len(vwin) == 0:
            return
        m, se = validate(ema if ema is not None else model, vwin, cfg, device, autocast)
        last_valid, last_valid_step = (m, se), step
        rec = {"step": step, "tokens": step * B * L, "valid_nelbo": m, "valid_stderr": se, "elapsed": elapsed()}
        metrics.write(json.dumps(rec) + "\n")
        metrics.flush()
        log(f"step {step}: valid NELBO {m:.4f} ± {se:.4f} nats/token (ppl {math.exp(m):.1f})")

    start_step = step
    while (cfg.steps and step < cfg.steps) or (not cfg.steps and elapsed() < budget):
        if cfg.stop_after and step - start_step >= cfg.stop_after:
            save()
            log(f"stopped after {cfg.stop_after} steps at step {step}; continue with --resume")
            metrics.close()
            return {"stopped_at": step}
        lr = lr_at(cfg, step, progress())
        for g_ in opt.param_groups:
            g_["lr"] = lr
        x0 = torch.from_numpy(batch_windows(tokens, L, B, cfg.seed, step)).to(device, non_blocking=True)
        t = antithetic_times(B, cfg.t_eps, gen, device=device)
        with autocast():
            loss = nelbo_per_sequence(model, x0, t, cfg.schedule, cfg.power, generator=gen).mean() / L
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        opt.step()
        if ema is not None:
            with torch.no_grad():
                d = min(cfg.ema, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)
        step += 1
        if step % cfg.log_every == 0:
            now = time.time()
            rec = {"step": step, "tokens": step * B * L, "loss": loss.item(), "lr": lr, "grad_norm": float(gnorm),
                   "elapsed": elapsed(), "tok_per_s": cfg.log_every * B * L / max(now - last_log, 1e-9)}
            last_log = now
            metrics.write(json.dumps(rec) + "\n")
            metrics.flush()
            msg = (f"step {step} loss {rec['loss']:.4f} lr {lr:.2e} gnorm {rec['grad_norm']:.2f} "
                   f"{rec['tok_per_s'] / 1e3:.0f}k tok/s {elapsed():.0f}s")
            if line.bar is None:
                log(msg)
            valid = f" | valid {last_valid[0]:.3f}" if last_valid else ""
            line.update(step if cfg.steps else elapsed(), msg.split(" ", 2)[2] + valid)
        elif line.bar is not None and step % 5 == 0:
            line.update(step if cfg.steps else elapsed())
        if cfg.eval_every and step % cfg.eval_every == 0:
            do_eval()
        if cfg.save_every and step % cfg.save_every == 0:
            save()
    if not last_valid or last_valid_step != step:
        do_eval()
    save()
    train_time = elapsed()
    final_train = _final_train_loss(out / "metrics.jsonl")
    info = {
        "trained_by": "ddc train",
        "data": cfg.data,
        "valid": cfg.valid,
        "train_tokens_available": int(len(tokens)),
        "tokens_seen": step * B * L,
        "epochs": step * B * L / max(len(tokens), 1),
        "steps": step,
        "batch": [B, L],
        "hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.machine()} x{torch.get_num_threads()}",
        "wall_time_s": round(train_time, 1),
        "final_train_nelbo": final_train,
        "final_valid_nelbo": last_valid[0] if last_valid else None,
        "final_valid_stderr": last_valid[1] if last_valid else None,
        "params": n_params,
        "config": dataclasses.asdict(cfg),
    }
    export_model = ema if ema is not None else model
    model_dir = out / cfg.name
    model_id = save_checkpoint(export_model, model_dir, cfg.export_dtype, extra=info, max_shard_bytes=_shard_bytes(cfg))
    info["model_id"] = model_id
    if cfg.export_dtype != "float32" and vwin is not None and len(vwin):
        from .model import load_checkpoint

        q = load_checkpoint(model_dir).model.to(device)
        m, se = validate(q, vwin, cfg, device, autocast)
        info["export_valid_nelbo"] = m
        log(f"exported {cfg.export_dtype} model: valid NELBO {m:.4f} ± {se:.4f} (EMA fp32: {last_valid[0] if last_valid else float('nan'):.4f})")
        save_checkpoint(export_model, model_dir, cfg.export_dtype, extra=info, max_shard_bytes=_shard_bytes(cfg))
    (out / "summary.json").write_text(json.dumps(info, indent=2) + "\n")
    metrics.close()
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
            typ = {"int": int, "float": float}.get(str(fld.type), str)
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
