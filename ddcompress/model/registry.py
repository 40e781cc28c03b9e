"""Finding models: shipped ones (`models/<name>/`, installed as `ddcompress/models/<name>/`), any
checkpoint directory, or by model id."""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from ..errors import ModelError
from .checkpoint import CONFIG_FILE, LoadedModel, describe, load_checkpoint, weight_files

DEFAULT_MODEL = "ddc-small"


def shipped_dir() -> Path:
    """The shipped models: package data `ddcompress/models/` when installed from a wheel or an sdist
    (setup.cfg maps the top-level models/ there), else models/ beside the package (an editable install
    or a source checkout)."""
    package = Path(__file__).resolve().parents[1]  # ddcompress/
    installed = package / "models"
    return installed if installed.is_dir() else package.parent / "models"


def model_dirs() -> list[Path]:
    """Where models are looked up by name: $DDC_MODELS (colon-separated) first, then the shipped ones."""
    dirs = [Path(p) for p in os.environ.get("DDC_MODELS", "").split(os.pathsep) if p]
    dirs.append(shipped_dir())
    return [d for d in dirs if d.is_dir()]


def is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and bool(weight_files(path))


def available_models() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in model_dirs():
        for sub in sorted(d.iterdir()):
            if sub.name not in found and is_checkpoint(sub):
                found[sub.name] = sub
    return found


@functools.lru_cache(maxsize=8)
def _load(path: str) -> LoadedModel:
    try:
        return load_checkpoint(path)
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot load model from {path}: {str(err).splitlines()[0]}") from None


def locate(spec: str | Path | None = None) -> Path:
    """The checkpoint directory of None (the default), a shipped model's name, or a directory; loads nothing."""
    name = str(spec) if spec is not None else DEFAULT_MODEL
    path = Path(name)
    if is_checkpoint(path):
        return path.resolve()
    shipped = available_models()
    if name in shipped:
        return shipped[name]
    known = ", ".join(shipped) or "none"
    raise ModelError(f"model {name!r} not found (shipped models: {known}; or pass a checkpoint directory)")


def resolve(spec: str | Path | LoadedModel | None = None) -> LoadedModel:
    """A LoadedModel from None (the default), a shipped model's name, or a checkpoint directory."""
    if isinstance(spec, LoadedModel):
        return spec
    return _load(str(locate(spec)))


def find_by_id(model_id: str) -> LoadedModel | None:
    """The installed model with this id, or None; only that one is loaded (ids come from the files)."""
    for path in available_models().values():
        try:
            found = describe(path)["id"] == model_id
        except (OSError, ValueError, KeyError):
            continue  # unreadable: not the one
        if found:
            return _load(str(path))
    return None
