"""Streaming input for inference: video files (OpenCV) and folders of frame images, one frame at a
time, never dumped to disk, with a sliding window of neighbours for multi-frame models.

Memory stays bounded: :func:`sliding_windows` keeps only the frames the next window needs (a ring
buffer of ``max(-offsets) + max(offsets) + 1`` frames), and the optional background decoder holds at
most ``queue_size`` decoded frames. Windows are clamped at both ends of the stream with the rule of
the dataset (:func:`jmipose.data.window.window_indices`).

Frames are ``[H, W, 3]`` RGB uint8 arrays marked read-only: one frame appears in several windows,
so a consumer that wants to draw on it must copy it first.

Example::

    with VideoReader("clip.mp4", background=True) as reader:
        for window in reader.windows((-2, -1, 1, 2)):
            batch = ...  # window.frames in time order, window.key_frame is frame window.index
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from jmipose.formats.errors import DataError
from jmipose.data.frames import IMAGE_EXTENSIONS, image_size, read_image_rgb
from jmipose.data.window import DEFAULT_WINDOW, key_index, normalize_window, window_indices, window_offsets
from jmipose.resources import check_bytes

logger = logging.getLogger("jmipose.data")


@dataclass(frozen=True)
class Frame:
    index: int                 # 0, 1, 2, ... in stream order
    image: np.ndarray          # [H, W, 3] RGB uint8, read-only


@dataclass(frozen=True)
class FrameWindow:
    index: int                         # the key frame's index
    frames: tuple[np.ndarray, ...]     # the window in time order (clamped at the ends)
    indices: tuple[int, ...]           # the frame index of each entry of ``frames``
    key_index: int                     # position of the key frame in ``frames``

    @property
    def key_frame(self) -> np.ndarray:
        return self.frames[self.key_index]


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def sliding_windows(frames: Iterable[Frame], window=DEFAULT_WINDOW) -> Iterator[FrameWindow]:
    """One :class:`FrameWindow` per frame of ``frames`` (indices 0, 1, 2, ... without gaps), in order.

    A window is emitted as soon as its last needed frame has arrived, so the delay is
    ``max(window)`` frames; the last windows come when the stream ends.
    """
    offsets = window_offsets(window)
    window = normalize_window(window)
    key_position = key_index(window)
    behind, ahead = max(0, -offsets[0]), max(0, offsets[-1])
    buffer: deque[Frame] = deque(maxlen=behind + ahead + 1)
    last = -1

    def make(key: int, end: int) -> FrameWindow:
        indices = window_indices(key, window, 0, end)
        start = buffer[0].index
        return FrameWindow(key, tuple(buffer[i - start].image for i in indices), tuple(indices), key_position)

    for frame in frames:
        if frame.index != last + 1:
            raise ValueError(
                f"frames must be numbered 0, 1, 2, ... without gaps; got {frame.index} after {last}"
            )
        last = frame.index
        buffer.append(frame)
        if last - ahead >= 0:
            yield make(last - ahead, last)
    for key in range(max(last - ahead + 1, 0), last + 1):
        yield make(key, last)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class _BackgroundFrames:
    """Frames decoded by a daemon thread into a bounded queue; decoder errors re-raised to the consumer."""

    def __init__(self, produce: Callable[[], Iterator[Frame]], queue_size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(
            target=self._run, args=(produce,), name="jmipose-video-decoder", daemon=True
        )
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce) -> None:
        try:
            frames = produce()
            try:
                for frame in frames:
                    if not self._put(frame):
                        return
            finally:
                frames.close()  # release the capture inside the thread that used it
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - every decoder failure must reach the consumer
            self._put(_Failure(error))

    def __iter__(self):
        return self

    def __next__(self) -> Frame:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _END or isinstance(item, _Failure):
            self.close()
            if isinstance(item, _Failure):
                raise item.error
            raise StopIteration
        return item

    def close(self, timeout: float = 5.0) -> None:
        self._finished = True
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class VideoReader:
    """Frames of a video file or of a folder of frame images (sorted by name, numbers in natural order).

    Args:
        path: a video file OpenCV can decode, or a folder of images.
        background: decode in a background thread (bounded by ``queue_size`` frames) while the
            consumer works; errors of the decoder are raised in the consumer.
        fps: frame rate to report for image folders (videos report their own).
        strict: raise :class:`DataError` when a video ends before the frame count its container
            announces (a truncated file); otherwise log a warning, since some containers only estimate it.

    Missing paths raise ``FileNotFoundError``; files that cannot be decoded raise ``DataError``
    naming the file, already when the reader is created (the first frame is decoded to check).
    """

    def __init__(
        self,
        path,
        *,
        background: bool = False,
        queue_size: int = 8,
        fps: float | None = None,
        strict: bool = False,
    ):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"video file or frame folder {self.path} does not exist")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        self.background = bool(background)
        self.queue_size = int(queue_size)
        self.strict = bool(strict)
        self._workers: set[_BackgroundFrames] = set()
        self.is_folder = self.path.is_dir()
        if self.is_folder:
            self._files = sorted(
                (p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                key=lambda p: _natural_key(p.name),
            )
            if not self._files:
                raise DataError(
                    self.path, None, f"the folder holds no frame images ({', '.join(IMAGE_EXTENSIONS)})"
                )
            declared = image_size(self._files[0])
            if declared is not None:
                self._check_frame_memory(*declared)
            first = read_image_rgb(self._files[0])
            self._check_frame_memory(first.shape[1], first.shape[0])
            self.fps = fps
            self.frame_count: int | None = len(self._files)
        else:
            capture = self._open_capture()
            try:
                width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
                if np.isfinite(width) and np.isfinite(height) and width > 0 and height > 0:
                    self._check_frame_memory(int(width), int(height))
                # else the container does not say; the first decoded frame is checked by its size below
                ok, first = capture.read()
                if not ok or first is None:
                    raise DataError(
                        self.path, None, "the video has no decodable frame (corrupt or empty file?)"
                    )
                self._check_frame_memory(first.shape[1], first.shape[0])
                reported_fps = capture.get(cv2.CAP_PROP_FPS)
                count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            finally:
                capture.release()
            self.fps = float(reported_fps) if np.isfinite(reported_fps) and reported_fps > 0 else fps
            self.frame_count = int(count) if np.isfinite(count) and count > 0 else None
        self.height, self.width = first.shape[:2]

    def _open_capture(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise DataError(
                self.path, None, "cannot open the file as a video (corrupt, truncated or unsupported format)"
            )
        return capture

    def _check_frame_memory(self, width: int, height: int) -> None:
        """Refuses, before decoding, a video or frame folder whose frames would not fit the memory limit
        of :mod:`jmipose.resources`: a decoded BGR frame, its RGB copy and, in the background, the queue
        (sizes from the container's header or the first image's, before its pixels are decoded)."""
        frames = 2 + (self.queue_size if self.background else 0)
        check_bytes(f"{self.path}: decoding {int(width)}x{int(height)} frames ({frames} held at once)",
                    int(width) * int(height) * 3 * frames)  # the caller's finally releases the capture

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        return self.width, self.height

    def _check_size(self, image: np.ndarray, where) -> None:
        if image.shape[:2] != (self.height, self.width):
            raise DataError(
                where,
                None,
                f"frame is {image.shape[1]}x{image.shape[0]}, the stream started at "
                f"{self.width}x{self.height}",
            )

    def _decode_folder(self) -> Iterator[Frame]:
        for index, path in enumerate(self._files):
            # a frame larger than the first is refused from its header, before its pixels are decoded
            # (the area is compared: a JPEG's EXIF rotation swaps the sides the decoder returns)
            declared = image_size(path) if index else None
            if declared is not None and declared[0] * declared[1] > self.width * self.height:
                raise DataError(path, None, f"frame is {declared[0]}x{declared[1]}, the stream started at "
                                            f"{self.width}x{self.height}")
            image = read_image_rgb(path)
            self._check_size(image, path)
            image.flags.writeable = False
            yield Frame(index, image)

    def _decode_video(self) -> Iterator[Frame]:
        capture = self._open_capture()
        index = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    break
                image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                self._check_size(image, self.path)
                image.flags.writeable = False
                yield Frame(index, image)
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise DataError(self.path, None, "the video has no decodable frame (corrupt or empty file?)")
        if self.frame_count is not None and index < self.frame_count:
            message = (
                f"decoding stopped after {index} of the {self.frame_count} frames the container announces"
            )
            if self.strict:
                raise DataError(self.path, None, message + " (truncated or corrupt file)")
            logger.warning("%s: %s (truncated file, or an estimated count)", self.path, message)

    def _decode(self) -> Iterator[Frame]:
        return self._decode_folder() if self.is_folder else self._decode_video()

    def frames(self) -> Iterator[Frame]:
        """Every frame once, from the start (each call reads the source again)."""
        if not self.background:
            yield from self._decode()
            return
        worker = _BackgroundFrames(self._decode, self.queue_size)
        self._workers.add(worker)
        try:
            yield from worker
        finally:
            worker.close()
            self._workers.discard(worker)

    def windows(self, window=DEFAULT_WINDOW) -> Iterator[FrameWindow]:
        """A :class:`FrameWindow` for every frame (see :func:`sliding_windows`)."""
        return sliding_windows(self.frames(), window)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def __len__(self) -> int:
        if self.frame_count is None:
            raise TypeError(f"{self.path}: the frame count is unknown")
        return self.frame_count

    def close(self) -> None:
        """Stop background decoders still running (a consumer that stopped early)."""
        for worker in list(self._workers):
            worker.close()
        self._workers.clear()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "folder" if self.is_folder else "video"
        return (
            f"VideoReader({str(self.path)!r}, {kind}, {self.width}x{self.height}, frames={self.frame_count}, "
            f"fps={self.fps})"
        )
