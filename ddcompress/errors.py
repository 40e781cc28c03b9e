"""Errors that the CLI turns into one-line messages and a non-zero exit."""


class DDCError(Exception):
    """Base class: anything the user can act on."""


class FormatError(DDCError):
    """Not a ddc file, truncated, or a corrupt header."""


class IntegrityError(DDCError):
    """Payload or checksum mismatch."""


class ModelError(DDCError):
    """Model not found, or not the one the file was made with."""


class UsageError(DDCError):
    """Arguments that cannot work (together): the command line shows them as a usage error (exit 2)."""
