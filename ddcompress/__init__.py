"""ddc: lossless text compression with masked discrete diffusion language models (MD4 view).

Importing the package is cheap: the library functions (and torch) load on first use."""
__version__ = "0.3.0"

from .errors import DDCError  # noqa: E402  (torch-free)

_API = ("compress", "decompress", "info", "LEVELS", "DEFAULT_LEVEL")

__all__ = ["compress", "decompress", "info", "DDCError", "LEVELS", "DEFAULT_LEVEL", "__version__"]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
