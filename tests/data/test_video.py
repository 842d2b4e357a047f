"""Streaming video input: the real 000001_mpiinew_test clip (mp4 and JPEG frames), videos written here
with OpenCV, sliding windows with clamped ends, the background decoder, and bad files."""

import logging
import threading
import weakref

import cv2
import numpy as np
import pytest

from jmipose.data import DataError, Frame, VideoReader, sliding_windows

CLIP = "posetrack18/videos/000001_mpiinew_test"


def _frame_image(index: int, size=(64, 48)) -> np.ndarray:
    """A frame whose content identifies its index (a grey level and a moving square)."""
    image = np.full((size[1], size[0], 3), (12 * index + 10) % 256, np.uint8)
    x = 4 + 3 * index
    image[10:22, x:x + 12] = (250, 40, 40)
    return image


def _write_video(path, count=12, fps=25, fourcc="mp4v", size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for index in range(count):
        writer.write(cv2.cvtColor(_frame_image(index, size), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _grey(image) -> float:
    return float(np.median(image[30:, :, 1]))


def test_real_clip_mp4_and_frame_folder(shared_data):
    folder = VideoReader(shared_data / CLIP)
    video = VideoReader(shared_data / CLIP / "000001_mpiinew_test.mp4")
    assert (folder.frame_count, folder.size, folder.fps) == (5, (1280, 720), None)
    assert (video.frame_count, video.size, video.fps) == (5, (1280, 720), 30.0)
    assert len(video) == 5 and "1280x720" in repr(video)
    jpegs = [f.image for f in folder.frames()]
    decoded = [f.image for f in video]
    assert len(jpegs) == len(decoded) == 5
    for index, (jpeg, frame) in enumerate(zip(jpegs, decoded)):
        assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8 and not frame.flags.writeable
        # both encodings of one frame differ by compression noise only; other frames differ by motion
        same = np.abs(jpeg.astype(np.int16) - frame).mean()
        others = [np.abs(jpegs[k].astype(np.int16) - frame).mean() for k in range(5) if k != index]
        assert same < 4.0 and min(others) > 2 * same
    # RGB order: the JPEG frame read by the reader equals OpenCV's BGR read, reversed
    bgr = cv2.imread(str(shared_data / CLIP / "000002.jpg"))
    np.testing.assert_array_equal(jpegs[2], bgr[..., ::-1])


def test_real_clip_windows(shared_data):
    with VideoReader(shared_data / CLIP / "000001_mpiinew_test.mp4") as reader:
        windows = list(reader.windows((-2, -1, 1, 2)))
    assert [w.indices for w in windows] == [(0, 0, 0, 1, 2), (0, 0, 1, 2, 3), (0, 1, 2, 3, 4),
                                            (1, 2, 3, 4, 4), (2, 3, 4, 4, 4)]
    assert all(w.key_index == 2 and w.key_frame is w.frames[2] for w in windows)
    assert windows[3].frames[3] is windows[3].frames[4]   # clamped slots repeat the same frame


def test_written_video_and_folder(tmp_path):
    video = VideoReader(_write_video(tmp_path / "clip.mp4", count=12, fps=25))
    assert (video.frame_count, video.size, video.fps) == (12, (64, 48), 25.0)
    frames = list(video.frames())
    assert [f.index for f in frames] == list(range(12))
    np.testing.assert_allclose([_grey(f.image) for f in frames], [12 * i + 10 for i in range(12)], atol=3)
    # reading again starts from the beginning
    assert _grey(next(iter(video)).image) == pytest.approx(10, abs=3)
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(11):   # natural order: frame_2 comes before frame_10
        cv2.imwrite(str(folder / f"frame_{index}.png"), cv2.cvtColor(_frame_image(index), cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not a frame")
    images = [f.image for f in VideoReader(folder, fps=10)]
    assert len(images) == 11
    for index, image in enumerate(images):
        np.testing.assert_array_equal(image, _frame_image(index))


def test_sliding_windows_stream_with_bounded_memory():
    produced, references = [], []

    def source():
        for index in range(40):
            image = np.full((2, 2, 3), index, np.uint8)
            references.append(weakref.ref(image))   # to count the frames still alive
            produced.append(index)
            yield Frame(index, image)

    peak = 0
    for window in sliding_windows(source(), (-3, -1, 2)):
        # a window comes as soon as its last frame is read: at most 2 frames ahead of the key
        assert len(produced) - 1 <= window.index + 2
        assert list(window.indices) == [max(window.index - 3, 0), max(window.index - 1, 0), window.index,
                                        min(window.index + 2, 39)]
        assert [int(f[0, 0, 0]) for f in window.frames] == list(window.indices)
        del window   # frames are freed by reference counting as soon as nothing holds them
        peak = max(peak, sum(r() is not None for r in references))
    assert peak <= 3 + 2 + 1 + 1   # the ring buffer (behind + ahead + key) and the frame being added


def test_sliding_windows_edge_cases():
    frames = [Frame(i, np.zeros((1, 1, 3), np.uint8)) for i in range(3)]
    assert [w.indices for w in sliding_windows(frames, ())] == [(0,), (1,), (2,)]
    assert [w.indices for w in sliding_windows(frames, (1, 5))] == [(0, 1, 2), (1, 2, 2), (2, 2, 2)]
    assert list(sliding_windows([], (-1, 1))) == []
    with pytest.raises(ValueError, match="without gaps"):
        list(sliding_windows([frames[0], frames[2]], (-1, 1)))


def test_background_decoding_matches_and_shuts_down(tmp_path):
    path = _write_video(tmp_path / "clip.mp4", count=30)
    plain = [f.image for f in VideoReader(path).frames()]
    with VideoReader(path, background=True, queue_size=2) as reader:
        threaded = [f.image for f in reader.frames()]
        assert len(threaded) == 30 and all(np.array_equal(a, b) for a, b in zip(plain, threaded))
        windows = [w.indices for w in reader.windows((-1, 1))]
        assert windows[0] == (0, 0, 1) and windows[-1] == (28, 29, 29)
        stream = reader.frames()
        next(stream)          # stop early: the decoder thread must not stay blocked on the full queue
        worker = next(iter(reader._workers))
    assert not worker.alive
    assert not any(t.name == "jmipose-video-decoder" for t in threading.enumerate())
    stream.close()


def test_background_decoder_errors_reach_the_consumer(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(4):
        cv2.imwrite(str(folder / f"{index:03d}.jpg"), _frame_image(index))
    (folder / "002.jpg").write_bytes(b"broken")
    got = []
    with pytest.raises(DataError, match=r"002\.jpg: cannot decode the image"):
        for frame in VideoReader(folder, background=True).frames():
            got.append(frame.index)
    assert got == [0, 1]
    cv2.imwrite(str(folder / "002.jpg"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match=r"002\.jpg: frame is 10x10, the stream started at 64x48"):
        list(VideoReader(folder))


def test_missing_corrupt_and_truncated_files(tmp_path, shared_data, caplog):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoReader(tmp_path / "nothing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"garbage\.mp4: cannot open the file as a video"):
        VideoReader(garbage)
    cut = tmp_path / "cut.mp4"   # the real clip without its second half (its index is at the end)
    data = (shared_data / CLIP / "000001_mpiinew_test.mp4").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.mp4: cannot open the file as a video"):
        VideoReader(cut)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no frame images"):
        VideoReader(empty)
    avi = _write_video(tmp_path / "clip.avi", count=12, fourcc="MJPG")
    raw = avi.read_bytes()
    avi.write_bytes(raw[: len(raw) * 2 // 3])   # an AVI opens but stops early
    with caplog.at_level(logging.WARNING, logger="jmipose.data"):
        frames = list(VideoReader(avi).frames())
    assert 0 < len(frames) < 12
    assert any("container announces" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match=r"clip\.avi: decoding stopped after \d+ of the 12 frames"):
        list(VideoReader(avi, strict=True).frames())
    with pytest.raises(ValueError, match="queue_size"):
        VideoReader(shared_data / CLIP, queue_size=0)
