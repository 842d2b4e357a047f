"""Frame files on disk: where each frame of a sequence is, and reading one with clear errors.

Two layouts are found automatically per sequence folder: the original PoseTrack names, as written
in the annotations (``images/val/<seq>/000000.jpg``, six digits from 0 for PoseTrack18/21; eight
digits from 1 for PoseTrack17), and the DCPose-style renaming to ``%08d.jpg`` (or back to six digits)
of the same frame numbers. The folder is listed once, so missing frames are found when the dataset
is built, not inside a DataLoader worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from jmipose.formats.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
FRAME_NUMBERINGS = ("auto", 0, 1)


def list_numbered_frames(directory: Path) -> dict[int, dict[int, str]]:
    """``{digits: {frame number: file name}}`` of the numbered image files in ``directory``."""
    by_width: dict[int, dict[int, str]] = {}
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return by_width
    for name in names:
        stem, extension = os.path.splitext(name)
        if stem.isdigit() and extension.lower() in IMAGE_EXTENSIONS:
            by_width.setdefault(len(stem), {})[int(stem)] = name
    return by_width


@dataclass
class SequenceFiles:
    """The frame files of one sequence folder and the range a window may use."""

    directory: Path
    first: int                       # lowest valid frame number (the numbering base)
    last: int                        # highest valid frame number
    width: int                       # digits of the file names on disk
    extension: str
    names: dict[int, str] | None = field(default=None, repr=False)   # None when the disk was not listed

    def path(self, number: int) -> Path:
        if self.names is not None and number in self.names:
            return self.directory / self.names[number]
        return self.directory / f"{number:0{self.width}d}{self.extension}"

    def exists(self, number: int) -> bool:
        return True if self.names is None else number in self.names

    @classmethod
    def scan(cls, directory: Path, annotated_numbers: list[int], annotated_width: int, extension: str,
             nframes: int | None, numbering="auto", list_disk: bool = True) -> SequenceFiles:
        """Find the layout of ``directory`` from a listing and the annotated frames.

        ``numbering`` is the number of the first frame: ``0`` (PoseTrack18/21), ``1`` (PoseTrack17) or
        ``"auto"``: 0 for six-digit annotation names or when a frame 0 exists, else 1 for eight-digit
        names, else 0. The last frame is ``first + nframes - 1``, or the highest number on disk when
        the annotation gives no ``nframes``.
        """
        by_width = list_numbered_frames(directory) if list_disk else {}
        width, names = annotated_width, None
        if list_disk:
            wanted = set(annotated_numbers)
            # The layout holding most annotated frames wins; ties keep the annotation's own width.
            ranked = sorted(
                by_width.items(), key=lambda item: (-len(wanted & item[1].keys()), item[0] != annotated_width)
            )
            if ranked and wanted & ranked[0][1].keys():
                width, names = ranked[0][0], ranked[0][1]
            else:
                names = by_width.get(annotated_width, {})
        if numbering == "auto":
            has_zero = 0 in annotated_numbers or (names is not None and 0 in names)
            first = 1 if (annotated_width == 8 and not has_zero) else 0
        else:
            first = int(numbering)
        if nframes is not None:
            last = first + nframes - 1
        elif names:
            last = max(max(names), max(annotated_numbers))
        else:
            last = max(annotated_numbers)
        return cls(directory=directory, first=first, last=last, width=width, extension=extension, names=names)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) an image file declares in its header, read without decoding the pixels (so a
    memory limit can be checked first); None when the header cannot be read that way (the decoder then
    reports the problem)."""
    try:
        from PIL import Image

        with Image.open(path) as image:   # reads the header only
            return int(image.size[0]), int(image.size[1])
    except Exception:  # noqa: BLE001 - any failure: leave the verdict to the decoder
        return None


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read a frame as ``[H, W, 3]`` RGB uint8, with a :class:`DataError` naming the file when it is
    missing, empty, not an image or a truncated JPEG (OpenCV would decode half a JPEG silently)."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(path, None, "missing frame file") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise DataError(path, None, f"cannot read the frame file: {exc}") from None
    if data.size == 0:
        raise DataError(path, None, "empty frame file")
    if data.size >= 2 and data[0] == 0xFF and data[1] == 0xD8:
        # A JPEG ends with the EOI marker FF D9 (some writers pad a little after it).
        tail = data[-1024:].tobytes()
        if b"\xff\xd9" not in tail:
            raise DataError(path, None, "truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(path, None, "cannot decode the image (corrupt file or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
