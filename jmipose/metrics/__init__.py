"""Evaluation metrics: PoseTrack per-joint AP computed as poseval computes it."""

from jmipose.metrics.posetrack_ap import COLUMNS, PredictionCheckError, format_table, posetrack_ap

__all__ = ["COLUMNS", "PredictionCheckError", "format_table", "posetrack_ap"]
