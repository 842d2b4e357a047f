"""Reading JSON files and their fields: every refusal is a :class:`DataError` naming the file and the
field (``annotations[3].bbox[2]``), with one wording for one rule whichever format is read.

JSON allows what no reader of ours can use: ``NaN`` and ``Infinity`` literals, integers of hundreds of
digits (``10**400`` written out), booleans where numbers belong, nesting deeper than Python's parser
goes. Each is refused here with the field named, never passed on as an ``OverflowError``, a
``RecursionError`` or a silent NaN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from jmipose.formats.errors import DataError


def load_json(path):
    """Parse a JSON file (UTF-8, or UTF-16/32 with a byte-order mark); a missing, unreadable,
    truncated, non-text or too deeply nested file raises :class:`DataError` naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, "does not exist") from None
    except OSError as exc:
        raise DataError(path, None, f"cannot read the file: {exc}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(path, None, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; "
                                    f"truncated or corrupt file?)") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, None, f"not valid JSON: not UTF-8 text ({exc})") from None
    except RecursionError:
        raise DataError(path, None, "not valid JSON here: nested too deeply to parse") from None


def too_big(value) -> bool:
    """An integer literal no float or int64 holds (JSON allows 10**400 written out in digits)."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2 ** 63


def shown(value) -> str:
    """``repr`` of a value for a message, a huge integer as its digit count."""
    if too_big(value):
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


def is_number(value) -> bool:
    """A finite JSON number (not a bool, not a string, not an integer too big for a float)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and not too_big(value)
            and math.isfinite(value))


def where_of(where: str, key) -> str:
    """The field name of ``key`` inside ``where``: ``images[0]`` + ``id`` -> ``images[0].id``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def get(obj, key, file, where, default=...):
    """``obj[key]``; a missing key is an error unless ``default`` is given; ``obj`` must be an object."""
    if not isinstance(obj, dict):
        raise DataError(file, where, f"expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        if default is ...:
            raise DataError(file, where_of(where, key), "missing required field")
        return default
    return obj[key]


def as_list(value, file, where, what: str = "a list") -> list:
    if not isinstance(value, list):
        raise DataError(file, where, f"expected {what}, got {type(value).__name__}")
    return value


def unwrap(value, file, where):
    """PoseTrack17 stores scalars as one-element lists (``"x": [394]``); accept both."""
    if isinstance(value, list):
        if len(value) != 1:
            problem = f"expected a value or a one-element list, got a list of {len(value)}"
            raise DataError(file, where, problem)
        return value[0]
    return value


def as_int(value, file, where) -> int:
    """An integer (a float that is one, ``3.0``, too); not a bool."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))
        or too_big(value)
    ):
        raise DataError(file, where, f"expected an integer, got {shown(value)}")
    return int(value)


def as_float(value, file, where) -> float:
    """A finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(file, where, f"expected a number, got {value!r}")
    if too_big(value) or not math.isfinite(value):
        raise DataError(file, where, f"expected a finite number, got {shown(value)}")
    return float(value)


def as_bool(value, file, where) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise DataError(file, where, f"expected true/false or 0/1, got {value!r}")


def as_numbers(value, file, where, length: int | None = None) -> np.ndarray:
    """A list of finite numbers (``length`` of them when given) as float64; the first bad element is
    named (``keypoints[4]``)."""
    if not isinstance(value, list):
        raise DataError(file, where, f"expected a list of numbers, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise DataError(file, where, f"expected {length} numbers, got {len(value)}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(file, f"{where}[{i}]", f"expected a number, got {v!r}")
        if too_big(v):
            raise DataError(file, f"{where}[{i}]", f"expected a finite number, got {shown(v)}")
    array = np.asarray(value, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise DataError(
            file, f"{where}[{bad[0]}]", f"expected a finite number, got {value[bad[0]]!r} (NaN/inf)"
        )
    return array


def as_box(value, file, where) -> np.ndarray:
    """An (x, y, w, h) box with w, h > 0 (x, y may be negative: PoseTrack boxes leave the frame)."""
    box = as_numbers(value, file, where, length=4)
    if box[2] < 0 or box[3] < 0:
        raise DataError(
            file, where, f"negative box size: width {box[2]:g}, height {box[3]:g} (expected x, y, w, h)"
        )
    if box[2] == 0 or box[3] == 0:
        raise DataError(file, where, f"zero-area box: width {box[2]:g}, height {box[3]:g}")
    return box
