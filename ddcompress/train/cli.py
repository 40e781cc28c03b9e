"""`ddc train`: one option per TrainConfig field; the loop (and torch) loads only when it runs."""
from __future__ import annotations

import dataclasses

import click

from ..errors import UsageError
from .config import TrainConfig


def click_options(f):
    """One option per TrainConfig field, help text from the field's metadata."""
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
@click_options
def train_command(**kwargs):
    """Train a denoiser on the MD4 NELBO and export it as a ddc model (safetensors + JSON)."""
    from .loop import train  # torch: only once the arguments parse

    kwargs["data"] = list(kwargs["data"])
    try:
        train(TrainConfig(**kwargs))
    except UsageError as err:  # the library's argument errors, shown the command line's way (exit 2)
        raise click.UsageError(str(err)) from None
