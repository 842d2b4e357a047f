"""The temporal window rule shared by the dataset and the video reader."""

import numpy as np
import pytest

from jmipose.data.window import key_index, normalize_window, window_indices, window_offsets


def test_normalize_sorts_and_validates():
    assert normalize_window([2, -1, 1, -2]) == (-2, -1, 1, 2)
    assert normalize_window(()) == ()
    assert normalize_window([np.int64(-1), 1]) == (-1, 1)
    with pytest.raises(ValueError, match="must not contain 0"):
        normalize_window((-1, 0, 1))
    with pytest.raises(ValueError, match="unique"):
        normalize_window((1, 1))
    with pytest.raises(TypeError, match="integers"):
        normalize_window((1.0,))
    with pytest.raises(TypeError, match="integers"):
        normalize_window((True,))
    with pytest.raises(TypeError, match="sequence"):
        normalize_window("12")


def test_key_index_counts_negative_offsets():
    assert key_index((-2, -1, 1, 2)) == 2
    assert key_index((1, 2)) == 0
    assert key_index((-3,)) == 1
    assert window_offsets((2, -1)) == (-1, 0, 2)


@pytest.mark.parametrize("key, expected", [
    (0, [0, 0, 0, 1, 2]),    # nothing before: the key frame fills both earlier slots
    (1, [0, 0, 1, 2, 3]),    # one frame before: the nearest existing one (frame 0) fills slot -2
    (2, [0, 1, 2, 3, 4]),
    (4, [2, 3, 4, 5, 5]),    # one frame after
    (5, [3, 4, 5, 5, 5]),    # nothing after
])
def test_window_clamps_at_sequence_borders(key, expected):
    assert window_indices(key, (-2, -1, 1, 2), 0, 5) == expected


def test_window_with_one_based_numbering_and_single_frame_sequence():
    assert window_indices(1, (-2, -1, 1, 2), 1, 4) == [1, 1, 1, 2, 3]
    assert window_indices(7, (-2, -1, 1, 2), 7, 7) == [7] * 5
    assert window_indices(3, (), 0, 9) == [3]
    with pytest.raises(ValueError, match="outside the sequence"):
        window_indices(6, (-1, 1), 0, 5)
