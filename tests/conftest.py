"""Shared fixtures: tiny denoisers that run in milliseconds on CPU, and the shared data folder.

DDC_SHARED: the path of the read-only shared data folder (default: `../shared` beside the checkout).
Tests that read its evaluation corpora (`$DDC_SHARED/data/eval`: canterbury/, wikitext2/, ptb/, ...)
take the `eval_dir` fixture and are skipped when the folder is absent, with a reason naming the path
(setup.cfg runs pytest with `-rs`, so the reasons are listed at the end of every run)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ddcompress.model.checkpoint import load_checkpoint, save_checkpoint
from ddcompress.model.denoiser import Denoiser, DenoiserConfig

# pytest-xdist runs the suite in several processes (setup.cfg: -n auto): share the cores between them
# rather than have each run torch with one thread per core (oversubscribed cores spin and stall); the
# `ddc` and python subprocesses that tests start get the same share (a test that needs threads sets its own)
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # a subprocess that asks for more threads sleeps, not spins, at barriers

# CI and sessions keep the read-only shared data beside the checkout: ../shared; $DDC_SHARED overrides
SHARED = Path(os.environ.get("DDC_SHARED") or Path(__file__).resolve().parents[2] / "shared")
EVAL_DIR = SHARED / "data" / "eval"


def tiny_config(seq_len: int = 64) -> DenoiserConfig:
    return DenoiserConfig(seq_len=seq_len, n_layer=2, n_head=2, d_model=32, d_mlp=64)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A random tiny model (L = 64) saved as a checkpoint directory (safetensors + JSON)."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models") / "tiny"
    save_checkpoint(Denoiser(tiny_config()), d)
    return d


@pytest.fixture(scope="session")
def tiny_lm(tiny_ckpt):
    return load_checkpoint(tiny_ckpt)


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    if not EVAL_DIR.is_dir():
        pytest.skip(f"needs the shared eval data, not found at {EVAL_DIR} (set DDC_SHARED to the shared folder)")
    return EVAL_DIR


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not stall when another job holds a core)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
