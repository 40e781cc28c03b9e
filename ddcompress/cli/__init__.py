"""The `ddc` command: commands (the command group, compress/decompress/test/info/models), args (option
parsing, lazy subcommands), files (inputs, outputs, progress). Torch loads only when a command needs the
model; `main` is the console script's entry point (`ddc = ddcompress.cli:main`)."""
from .commands import main

__all__ = ["main"]
