"""The file formats jmipose reads and writes, each in one place, with one error type.

- :mod:`jmipose.formats.posetrack`: PoseTrack17 (annolist), PoseTrack18 and PoseTrack21 (COCO-style)
  annotation and prediction files: the PoseTrack18 image-id rule (``1SSSSSSFFFF``), the training
  loader's reading, and writing predictions.
- :mod:`jmipose.formats.poseval`: the same files as the evaluator reads them (what poseval sees),
  from the same pieces.
- :mod:`jmipose.formats.detections`: COCO-style person detections, for the training loader's
  validation boxes and for a video's boxes (matched to its PoseTrack sequence).
- :mod:`jmipose.formats.fields`: reading JSON files and their fields (numbers, boxes, lists), the one
  wording of each rule.
- :mod:`jmipose.formats.errors`: :class:`DataError`, which names the file and the field, and
  :class:`BadDataPolicy`, which raises, skips (``skip_bad``) or collects (the evaluator's pre-check).

Joint names and orders are not here: they are :mod:`jmipose.joints`.
"""

from jmipose.formats.detections import Detection, Detections, load_detections, read_detections
from jmipose.formats.errors import BadDataPolicy, DataError
from jmipose.formats.fields import load_json
from jmipose.formats.posetrack import (
    CATEGORY,
    FrameInfo,
    PersonAnnotation,
    posetrack_document,
    posetrack_image_id,
    posetrack_sequence,
    read_annotation_file,
    sequence_image_id,
    split_image_id,
)
from jmipose.formats.poseval import read_sequence

__all__ = [
    "CATEGORY",
    "BadDataPolicy",
    "DataError",
    "Detection",
    "Detections",
    "FrameInfo",
    "PersonAnnotation",
    "load_detections",
    "load_json",
    "posetrack_document",
    "posetrack_image_id",
    "posetrack_sequence",
    "read_annotation_file",
    "read_detections",
    "read_sequence",
    "sequence_image_id",
    "split_image_id",
]
