"""Bad input data: the error type and the skip-or-raise policy live in :mod:`jmipose.formats.errors`
(the file formats' module); this name stays for the code that imports them from here."""

from jmipose.formats.errors import BadDataPolicy, DataError, logger

__all__ = ["BadDataPolicy", "DataError", "logger"]
