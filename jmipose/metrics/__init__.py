"""Evaluation metrics: PoseTrack per-joint AP computed as poseval computes it."""

from jmipose.metrics.posetrack_ap import COLUMNS, format_table, posetrack_ap
from jmipose.metrics.posetrack_io import PredictionCheckError

__all__ = ["COLUMNS", "PredictionCheckError", "format_table", "posetrack_ap"]
