"""Live and long sources: frame sampling, timestamps, FFmpeg inputs (lavfi), raw frames on a pipe,
realtime reading, and model.track_stream (per-frame results as they become ready).

Expected frame indices, timestamps and latencies are computed here from the definitions (a
30 fps clip sampled at 5 fps keeps every 6th frame; a causal result is ready when its frame is
pushed, a non-causal one num_refs frames later), never taken from the code under test.
"""

from __future__ import annotations

import io
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from cmasktrack.data.frames import FrameError, FrameSource, read_frames


def _index_frames(n: int, h: int = 16, w: int = 24) -> np.ndarray:
    """Frames whose every pixel holds the frame index (so a decoded frame names itself)."""
    return np.stack([np.full((h, w, 3), 10 * i % 256, np.uint8) for i in range(n)])


def _write_lossless(path, frames: np.ndarray, rate: int) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "bgr0"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _ids(frames) -> list:
    return [int(f.image[0, 0, 0]) // 10 for f in frames]


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def test_folder_stride_start_max_frames(tmp_path):
    frames = _index_frames(11)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i}.png")
    src = read_frames(tmp_path, start=2, stride=3, max_frames=3)
    assert len(src) == 3  # frames 2, 5, 8 (11 would be next, but max_frames=3)
    got = list(src.timed())
    assert [f.index for f in got] == [2, 5, 8]
    assert [f.name for f in got] == ["2.png", "5.png", "8.png"]
    assert _ids(got) == [2, 5, 8]
    assert all(f.timestamp is None for f in got)
    assert len(read_frames(tmp_path, stride=4)) == 3  # 0, 4, 8
    assert [f.name for f in read_frames(tmp_path, stride=4)] == ["0.png", "4.png", "8.png"]
    with pytest.raises(ValueError, match="fps needs frame times.*use stride"):
        read_frames(tmp_path, fps=5)
    with pytest.raises(FrameError, match="start=11 but the folder has 11 frames"):
        read_frames(tmp_path, start=11)
    with pytest.raises(ValueError, match="stride or fps, not both"):
        read_frames(tmp_path, stride=2, fps=3)


def test_array_stride_skips_decoding():
    calls = []

    class Frames(np.ndarray):
        def __getitem__(self, key):
            if isinstance(key, (int, np.integer)):
                calls.append(int(key))
            return super().__getitem__(key)

    arr = _index_frames(7).view(Frames)
    assert _ids(read_frames(arr, stride=3)) == [0, 3, 6]
    assert calls == [0, 3, 6]  # the skipped frames were never converted


def test_video_fps_sampling_by_timestamp(tmp_path):
    path = tmp_path / "clip30.mkv"
    _write_lossless(path, _index_frames(20), rate=30)
    src = read_frames(path, fps=5)
    assert src.fps == pytest.approx(30) and src.output_fps == pytest.approx(5)
    got = list(src.timed())
    assert [f.index for f in got] == [0, 6, 12, 18]  # 30 / 5 = every 6th frame
    assert _ids(got) == [0, 6, 12, 18]
    assert [f.timestamp for f in got] == pytest.approx([0, 0.2, 0.4, 0.6])
    # stride: the source's rate divided
    src = read_frames(path, stride=3)
    assert src.output_fps == pytest.approx(10)
    assert [f.index for f in src.timed()] == [0, 3, 6, 9, 12, 15, 18]
    # start in seconds, then every frame up to max_frames
    got = list(read_frames(path, start_time=0.5, max_frames=2).timed())
    assert [f.index for f in got] == [15, 16]
    # a rate above the source's keeps every frame
    assert len(list(read_frames(path, fps=100))) == 20


def test_lavfi_source_matches_pyav():
    av = pytest.importorskip("av")
    if "lavfi" not in av.formats_available:
        pytest.skip("this FFmpeg build has no lavfi")
    spec = "testsrc2=size=40x30:rate=10:duration=0.6"
    with av.open(spec, format="lavfi") as container:  # reference: PyAV directly
        ref = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    src = read_frames(spec, format="lavfi")
    assert src.kind == "av" and src.live and src.fps == pytest.approx(10) and not src.realtime
    got = list(src.timed())
    assert len(got) == len(ref) == 6
    for f, (t, img) in zip(got, ref):
        assert f.timestamp == pytest.approx(t)
        np.testing.assert_array_equal(f.image, img)
    with pytest.raises(RuntimeError, match="one-shot stream"):
        list(src)  # a live source is read once
    endless = read_frames("testsrc2=size=40x30:rate=10", format="lavfi", max_frames=3)
    assert len(list(endless)) == 3
    with pytest.raises(FrameError, match="no input format 'nosuchformat'"):
        read_frames("x", format="nosuchformat")


def test_raw_frames_on_a_pipe():
    frames = np.random.default_rng(0).integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    src = read_frames(io.BytesIO(frames.tobytes()), size="5x6")
    assert src.kind == "raw" and src.live
    got = list(src.timed())
    np.testing.assert_array_equal(np.stack([f.image for f in got]), frames)
    assert [f.index for f in got] == [0, 1, 2, 3]
    assert all(b >= a for a, b in zip([f.timestamp for f in got], [f.timestamp for f in got][1:]))
    # a stream that ends inside a frame: the whole frames, and a warning for the rest
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = list(read_frames(io.BytesIO(frames.tobytes()[:-7]), size=(5, 6)))
    assert len(got) == 3
    assert any("ended inside frame 3" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match=r"raw RGB24 frames of a given size .*--size WxH"):
        read_frames("-")
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        read_frames("-", size="640by480")


