"""Temporal windows: which frames a multi-frame model sees around a key frame.

One rule for the dataset and the video reader, so training and inference see the same borders.
A window is given as the offsets of the supporting frames, e.g. ``(-2, -1, 1, 2)``; the model input
is the key frame plus those frames **in time order**, so the key frame sits at index
``key_index(window)`` = the number of negative offsets.

Border rule (the one stated for the official JMI code): a supporting frame that falls outside the
sequence is replaced by the key frame when no frame exists on that side, else by the nearest existing
frame on that side. Both cases are the same thing as clamping the frame index to
``[first, last]``, which is what :func:`window_indices` does. (The official code implements the
"nearest existing" part only after the key frame; before it, it shifts the available frames
outward and fills the slot next to the key with the key frame itself. We follow the stated rule on
both sides so that a clip and its time reversal see mirrored windows.)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

DEFAULT_WINDOW: tuple[int, ...] = (-2, -1, 1, 2)


def normalize_window(window: Sequence[int]) -> tuple[int, ...]:
    """Validate supporting-frame offsets and return them sorted in time order.

    Offsets are non-zero integers without repeats (the key frame, offset 0, is always included
    and must not be listed). An empty window gives a single-frame model input.
    """
    if isinstance(window, (str, bytes)) or not isinstance(window, Sequence):
        raise TypeError(f"window must be a sequence of int offsets such as (-2, -1, 1, 2), got {window!r}")
    offsets = []
    for offset in window:
        # operator.index accepts Python and numpy integers and refuses floats; bools are refused
        # explicitly (a window of True is a bug upstream, not an offset of 1).
        if isinstance(offset, bool):
            raise TypeError(f"window offsets must be integers, got {offset!r} in {tuple(window)!r}")
        try:
            offsets.append(operator.index(offset))
        except TypeError:
            raise TypeError(f"window offsets must be integers, got {offset!r} in {tuple(window)!r}") from None
    if 0 in offsets:
        raise ValueError(
            f"window must not contain 0 (the key frame is always included), got {tuple(window)!r}"
        )
    if len(set(offsets)) != len(offsets):
        raise ValueError(f"window offsets must be unique, got {tuple(window)!r}")
    return tuple(sorted(offsets))


def key_index(window: Sequence[int]) -> int:
    """Index of the key frame in the time-ordered model input (the number of negative offsets)."""
    return sum(1 for offset in normalize_window(window) if offset < 0)


def window_offsets(window: Sequence[int]) -> tuple[int, ...]:
    """All offsets of the model input in time order, the key frame's 0 included."""
    offsets = normalize_window(window)
    return tuple(sorted(offsets + (0,)))


def window_indices(key: int, window: Sequence[int], first: int, last: int) -> list[int]:
    """Frame indices of the model input for key frame ``key`` of a sequence spanning ``[first, last]``.

    Returns ``len(window) + 1`` indices in time order, each clamped to ``[first, last]`` (see the
    module docstring for why clamping is the JMI border rule).
    """
    if last < first:
        raise ValueError(f"empty sequence: first={first} > last={last}")
    if not first <= key <= last:
        raise ValueError(f"key frame {key} outside the sequence [{first}, {last}]")
    return [min(max(key + offset, first), last) for offset in window_offsets(window)]
