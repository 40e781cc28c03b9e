"""ddc: lossless text compression with masked discrete diffusion language models (MD4 view)."""
__version__ = "0.1.0"

from .api import DEFAULT_LEVEL, LEVELS, compress, decompress, info  # noqa: E402
from .errors import DDCError  # noqa: E402

__all__ = ["compress", "decompress", "info", "DDCError", "LEVELS", "DEFAULT_LEVEL", "__version__"]