def test_not_a_video_fails_at_once_in_one_line(tmp_path):
    pytest.importorskip("av")
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(FrameError) as info:
        read_frames(path)  # at construction, before any frame is asked for
    message = str(info.value)
    assert message.startswith(f"cannot decode video {path}: not a video file or unsupported codec")
    assert "Errno" not in message and "\n" not in message


def test_latest_frame_reader_drops_old_frames_for_a_slow_consumer():
    from cmasktrack.data.frame_types import SourceItem as _Item
    from cmasktrack.data.streams import LatestFrameReader

    produced = []
    done = threading.Event()

    def source():
        for i in range(40):
            produced.append(i)
            yield _Item(i, str(i), i / 100, lambda i=i: np.full((2, 2, 3), i, np.uint8))
            time.sleep(0.002)
        done.set()

    reader = LatestFrameReader(source())
    got = []
    for item in reader:
        got.append(int(item.load()[0, 0, 0]))
        time.sleep(0.03)  # the model is much slower than the camera
    assert done.is_set() and produced == list(range(40))
    assert got == sorted(got) and len(set(got)) == len(got)  # in order, no repeats
    assert got[-1] == 39  # the newest frame is never lost
    assert len(got) < 40 and reader.dropped == 40 - len(got)


def test_realtime_source_end_to_end():
    av = pytest.importorskip("av")
    if "lavfi" not in av.formats_available:
        pytest.skip("this FFmpeg build has no lavfi")
    src = read_frames("testsrc2=size=40x30:rate=25:duration=2", format="lavfi", realtime=True)
    got = []
    for f in src.timed():
        got.append(f.index)
        time.sleep(0.02)
    assert got == sorted(got) and got[-1] == 49
    assert src.dropped == 50 - len(got)


# ----------------------------------------------------------------------------------------------
# track_stream
# ----------------------------------------------------------------------------------------------


def _pulling(frames, pulled):
    for f in frames:
        pulled.append(1)
        yield f


@pytest.mark.parametrize("causal", [True, False])
def test_track_stream_latency(tiny_model, tiny_frames, causal):
    frames = tiny_frames[:4]
    T, num_refs = len(frames), 2
    pulled = []
    seen = []
    for res in tiny_model.track_stream(_pulling(frames, pulled), causal=causal, num_refs=num_refs):
        seen.append((res.index, len(pulled)))
    # a causal result is ready when its frame is pushed; otherwise it waits num_refs frames
    assert seen == [(t, t + 1 if causal else min(t + 1 + num_refs, T)) for t in range(T)]


def test_track_stream_gives_track_video_results(tiny_model, tiny_frames):
    frames = tiny_frames[:3]
    reference = tiny_model.track_video(frames, num_refs=1, progress=False)
    got = list(tiny_model.track_stream(frames, num_refs=1))
    assert len(got) == len(reference.frames) == 3
    for a, b in zip(got, reference.frames):
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.masks == b.masks
    assert tiny_model.track_stream(frames).tracker.results == []  # a stream keeps no results


def test_track_stream_keeps_source_positions_and_times(tiny_model, tmp_path):
    frames = np.stack([np.roll(f, 3 * i, axis=1) for i, f in enumerate([_index_frames(1, 48, 64)[0]] * 9)])
    frames[:, 10:30, 20:40] = (250, 30, 30)
    path = tmp_path / "c.mkv"
    _write_lossless(path, frames, rate=30)
    results = list(tiny_model.track_stream(read_frames(path, fps=10), causal=True, images=True))
    assert [r.source_index for r, _ in results] == [0, 3, 6]
    assert [r.index for r, _ in results] == [0, 1, 2]
    assert [r.timestamp for r, _ in results] == pytest.approx([0, 0.1, 0.2])
    for (r, image), i in zip(results, (0, 3, 6)):
        np.testing.assert_array_equal(image, frames[i])
        line = r.to_json(tiny_model.config.category_names)
        assert line["frame"] == r.index and line["source_frame"] == i and line["name"] == f"{i:06d}"
        assert [t["id"] for t in line["tracks"]] == r.track_ids.tolist()
        np.testing.assert_allclose(np.array([t["box"] for t in line["tracks"]]).reshape(-1, 4), r.boxes, rtol=1e-6)
        assert [t["score"] for t in line["tracks"]] == pytest.approx(r.scores.tolist())
        assert all(t["category"] == tiny_model.config.category_names[t["category_id"] - 1] for t in line["tracks"])


def test_track_stream_stop_flushes_waiting_frames(tiny_model, tiny_frames):
    stream = tiny_model.track_stream(iter(tiny_frames), num_refs=1)
    got = []
    for res in stream:
        got.append(res.index)
        if res.index == 1:
            stream.stop()  # frame 2 has been pushed (frame 1 waited for it): it is finished too
    assert got == [0, 1, 2]
    assert stream.tracker.num_pushed == 3 and stream.frames_done == 3
    with pytest.raises(RuntimeError, match="iterated once"):
        list(stream)


def test_track_stream_warns_about_live_non_causal(tiny_model):
    src = read_frames(io.BytesIO(np.zeros((2, 48, 64, 3), np.uint8).tobytes()), size="64x48")
    with pytest.warns(UserWarning, match="live source .* causal=True"):
        stream = tiny_model.track_stream(src, num_refs=1)
    assert len(list(stream)) == 2


def test_frame_source_is_passed_through():
    src = FrameSource(_index_frames(3), stride=2)
    assert read_frames(src) is src
