"""Tests of cmasktrack.data.frames: sources, conversions, errors, and decoding parity with
OpenCV's cv2.imread (the official code's reader)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cmasktrack.data.frames import (
    Frame,
    FrameError,
    check_frame_sizes,
    list_image_files,
    natural_sort_key,
    read_frames,
    read_image,
    to_rgb_uint8,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _natural(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth image with noise: realistic JPEG content."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / 7.0 + c) * np.cos(y / 5.0 - c) for c in range(3)], -1)
    img = img + _rng(seed).normal(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(path: Path, arr: np.ndarray, mode: str | None = None, **kw) -> Path:
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path, **kw)
    return path


# ----------------------------------------------------------------------------------------------
# Folders and ordering
# ----------------------------------------------------------------------------------------------


def test_natural_sort_key():
    names = ["10.jpg", "2.jpg", "1.jpg", "img_10.png", "img_9.png", "IMG_11.png", "b.jpg", "a.jpg"]
    assert sorted(names, key=natural_sort_key) == [
        "1.jpg", "2.jpg", "10.jpg", "a.jpg", "b.jpg", "img_9.png", "img_10.png", "IMG_11.png",
    ]


def test_folder_natural_order_extensions_and_ignored_entries(tmp_path):
    arrays = {}
    for i, name in enumerate(["10.jpg", "2.PNG", "1.JPEG", "3.bmp", "0.webp"]):
        arr = np.full((8, 12, 3), i * 40, np.uint8)
        arrays[name] = arr
        kw = {"quality": 95} if name.lower().endswith(("jpg", "jpeg")) else {}
        if name.endswith("webp"):
            kw = {"lossless": True}
        _write(tmp_path / name, arr, **kw)
    _write(tmp_path / ".11.jpg", arrays["10.jpg"])  # hidden (e.g. macOS ._ files)
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "5.jpg", arrays["10.jpg"])

    src = read_frames(tmp_path)
    assert len(src) == 5
    assert src.names == ["0.webp", "1.JPEG", "2.PNG", "3.bmp", "10.jpg"]
    frames = list(src)
    assert [f.name for f in frames] == src.names
    for f in frames:
        assert isinstance(f, Frame) and f.image.dtype == np.uint8 and f.image.shape == (8, 12, 3)
        assert np.abs(f.image.astype(int) - arrays[f.name]).max() <= 2  # JPEG of a flat image
    assert [f.name for f in src] == src.names  # folders can be read again
    assert [p.name for p in list_image_files(tmp_path)] == src.names


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such file or directory"):
        read_frames(tmp_path / "nope")
    with pytest.raises(FrameError, match="no image files"):
        read_frames(tmp_path)
    (tmp_path / "video1").mkdir()
    with pytest.raises(FrameError, match="subfolder"):
        read_frames(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(FrameError, match="clip.mp4"):
        read_frames(tmp_path)


# ----------------------------------------------------------------------------------------------
# Decoding parity with cv2.imread
# ----------------------------------------------------------------------------------------------


def _cv2_rgb(cv2, path: Path, flags=None) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR if flags is None else flags)
    assert img is not None
    return img[:, :, ::-1]


def test_jpeg_png_bmp_webp_decode_identically_to_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    files = []
    for i, (h, w) in enumerate([(48, 64), (37, 53), (90, 160)]):
        img = _natural(h, w, seed=i)
        for sub in (0, 1, 2):
            for q in (75, 95):
                for prog in (False, True):
                    files.append(_write(tmp_path / f"p{i}_{sub}_{q}_{int(prog)}.jpg", img,
                                        quality=q, subsampling=sub, progressive=prog))
        path = tmp_path / f"cv{i}.jpg"
        cv2.imwrite(str(path), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        files.append(path)
        files.append(_write(tmp_path / f"g{i}.jpg", img[:, :, 0], "L", quality=90))
        files.append(_write(tmp_path / f"x{i}.png", img))
        files.append(_write(tmp_path / f"x{i}.bmp", img))
        files.append(_write(tmp_path / f"x{i}.webp", img, quality=80))
    for path in files:
        ref = _cv2_rgb(cv2, path)
        np.testing.assert_array_equal(read_image(path), ref, err_msg=path.name)
        np.testing.assert_array_equal(read_image(path, decoder="opencv"), ref, err_msg=path.name)


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_exif_orientation_applied_like_opencv(tmp_path, ext):
    cv2 = pytest.importorskip("cv2")
    img = _rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    # hand-written expectations of the 8 EXIF orientations (what the stored image must
    # undergo to be displayed upright)
    expected = {
        1: img,
        2: img[:, ::-1],
        3: img[::-1, ::-1],
        4: img[::-1, :],
        5: img.transpose(1, 0, 2),
        6: np.rot90(img, -1),
        7: np.rot90(img, 1)[:, ::-1],  # transverse: out[i, j] = img[H-1-j, W-1-i]
        8: np.rot90(img, 1),
    }
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = _write(tmp_path / f"o{orientation}.{ext}", img, exif=exif.tobytes(),
                      **({"quality": 100, "subsampling": 0} if ext == "jpg" else {}))
        got = read_image(path)
        np.testing.assert_array_equal(got, _cv2_rgb(cv2, path), err_msg=f"orientation {orientation}")
        if ext == "png":  # lossless: compare with the hand-written transform too
            np.testing.assert_array_equal(got, expected[orientation], err_msg=f"orientation {orientation}")
        raw = read_image(path, exif_orientation=False)
        ref_raw = _cv2_rgb(cv2, path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        np.testing.assert_array_equal(raw, ref_raw)
        assert raw.shape == (20, 30, 3)


def test_mode_conversions_match_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = _rng(2)
    img = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    cases = {}
    g16 = rng.integers(0, 65536, (16, 24), dtype=np.uint16)
    g16[0, :4] = [255, 256, 32767, 65535]
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    cases["g16.png"] = np.repeat((g16 >> 8).astype(np.uint8)[:, :, None], 3, 2)
    c16 = rng.integers(0, 65536, (16, 24, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), c16)  # written BGR
    cases["c16.png"] = (c16 >> 8).astype(np.uint8)[:, :, ::-1]
    rgba = rng.integers(0, 256, (16, 24, 4), dtype=np.uint8)
    _write(tmp_path / "rgba.png", rgba, "RGBA")
    cases["rgba.png"] = rgba[:, :, :3]  # alpha dropped, not composited
    la = rng.integers(0, 256, (16, 24, 2), dtype=np.uint8)
    _write(tmp_path / "la.png", la, "LA")
    cases["la.png"] = np.repeat(la[:, :, :1], 3, 2)
    bits = rng.integers(0, 2, (16, 24)).astype(bool)
    Image.fromarray(bits).convert("1").save(tmp_path / "bits.png")
    cases["bits.png"] = np.repeat((bits * 255).astype(np.uint8)[:, :, None], 3, 2)
    pal = Image.fromarray(img).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "pal.png", transparency=0)
    cases["pal.png"] = np.asarray(pal.convert("RGB"))
    Image.fromarray(img).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cases["cmyk.jpg"] = None  # no independent closed form; OpenCV is the reference
    for name, expected in cases.items():
        got = read_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (16, 24, 3), name
        np.testing.assert_array_equal(got, _cv2_rgb(cv2, tmp_path / name), err_msg=name)
        if expected is not None:
            np.testing.assert_array_equal(got, expected, err_msg=name)


def test_corrupt_truncated_and_missing_files(tmp_path):
    good = _write(tmp_path / "0.jpg", _natural(64, 64), quality=90)
    data = good.read_bytes()
    (tmp_path / "1.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (tmp_path / "2.png").write_bytes(_rng(3).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(FrameError, match="1.jpg"):
        read_image(tmp_path / "1.jpg")
    with pytest.raises(FrameError, match="2.png"):
        read_image(tmp_path / "2.png")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.jpg")
    frames = iter(read_frames(tmp_path))
    assert next(frames).name == "0.jpg"
    with pytest.raises(FrameError, match="1.jpg"):
        next(frames)
    with pytest.raises(ValueError, match="decoder"):
        read_frames(tmp_path, decoder="imageio")
    try:
        import cv2  # noqa: F401
    except ImportError:
        return
    with pytest.raises(FrameError, match="2.png"):
        read_image(tmp_path / "2.png", decoder="opencv")


# ----------------------------------------------------------------------------------------------
# In-memory sources
# ----------------------------------------------------------------------------------------------


def test_numpy_and_torch_video_arrays():
    video = _rng(4).integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)
    for source in (video, torch.from_numpy(video)):
        src = read_frames(source)
        assert len(src) == 4
        frames = list(src)
        assert [f.name for f in frames] == ["000000", "000001", "000002", "000003"]
        for i, f in enumerate(frames):
            np.testing.assert_array_equal(f.image, video[i])
            assert f.image.flags.c_contiguous


def test_list_of_mixed_items_and_conversions(tmp_path):
    rgb = _rng(5).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    gray = rgb[:, :, 1].copy()
    rgba = np.concatenate([rgb, np.full((6, 8, 1), 7, np.uint8)], axis=2)
    path = _write(tmp_path / "frame.png", rgb)
    items = [rgb, gray, gray[:, :, None], rgba, str(path), path, Image.fromarray(rgb),
             Frame("named", rgb), torch.from_numpy(rgb)]
    src = read_frames(items)
    assert len(src) == len(items)
    frames = list(src)
    for f in frames:
        assert f.image.shape == (6, 8, 3) and f.image.dtype == np.uint8
    np.testing.assert_array_equal(frames[1].image, np.stack([gray] * 3, -1))
    np.testing.assert_array_equal(frames[2].image, np.stack([gray] * 3, -1))
    for i in (0, 3, 4, 5, 6, 7, 8):
        np.testing.assert_array_equal(frames[i].image, rgb)
    assert frames[4].name == "frame.png" and frames[7].name == "named" and frames[0].name == "000000"


def test_array_errors_are_explicit():
    with pytest.raises(FrameError, match="float32.*255"):
        to_rgb_uint8(np.zeros((4, 4, 3), np.float32), "frame 3")
    with pytest.raises(FrameError, match="bool"):
        to_rgb_uint8(np.zeros((4, 4), bool))
    with pytest.raises(FrameError, match=">> 8"):
        to_rgb_uint8(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(FrameError, match="channels-first"):
        to_rgb_uint8(np.zeros((3, 40, 50), np.uint8))
    with pytest.raises(FrameError, match=r"\(T, H, W, 3\)"):
        read_frames(np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(FrameError, match="empty"):
        read_frames([])
    with pytest.raises(FrameError, match="frame 1"):
        list(read_frames([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.float64)]))
    with pytest.raises(TypeError, match="cannot read frames"):
        read_frames(42)


def test_generator_is_streamed_lazily_and_read_once():
    produced = []

    def gen():
        for i in range(5):
            produced.append(i)
            yield np.full((4, 5, 3), i, np.uint8)

    src = read_frames(gen())
    with pytest.raises(TypeError):
        len(src)
    assert src.length is None
    it = iter(src)
    first = next(it)
    assert first.image[0, 0, 0] == 0 and produced == [0]  # nothing decoded ahead
    assert [int(f.image[0, 0, 0]) for f in it] == [1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="already been consumed"):
        list(src)
    with pytest.raises(FrameError, match="no frames"):
        list(read_frames(iter([])))


def test_frames_of_different_sizes(tmp_path):
    frames = [np.zeros((10, 20, 3), np.uint8), np.zeros((10, 20, 3), np.uint8), np.zeros((12, 20, 3), np.uint8)]
    with pytest.raises(FrameError, match=r"frame 2 \('000002'\) is 20x12.*first frame \('000000'\) is 20x10"):
        list(read_frames(frames))
    assert len(list(read_frames(frames, check_size=False))) == 3
    named = [Frame("a.jpg", frames[0]), Frame("b.jpg", frames[2])]
    with pytest.raises(FrameError, match="b.jpg"):
        list(check_frame_sizes(iter(named)))


def test_single_image_file_and_unsupported_file(tmp_path):
    img = _rng(6).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    path = _write(tmp_path / "one.png", img)
    frames = list(read_frames(path))
    assert len(frames) == 1 and frames[0].name == "one.png"
    np.testing.assert_array_equal(frames[0].image, img)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(FrameError, match="unsupported file type"):
        read_frames(tmp_path / "a.txt")


# ----------------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------------


def test_lossless_video_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    video = _rng(7).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    src = read_frames(path)
    assert src.kind == "video"
    frames = list(src)
    assert [f.name for f in frames] == [f"{i:06d}" for i in range(5)]
    for f, ref in zip(frames, video):
        np.testing.assert_array_equal(f.image, ref)


def test_mp4_video_length_hint(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    video = np.stack([_natural(48, 64, seed=i) for i in range(6)])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    src = read_frames(path)
    assert src.length is None and src.length_hint == 6
    frames = list(src)
    assert len(frames) == 6
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    # lossy codec: the frames are recognisably the same images
    assert np.abs(frames[3].image.astype(float) - video[3]).mean() < 25


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_video_display_rotation_is_applied_like_opencv(tmp_path, degrees):
    av = pytest.importorskip("av")
    path = tmp_path / "rotated.mp4"
    video = np.stack([_natural(48, 64, seed=i) for i in range(3)])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if not hasattr(stream, "set_display_rotation"):
            pytest.skip("this PyAV cannot write a display matrix")
        stream.set_display_rotation(degrees)  # counter-clockwise
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:  # reference: the stored frames, rotated by hand
        stored = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    frames = list(read_frames(path))
    assert len(frames) == 3
    for f, raw in zip(frames, stored):
        np.testing.assert_array_equal(f.image, np.rot90(raw, degrees // 90))
    try:
        import cv2
    except ImportError:
        return
    cap = cv2.VideoCapture(str(path))  # OpenCV auto-rotates by default
    ok, first = cap.read()
    cap.release()
    if ok:
        assert first.shape == frames[0].image.shape
        assert np.abs(first[:, :, ::-1].astype(int) - frames[0].image).mean() < 2


def test_video_without_pyav_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00" * 100)
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(ImportError, match=r"cmasktrack\[video\]"):
        read_frames(path)


def test_corrupt_video(tmp_path):
    pytest.importorskip("av")
    path = tmp_path / "bad.mp4"
    path.write_bytes(_rng(8).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(FrameError, match="bad.mp4"):
        list(read_frames(path))


def test_animated_gif(tmp_path):
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    idx = _rng(9).integers(0, 4, (3, 10, 12))
    video = palette[idx]
    images = [Image.fromarray(f) for f in video]
    images[0].save(tmp_path / "anim.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
    src = read_frames(tmp_path / "anim.gif")
    assert len(src) == 3
    frames = list(src)
    for f, ref in zip(frames, video):
        np.testing.assert_array_equal(f.image, ref)
