"""Temporal smoothing of keypoint tracks: the One Euro filter (Casiez, Roussel and Vogel, "1 Euro
Filter: A Simple Speed-based Low-pass Filter for Noisy Input in Interactive Systems", CHI 2012).

Per coordinate, an exponential low-pass filter whose cutoff grows with the (itself low-passed) speed:
``cutoff = min_cutoff + beta * |speed|`` and ``alpha = 1 / (1 + tau / T)`` with ``tau = 1 / (2 pi cutoff)``
and ``T`` the frame period.  Slow motion (jitter) is smoothed hard, fast motion follows with little
lag.  Causal: it adds no delay.  Units: cutoffs in Hz, ``beta`` in Hz per pixel/second.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, period: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / period)


class OneEuroFilter:
    """One filter over an array of coordinates (e.g. one person's [17, 2] keypoints)."""

    def __init__(self, fps: float, min_cutoff: float = 1.0, beta: float = 0.02, d_cutoff: float = 1.0):
        for name, value in (("fps", fps), ("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff)):
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"OneEuroFilter: {name} must be a positive number, got {value!r}")
        if not (isinstance(beta, (int, float)) and beta >= 0):
            raise ValueError(f"OneEuroFilter: beta must be >= 0, got {beta!r}")
        self.period = 1.0 / float(fps)
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._value is None or self._value.shape != value.shape:
            self._value, self._speed = value.copy(), np.zeros_like(value)
            return value.copy()
        raw_speed = (value - self._value) / self.period
        self._speed = self._speed + _alpha(self.d_cutoff, self.period) * (raw_speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        self._value = self._value + _alpha(cutoff, self.period) * (value - self._value)
        return self._value.copy()


class TrackSmoother:
    """One ``OneEuroFilter`` per track id; a track that skips a frame starts afresh."""

    def __init__(self, fps: float, **filter_args):
        self.fps = float(fps)
        self.filter_args = filter_args
        OneEuroFilter(self.fps, **filter_args)  # validate the arguments now
        self._filters: dict[int, tuple[int, OneEuroFilter]] = {}

    def __call__(self, frame_index: int, track_ids, keypoints: np.ndarray) -> np.ndarray:
        smoothed = np.array(keypoints, dtype=np.float64, copy=True)
        filters = {}
        for i, track_id in enumerate(track_ids):
            last, one_euro = self._filters.get(int(track_id), (None, None))
            if one_euro is None or last != frame_index - 1:
                one_euro = OneEuroFilter(self.fps, **self.filter_args)
            smoothed[i] = one_euro(keypoints[i])
            filters[int(track_id)] = (frame_index, one_euro)
        self._filters = filters
        return smoothed
