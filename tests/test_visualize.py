"""Tests for cmasktrack.visualize: colours, blending, boxes, labels, GIF / MP4 / PNG output, errors.

Expected pixel values are computed here from the definitions (``alpha * color + (1 - alpha) *
pixel`` inside masks, the box outline on its inclusive corners, untouched pixels elsewhere),
never taken from the renderer's own output.
"""

from __future__ import annotations

import colorsys
import importlib.util
import sys
import warnings
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from cmasktrack.video_result import FrameResult, VideoResult, encode_mask
from cmasktrack.visualize import render_frame, render_video, track_color
from cmasktrack.visualize import _label_text

H, W = 33, 47  # odd on purpose: MP4 must pad to even sizes
T = 4
NAMES = ["person", "dog", "car"]


def _rect(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _box_of(mask: np.ndarray) -> list:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max(), ys.max()]


def _blend(color, pixels: np.ndarray, alpha: float) -> np.ndarray:
    """Reference blend in float64 (the renderer truncates to uint8: allow 1 off)."""
    return alpha * np.asarray(color, dtype=np.float64) + (1 - alpha) * pixels.astype(np.float64)


def _video(seed: int = 0):
    """Three tracks (ids 3, 4, 12) over 4 frames: track 3 moves right, track 4 sits still,
    track 12 appears in frames 1-2 only; detection order is shuffled per frame."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(T)]
    results, masks = [], []
    for t in range(T):
        objs = {3: (_rect(2, 12, 2 + 3 * t, 12 + 3 * t), 0.9, 1), 4: (_rect(18, 30, 30, 44), 0.8, 2)}
        if t in (1, 2):
            objs[12] = (_rect(20, 28, 4, 14), 0.6, 3)
        order = sorted(objs, reverse=bool(t % 2))
        results.append(FrameResult(
            index=t, name=f"{t:05d}.jpg",
            boxes=np.array([_box_of(objs[k][0]) for k in order], dtype=np.float32).reshape(-1, 4),
            scores=np.array([objs[k][1] for k in order], dtype=np.float32),
            labels=np.array([objs[k][2] for k in order], dtype=np.int64),
            track_ids=np.array(order, dtype=np.int64),
            masks=[encode_mask(objs[k][0]) for k in order],
        ))
        masks.append({k: v[0] for k, v in objs.items()})
    return VideoResult(results, H, W, NAMES), frames, masks


@pytest.fixture(scope="module")
def video():
    return _video()


# ----------------------------------------------------------------------------------------------
# Colours
# ----------------------------------------------------------------------------------------------


def test_track_color_deterministic_and_distinct():
    cols = [track_color(i) for i in range(200)]
    assert cols == [track_color(i) for i in range(200)]
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in cols)
    assert len(set(cols)) == 200
    hues = [colorsys.rgb_to_hsv(*(v / 255 for v in c))[0] for c in cols]
    for i in range(199):  # neighbouring ids: hues far apart on the colour wheel
        d = abs(hues[i] - hues[i + 1])
        assert min(d, 1 - d) > 0.3, (i, cols[i], cols[i + 1])
    # the first ten ids are pairwise clearly different colours
    c10 = np.array(cols[:10], dtype=float)
    dist = np.linalg.norm(c10[:, None] - c10[None], axis=-1) + np.eye(10) * 1e9
    assert dist.min() > 40
    # any int-like id works (numpy ints, large ids)
    assert track_color(np.int64(7)) == track_color(7)
    assert track_color(10**9) != track_color(10**9 + 1)


def test_label_text_format():
    assert _label_text(3, 1, 0.9149, NAMES) == "#3 person 0.91"
    assert _label_text(12, 3, 0.6, NAMES) == "#12 car 0.60"
    assert _label_text(5, 9, 0.5, NAMES) == "#5 9 0.50"  # id without a name
    assert _label_text(5, 2, 0.5, ()) == "#5 2 0.50"


# ----------------------------------------------------------------------------------------------
# render_frame
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.8])
def test_masks_tinted_outside_unchanged(video, alpha):
    result, frames, masks = video
    for t in range(T):
        out = render_frame(frames[t], result.frames[t], NAMES, alpha=alpha, draw_boxes=False)
        assert out.dtype == np.uint8 and out.shape == (H, W, 3)
        union = np.zeros((H, W), bool)
        for tid, m in masks[t].items():
            expected = _blend(track_color(tid), frames[t][m], alpha)
            assert np.abs(out[m].astype(float) - expected).max() <= 1.0, (t, tid)
            union |= m
        np.testing.assert_array_equal(out[~union], frames[t][~union])
    # the input is not modified
    np.testing.assert_array_equal(frames[0], _video()[1][0])


def test_same_colour_on_every_frame(video):
    """alpha=1 paints the pure track colour: one colour per track on every frame, whatever
    the detection order, score or position; different tracks get different colours."""
    result, frames, masks = video
    seen = {}
    for t in range(T):
        out = render_frame(frames[t], result.frames[t], NAMES, alpha=1.0, draw_boxes=False)
        for tid, m in masks[t].items():
            colours = np.unique(out[m].reshape(-1, 3), axis=0)
            assert len(colours) == 1, (t, tid)
            seen.setdefault(tid, set()).add(tuple(int(v) for v in colours[0]))
    assert all(len(v) == 1 for v in seen.values()), seen
    assert len({next(iter(v)) for v in seen.values()}) == len(seen)
    assert seen[3] == {track_color(3)} and seen[12] == {track_color(12)}


def test_same_colour_across_videos():
    """A track id has the same colour in an unrelated video of another size."""
    h, w = 20, 30
    img = np.full((h, w, 3), 77, np.uint8)
    m = _rect(5, 15, 5, 25, h, w)
    fr = FrameResult(0, "a", np.array([_box_of(m)], np.float32), np.array([0.5], np.float32),
                     np.array([2]), np.array([4]), [encode_mask(m)])
    out = render_frame(img, fr, alpha=1.0, draw_boxes=False)
    assert set(map(tuple, out[m].reshape(-1, 3).tolist())) == {track_color(4)}
    result, frames, masks = _video(seed=5)
    out2 = render_frame(frames[0], result.frames[0], alpha=1.0, draw_boxes=False)
    assert set(map(tuple, out2[masks[0][4]].reshape(-1, 3).tolist())) == {track_color(4)}


@pytest.mark.parametrize("scores,winner", [((0.9, 0.4), 1), ((0.3, 0.7), 2)])
def test_overlap_goes_to_higher_score(scores, winner):
    img = np.full((20, 20, 3), 100, np.uint8)
    a, b = _rect(2, 12, 2, 12, 20, 20), _rect(6, 16, 6, 16, 20, 20)
    fr = FrameResult(0, "x", np.array([_box_of(a), _box_of(b)], np.float32), np.array(scores, np.float32),
                     np.array([1, 1]), np.array([1, 2]), [encode_mask(a), encode_mask(b)])
    out = render_frame(img, fr, alpha=0.5, draw_boxes=False)
    both = a & b
    exp_both = _blend(track_color(winner), img[both], 0.5)
    assert np.abs(out[both].astype(float) - exp_both).max() <= 1
    for tid, m in ((1, a & ~b), (2, b & ~a)):
        assert np.abs(out[m].astype(float) - _blend(track_color(tid), img[m], 0.5)).max() <= 1
    np.testing.assert_array_equal(out[~(a | b)], img[~(a | b)])


@pytest.mark.parametrize("line_width", [1, 2])
def test_boxes_outline_inclusive_corners(line_width):
    """Boxes are drawn on the inclusive corners, line_width pixels inwards; nothing else changes."""
    img = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    boxes = np.array([[3.6, 4.0, 15.0, 20.6], [20.0, 2.0, 37.0, 27.0]], np.float32)
    m = [_rect(0, 1, 0, 1, 30, 40)] * 2
    fr = FrameResult(0, "x", boxes, np.array([0.9, 0.8], np.float32), np.array([1, 2]), np.array([0, 7]),
                     [encode_mask(x) for x in m])
    out = render_frame(img, fr, draw_masks=False, draw_labels=False, line_width=line_width)
    expected = img.copy()
    for (x1, y1, x2, y2), tid in zip(np.round(boxes).astype(int), (0, 7)):
        ring = np.zeros((30, 40), bool)
        ring[y1:y2 + 1, x1:x2 + 1] = True
        ring[y1 + line_width:y2 + 1 - line_width, x1 + line_width:x2 + 1 - line_width] = False
        expected[ring] = track_color(tid)
    np.testing.assert_array_equal(out, expected)


def test_boxes_outside_image_are_clipped():
    img = np.zeros((20, 20, 3), np.uint8)
    fr = FrameResult(0, "x", np.array([[-5.0, -3.0, 30.0, 25.0]], np.float32), np.array([0.5], np.float32),
                     np.array([1]), np.array([2]), [encode_mask(np.zeros((20, 20), bool))])
    out = render_frame(img, fr, draw_masks=False, draw_labels=False, line_width=1)
    expected = np.zeros_like(img)
    ring = np.ones((20, 20), bool)
    ring[1:19, 1:19] = False
    expected[ring] = track_color(2)
    np.testing.assert_array_equal(out, expected)


def test_labels_drawn_inside_box_in_track_colours():
    h, w = 60, 240
    img = np.full((h, w, 3), 128, np.uint8)
    box = [10, 10, 230, 50]
    mask = np.zeros((h, w), bool)
    fr = FrameResult(0, "x", np.array([box], np.float32), np.array([0.91], np.float32), np.array([1]),
                     np.array([3]), [encode_mask(mask)])
    plain = render_frame(img, fr, NAMES, draw_masks=False, draw_labels=False, line_width=1)
    sizes = {}
    for size in (10, 16):
        out = render_frame(img, fr, NAMES, draw_masks=False, font_size=size, line_width=1)
        changed = np.any(out != plain, axis=-1)
        ys, xs = np.nonzero(changed)
        # the label sits inside the box at its top-left corner
        assert ys.min() >= box[1] + 1 and xs.min() >= box[0] + 1 and ys.max() <= box[3] and xs.max() <= box[2]
        assert ys.min() <= box[1] + 2 + size // 2 and xs.min() <= box[0] + 3
        region = out[changed]
        colour = np.array(track_color(3))
        r, g, b = track_color(3)
        text = np.array((0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255))
        assert (region == colour).all(-1).sum() > 0.3 * len(region)  # filled label background
        assert (np.abs(region.astype(int) - text).sum(-1) < 60).sum() > 10  # the text
        sizes[size] = (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        # outside the box everything is as before
        outside = np.ones((h, w), bool)
        outside[box[1]:box[3] + 1, box[0]:box[2] + 1] = False
        np.testing.assert_array_equal(out[outside], img[outside])
    assert sizes[16][0] > sizes[10][0] and sizes[16][1] > sizes[10][1]


def test_empty_frame_returns_copy():
    img = np.random.default_rng(2).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    empty = FrameResult(0, "x", np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                        np.zeros(0, np.int64), [])
    for fr in (empty, None):
        out = render_frame(img, fr)
        np.testing.assert_array_equal(out, img)
        assert out is not img


def test_render_frame_errors(video):
    result, frames, _ = video
    with pytest.raises(ValueError, match="mask of track .* is 47x33 .* image is 40x33"):
        render_frame(frames[0][:, :40], result.frames[0])
    with pytest.raises(ValueError, match="uint8"):
        render_frame(frames[0].astype(np.float32), result.frames[0])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        render_frame(frames[0][..., 0], result.frames[0])
    with pytest.raises(ValueError, match="alpha"):
        render_frame(frames[0], result.frames[0], alpha=1.5)


# ----------------------------------------------------------------------------------------------
# render_video
# ----------------------------------------------------------------------------------------------


def _check_mask_colours(img: np.ndarray, frame: np.ndarray, masks: dict, alpha: float, tol: float) -> None:
    for tid, m in masks.items():
        inner = m & np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
        inner &= np.roll(inner, 1, 0) & np.roll(inner, -1, 0) & np.roll(inner, 1, 1) & np.roll(inner, -1, 1)
        expected = _blend(track_color(tid), frame[inner], alpha).mean(0)
        got = img[inner].astype(float).mean(0)
        assert np.abs(got - expected).max() <= tol, (tid, got, expected)


def test_gif(video, tmp_path):
    result, frames, masks = video
    path = render_video(result, frames, tmp_path / "sub" / "out.gif", fps=5, draw_boxes=False)
    assert path == tmp_path / "sub" / "out.gif" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["out.gif"]  # no temporary left
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == T and gif.size == (W, H)
        assert gif.info.get("loop") == 0
        for t in range(T):
            gif.seek(t)
            assert gif.info["duration"] == 200
            rgb = np.asarray(gif.convert("RGB"))
            _check_mask_colours(rgb, frames[t], masks[t], 0.5, tol=12)


def test_png_folder(video, tmp_path):
    result, frames, masks = video
    for target in (str(tmp_path / "a") + "/", tmp_path / "b"):
        out = render_video(result, frames, target, alpha=0.6, draw_boxes=False)
        assert out.is_dir()
        assert sorted(p.name for p in out.iterdir()) == [f"{t:06d}.png" for t in range(T)]
        for t in range(T):
            img = np.asarray(Image.open(out / f"{t:06d}.png").convert("RGB"))
            assert img.shape == (H, W, 3)
            union = np.zeros((H, W), bool)
            for tid, m in masks[t].items():
                assert np.abs(img[m].astype(float) - _blend(track_color(tid), frames[t][m], 0.6)).max() <= 1
                union |= m
            np.testing.assert_array_equal(img[~union], frames[t][~union])


def test_frame_sources(video, tmp_path):
    """A folder of frame files and a (T, H, W, 3) array render like the list of arrays."""
    result, frames, _ = video
    src = tmp_path / "frames"
    src.mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(src / f"{t + 1}.png")  # natural order: 1..4
    a = render_video(result, src, tmp_path / "from_dir")
    b = render_video(result, np.stack(frames), tmp_path / "from_array")
    c = render_video(result, iter(frames), tmp_path / "from_iter", progress=True)
    for t in range(T):
        ref = np.asarray(Image.open(a / f"{t:06d}.png"))
        expected = render_frame(frames[t], result.frames[t], NAMES)
        np.testing.assert_array_equal(ref, expected)
        np.testing.assert_array_equal(np.asarray(Image.open(b / f"{t:06d}.png")), expected)
        np.testing.assert_array_equal(np.asarray(Image.open(c / f"{t:06d}.png")), expected)


def test_mp4(video, tmp_path):
    av = pytest.importorskip("av")
    result, frames, masks = video
    path = render_video(result, frames, tmp_path / "out.mp4", fps=8, draw_boxes=False, crf=0)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 8
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == T
    assert all(d.shape == (H + 1, W + 1, 3) for d in decoded)  # padded to even sizes
    for t in range(T):
        _check_mask_colours(decoded[t][:H, :W], frames[t], masks[t], 0.5, tol=20)


def test_mp4_without_av(video, tmp_path, monkeypatch):
    result, frames, _ = video
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"pip install cmasktrack\[video\]"):
        render_video(result, frames, tmp_path / "out.mp4")
    assert not list(tmp_path.iterdir())


def test_errors(video, tmp_path):
    result, frames, _ = video
    with pytest.raises(ValueError, match="result has 4 frames but the frames given have 3"):
        render_video(result, frames[:3], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="result has 4 frames but the frames given have 3"):
        render_video(result, (f for f in frames[:3]), tmp_path / "y.gif")
    with pytest.raises(ValueError, match="more than the result's 4 frames"):
        render_video(result, (f for f in frames + frames[:1]), tmp_path / "z.gif")
    if importlib.util.find_spec("av") is not None:
        # mpeg4 has no look-ahead: frames are muxed before the error, the partial file is removed
        with pytest.raises(ValueError, match="frames given have more"):
            render_video(result, iter(frames + frames), tmp_path / "z.mp4", codec="mpeg4")
        with pytest.raises(ValueError, match="codec 'nosuchcodec'"):
            render_video(result, frames, tmp_path / "c.mp4", codec="nosuchcodec")
    big = [np.zeros((H + 2, W, 3), np.uint8)] * T
    with pytest.raises(ValueError, match=r"frame 0 .* is 47x35 .* result is for 47x33"):
        render_video(result, big, tmp_path / "s.gif")
    with pytest.raises(ValueError, match=r"'\.avi'.*\.gif or \.mp4"):
        render_video(result, frames, tmp_path / "x.avi")
    for fps in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="fps"):
            render_video(result, frames, tmp_path / "x.gif", fps=fps)
    (tmp_path / "d.gif").mkdir()  # an existing folder is written as PNG frames
    assert render_video(result, frames, tmp_path / "d.gif").is_dir()
    assert len(list((tmp_path / "d.gif").iterdir())) == T
    empty = VideoResult([], 0, 0, NAMES)
    with pytest.raises(ValueError, match="no frames"):
        render_video(empty, frames, tmp_path / "e.gif")
    # nothing half-written is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.gif"]


# ----------------------------------------------------------------------------------------------
# Labels: spacing, size, placement
# ----------------------------------------------------------------------------------------------


def _label_image(track_id: int, label: int, score: float, size: int, h: int = 80, w: int = 400):
    img = np.full((h, w, 3), 128, np.uint8)
    box = [5, 5, w - 6, h - 6]
    fr = FrameResult(0, "x", np.array([box], np.float32), np.array([score], np.float32), np.array([label]),
                     np.array([track_id]), [encode_mask(np.zeros((h, w), bool))])
    return render_frame(img, fr, ["square", "ring", "star"], draw_masks=False, font_size=size, line_width=1)


def _ink_gaps(out: np.ndarray, track_id: int):
    """Runs of text-free columns inside the label's text: [(start, width)] from the text's first
    ink column, found from the pixels (the label is the filled rectangle inside the box outline
    of ``_label_image``)."""
    colour = np.array(track_color(track_id))
    interior = out[6:-6, 6:-6]  # inside the box outline
    label = (interior == colour).all(-1)  # the filled label background
    rows = np.nonzero(label.any(1))[0]
    cols = np.nonzero(label.any(0))[0]
    region = interior[rows.min():rows.max() + 1, cols.min():cols.max() + 1].astype(int)
    ink = (np.abs(region - colour).sum(-1) > 60).any(0)  # columns where text is drawn
    xs = np.nonzero(ink)[0]
    gaps, start = [], None
    for x in range(xs.min(), xs.max() + 1):
        if not ink[x] and start is None:
            start = x
        if ink[x] and start is not None:
            gaps.append((start - xs.min(), x - start))
            start = None
    return gaps


@pytest.mark.parametrize("size", [10, 11, 12, 20])
@pytest.mark.parametrize("bundled", [False, True])
def test_label_words_are_spaced_as_words(monkeypatch, size, bundled):
    """'#3 ring 0.98' reads as three words: the two widest gaps between ink columns are the
    spaces, wider than any gap inside a word (not '#3 ri ng0.98'). (torchvision's label drawing
    with Pillow's bundled font, used before, fails this for '#1 square 0.90' at 10-12 px.)"""
    import cmasktrack.visualize as vis

    if bundled:  # no system font: Pillow's bundled font (used at >= 12 px)
        monkeypatch.setattr(vis, "_system_font", lambda: None)
    vis._label_font.cache_clear()
    try:
        font = vis._label_font(None, size)
        for track_id, label, score in ((3, 2, 0.98), (1, 1, 0.90), (2, 3, 0.70)):
            text = _label_text(track_id, label, score, ["square", "ring", "star"])
            gaps = _ink_gaps(_label_image(track_id, label, score, size), track_id)
            assert len(gaps) >= 4, (text, gaps)  # at least the two spaces, the "." and gaps inside words
            widest = sorted(gaps, key=lambda g: -g[1])[:2]
            others = [g for g in gaps if g not in widest]
            assert all(g[1] > o[1] for g in widest for o in others), (text, gaps)
            # the widest gaps are where the spaces are (word ends measured with the font)
            words = text.split(" ")
            for (x, width), k in zip(sorted(widest), (1, 2)):
                end, begin = font.getlength(" ".join(words[:k])), font.getlength(" ".join(words[:k]) + " ")
                assert x <= begin + 1 and x + width >= end - 1, (text, x, width, end, begin)  # the gap is the space
    finally:
        vis._label_font.cache_clear()


def test_font_is_scaled_to_the_frame():
    from cmasktrack.visualize import _default_font_size

    assert _default_font_size(192, 320) == 11  # the minimum: 3% of 192 is 5.8
    assert _default_font_size(1080, 1920) == 32  # 3% of 1080
    heights = {}
    for h, w in ((192, 320), (1080, 1920)):
        img = np.full((h, w, 3), 128, np.uint8)
        fr = FrameResult(0, "x", np.array([[10, 10, w - 10, h - 10]], np.float32), np.array([0.9], np.float32),
                         np.array([1]), np.array([3]), [encode_mask(np.zeros((h, w), bool))])
        out = render_frame(img, fr, NAMES, draw_masks=False)
        count = (out == np.array(track_color(3))).all(-1).sum(1)
        rows = np.nonzero((count > 20) & (count < w // 2))[0]  # the label's rows, not the box's top and bottom
        heights[h] = rows.max() - rows.min() + 1
    assert 12 <= heights[192] <= 22 and 32 <= heights[1080] <= 50


def test_labels_stay_in_the_frame_and_do_not_cover_each_other():
    from cmasktrack.visualize import _label_font

    h, w = 192, 320
    img = np.full((h, w, 3), 128, np.uint8)
    # two tracks on the same spot, one at the right edge, one at the bottom edge
    boxes = [[100, 60, 200, 120], [102, 62, 198, 118], [290, 80, 319, 120], [10, 170, 80, 191]]
    ids, scores = [3, 4, 12, 5], [0.9, 0.8, 0.7, 0.6]
    fr = FrameResult(0, "x", np.array(boxes, np.float32), np.array(scores, np.float32), np.array([1, 2, 3, 1]),
                     np.array(ids), [encode_mask(np.zeros((h, w), bool))] * 4)
    out = render_frame(img, fr, NAMES, draw_masks=False, line_width=1)
    font = _label_font(None, 11)
    for tid, label, score in zip(ids, [1, 2, 3, 1], scores):
        text = f"#{tid} {NAMES[label - 1]} {score:.2f}"
        filled = (out == np.array(track_color(tid))).all(-1)
        label_rows = filled.sum(1) >= font.getlength(text)  # a whole label row of background
        assert label_rows.any(), text  # each label is fully visible: not cut by the frame nor covered


def test_place_labels_property():
    from cmasktrack.visualize import _overlaps, _place_labels

    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 8))
        x1 = rng.integers(0, 300, n)
        y1 = rng.integers(0, 180, n)
        boxes = np.stack([x1, y1, np.minimum(x1 + rng.integers(5, 80, n), 319),
                          np.minimum(y1 + rng.integers(5, 60, n), 191)], 1)
        sizes = [(int(rng.integers(30, 120)), 15) for _ in range(n)]
        corners = _place_labels(boxes, sizes, list(range(n)), 320, 192, inset=1)
        rects = [(x, y, x + s[0], y + s[1]) for (x, y), s in zip(corners, sizes)]
        assert all(0 <= r[0] and 0 <= r[1] and r[2] <= 320 and r[3] <= 192 for r in rects)
        assert not any(_overlaps(a, b) for i, a in enumerate(rects) for b in rects[i + 1:])


# ----------------------------------------------------------------------------------------------
# OverlayWriter: streaming, closing early, size warnings, early validation
# ----------------------------------------------------------------------------------------------


def test_overlay_writer_closes_a_valid_gif_when_interrupted(video, tmp_path):
    from cmasktrack.visualize import OverlayWriter

    result, frames, masks = video
    path = tmp_path / "live.gif"
    with pytest.raises(KeyboardInterrupt):
        with OverlayWriter(path, fps=4, category_names=NAMES, draw_boxes=False) as writer:
            for t in range(2):
                writer.write(frames[t], result.frames[t])
            raise KeyboardInterrupt  # Ctrl-C mid-stream: what was drawn is kept, the file is complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.gif"]
    with Image.open(path) as gif:
        assert gif.n_frames == 2 and gif.info.get("loop") == 0
        for t in range(2):
            gif.seek(t)
            assert gif.info["duration"] == 250
            _check_mask_colours(np.asarray(gif.convert("RGB")), frames[t], masks[t], 0.5, tol=12)
    # another error: nothing is left behind
    with pytest.raises(RuntimeError):
        with OverlayWriter(tmp_path / "broken.gif") as writer:
            writer.write(frames[0], result.frames[0])
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.gif"]


def test_overlay_writer_mp4_is_closed_properly(video, tmp_path):
    av = pytest.importorskip("av")
    from cmasktrack.visualize import OverlayWriter

    result, frames, _ = video
    writer = OverlayWriter(tmp_path / "o.mp4", fps=7.5)
    for t in range(3):
        writer.write(frames[t], result.frames[t])
    assert writer.close() == tmp_path / "o.mp4"
    with av.open(str(tmp_path / "o.mp4")) as container:
        assert container.streams.video[0].average_rate == Fraction(15, 2)
        assert len(list(container.decode(video=0))) == 3


def test_gif_size_warning_suggests_mp4(video, tmp_path):
    from cmasktrack.visualize import OverlayWriter

    result, frames, _ = video
    with pytest.warns(UserWarning, match=r"will be about .* MB \(500 frames of 47x33\).*big\.mp4"):
        writer = OverlayWriter(tmp_path / "big.gif", expected_frames=500, gif_warn_bytes=100_000)
        writer.write(frames[0], result.frames[0])  # the estimate after the first frame
    writer.abort()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer = OverlayWriter(tmp_path / "live.gif", gif_warn_bytes=5_000)  # length unknown: when it grows
        for t in range(T):
            writer.write(frames[t], result.frames[t])
        writer.close()
    assert (tmp_path / "live.gif").stat().st_size > 5_000
    messages = [str(w.message) for w in caught if "GIF overlay" in str(w.message)]
    assert len(messages) == 1 and "will be over" in messages[0] and "frames so far" in messages[0]
    # small GIFs stay quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        render_video(result, frames, tmp_path / "small.gif")


def test_overlay_writer_validates_before_any_frame(tmp_path):
    from cmasktrack.visualize import OverlayWriter

    with pytest.raises(ValueError, match=r"'\.avi'.*\.gif or \.mp4"):
        OverlayWriter(tmp_path / "x.avi")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"cannot write the overlay .*file/o\.gif"):
        OverlayWriter(tmp_path / "file" / "o.gif")
    with pytest.raises(ValueError, match="fps"):
        OverlayWriter(tmp_path / "o.gif", fps=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
