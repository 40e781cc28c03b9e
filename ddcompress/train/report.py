"""What `ddc train` shows while it runs and leaves behind: a rich progress line on a terminal, the loss
plot from the JSONL metrics, the final training loss for the model card."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..progress import Bars


def plot_metrics(metrics_path: Path, out_png: Path) -> bool:
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


def progress_line(enabled: bool, total: float, unit: str) -> Bars:
    """The run's line on a terminal (step, loss, lr, tok/s, valid NELBO as "info"; it stays when done),
    shown at once: the label "train", updated by loop.report."""
    line = Bars(("train", "bar", "{task.completed:.0f}/{task.total:.0f} " + unit, "{task.fields[info]}", "elapsed",
                 "remaining"), enabled, transient=False)
    line.update("train", 0, total, info="")
    return line


def final_train_loss(path: Path, last: int = 20) -> float | None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "loss" in r][-last:]
    return float(np.mean(losses)) if losses else None
