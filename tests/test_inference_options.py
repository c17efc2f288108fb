"""Inference options of issue 12 (precision, compile, channels_last, share_heads, prefetch).

The reference is a loop written here from the model's network methods (features of every frame,
references, heads, association, mask paste), independent of :class:`VideoTracker`'s window,
prefetching, precision and compile machinery: the default fp32 path must equal it bit for bit,
and ``share_heads`` must equal it with the head features averaged over the reference rows.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from cmasktrack import cli
from cmasktrack.postprocess import mask_paste_boxes, paste_masks
from cmasktrack.video_result import decode_rle
from cmasktrack.tracking import TrackMemory, TrackOptions, run_tracker, track_frames
from cmasktrack.transforms import preprocess_frame


# ------------------------------------------------------------------------------ reference


@torch.no_grad()
def reference_track(model, frames, num_refs, share_heads=False):
    """Per frame (boxes, scores, labels, track ids, masks) of the official pipeline composed by
    hand; with ``share_heads`` the calibrated rows are averaged before one head pass."""
    cfg = model.config
    pre = [preprocess_frame(f, cfg.image_scale, cfg.pixel_mean, cfg.pixel_std, cfg.size_divisor) for f in frames]
    feats = [model.extract_features(x[None]) for x, _ in pre]
    memory = TrackMemory(cfg.match_coeff)
    n = len(frames)
    out = []
    for t in range(n):
        refs = [j for j in range(max(0, t - num_refs), min(n - 1, t + num_refs) + 1) if j != t] or [t]
        head = model.head_features(feats[t], [feats[j] for j in refs]) if num_refs else model.head_levels(feats[t])
        if share_heads:
            head = [h.mean(dim=0, keepdim=True) for h in head]
        meta = pre[t][1]
        shape = tuple(meta.img_shape)
        det = model.detect(head, model.proposals(feats[t], shape), shape, meta.scale_factor)
        ids = memory.assign(det, model.embed(feats[t], det.boxes_resized), model.match_logits)
        keep = np.nonzero(ids >= 0)[0]
        det = det.select(torch.as_tensor(keep, dtype=torch.long))
        probs = model.mask_probs(head, det.boxes_resized, det.labels)
        h, w = meta.ori_shape
        masks = paste_masks(probs, mask_paste_boxes(det.boxes, meta.scale_factor), h, w, cfg.mask_threshold).numpy()
        out.append((det.boxes.numpy(), det.scores.numpy(), det.labels.numpy(), ids[keep], masks))
    return out


def assert_equal_to_reference(result, ref):
    assert result.num_frames == len(ref)
    assert sum(len(f) for f in result.frames) > 0
    for f, (boxes, scores, labels, ids, masks) in zip(result.frames, ref):
        assert np.array_equal(f.boxes, boxes) and np.array_equal(f.scores, scores)
        assert np.array_equal(f.labels, labels) and np.array_equal(f.track_ids, ids)
        assert len(f.masks) == len(masks)
        for rle, m in zip(f.masks, masks):
            assert np.array_equal(decode_rle(rle), m)


@pytest.fixture(scope="module")
def reference(tiny_model, tiny_frames):
    return reference_track(tiny_model, tiny_frames, 2)


# ------------------------------------------------------------------------------ options


def test_new_options_are_validated_in_one_place():
    opts = TrackOptions(precision="BF16", compile="eager", share_heads=True, prefetch=0, channels_last=True)
    assert opts.precision == "bf16" and opts.compile == "eager" and opts.prefetch == 0
    defaults = TrackOptions()
    assert (defaults.precision, defaults.compile, defaults.share_heads, defaults.prefetch,
            defaults.channels_last) == ("fp32", False, False, None, None)
    for kwargs, error, match in [
        (dict(precision="int8"), ValueError, "precision must be one of fp32, tf32, bf16, fp16; got 'int8'"),
        (dict(precision=16), TypeError, "precision must be a string"),
        (dict(compile=""), ValueError, "compile: an empty backend name"),
        (dict(compile=1), TypeError, "compile must be True, False or a torch.compile backend name"),
        (dict(share_heads="yes"), TypeError, "share_heads must be True or False"),
        (dict(prefetch=-1), ValueError, "prefetch must be >= 0, got -1"),
        (dict(prefetch=1.5), TypeError, "prefetch must be a whole number"),
        (dict(channels_last="auto"), TypeError, "channels_last must be True, False or None"),
    ]:
        with pytest.raises(error, match=match):
            TrackOptions(**kwargs)
    assert TrackOptions.build(opts, precision="fp16").precision == "fp16"


def test_unknown_compile_backend_is_an_error_at_tracker_creation(tiny_model):
    with pytest.raises(ValueError, match="unknown torch.compile backend 'no-such-backend'"):
        tiny_model.new_tracker(compile="no-such-backend")


def test_cli_track_options():
    from cmasktrack.tracking import PRECISIONS

    parser = cli.build_parser()
    track = next(a for a in parser._subparsers._group_actions[0].choices["track"]._actions
                 if a.dest == "precision")
    assert tuple(track.choices) == PRECISIONS
    args = parser.parse_args(["track", "in", "--out", "o.json", "--precision", "bf16", "--compile",
                              "--share-heads", "--prefetch", "0", "--channels-last", "on"])
    assert cli._track_options(args) == TrackOptions(precision="bf16", compile=True, share_heads=True, prefetch=0,
                                                    channels_last=True)
    args = parser.parse_args(["track", "in", "--out", "o.json", "--compile-backend", "eager"])
    opts = cli._track_options(args)
    assert opts.compile == "eager" and opts.precision == "fp32" and opts.channels_last is None
    with pytest.raises(SystemExit):
        parser.parse_args(["track", "in", "--out", "o.json", "--precision", "int8"])


# ------------------------------------------------------------------------------ fp32 path


def test_fp32_path_equals_the_reference_loop_bit_for_bit(tiny_model, tiny_frames, reference):
    # the default options (fp32; no prefetching on the CPU), prefetching 2 frames ahead, and
    # "tf32", which on the CPU is fp32
    assert_equal_to_reference(tiny_model.track_video(tiny_frames, progress=False), reference)
    assert_equal_to_reference(tiny_model.track_video(tiny_frames, precision="fp32", prefetch=2, progress=False),
                              reference)
    assert_equal_to_reference(tiny_model.track_video(tiny_frames, precision="tf32", progress=False), reference)


def test_share_heads_equals_one_head_pass_on_the_mean_calibrated_features(tiny_model, tiny_frames, reference):
    shared = tiny_model.track_video(tiny_frames, share_heads=True, progress=False)
    assert_equal_to_reference(shared, reference_track(tiny_model, tiny_frames, 2, share_heads=True))
    # ... which is not the official model's result
    assert any(len(f) != len(r[1]) or not np.array_equal(f.scores, r[1]) for f, r in zip(shared.frames, reference))
    # batch_refs only splits the calibration: the same mean
    assert_equal_to_reference(tiny_model.track_video(tiny_frames, share_heads=True, batch_refs=1, progress=False),
                              reference_track(tiny_model, tiny_frames, 2, share_heads=True))

    # the live-source path takes the same option (the stream's results are the frames of a result)
    streamed = list(tiny_model.track_stream(tiny_frames, share_heads=True))
    ref = reference_track(tiny_model, tiny_frames, 2, share_heads=True)
    assert len(streamed) == len(ref)
    for f, (boxes, scores, labels, ids, _) in zip(streamed, ref):
        assert np.array_equal(f.boxes, boxes) and np.array_equal(f.scores, scores)
        assert np.array_equal(f.labels, labels) and np.array_equal(f.track_ids, ids)


# ------------------------------------------------------------------------------ precision


def _dtype_probes(model):
    """Forward hooks recording the dtypes each part sees and whether autocast is on there."""
    seen = {}

    def probe(name):
        def hook(module, inputs, output):
            first = output[0] if isinstance(output, (tuple, list)) else output
            seen.setdefault(name, set()).add(
                (tuple(t.dtype for t in inputs if isinstance(t, torch.Tensor)), first.dtype,
                 torch.is_autocast_enabled("cpu")))
        return hook

    handles = [model.calibration.register_forward_hook(probe("calibration")),
               model.box_head.register_forward_hook(probe("box_head")),
               model.mask_head.register_forward_hook(probe("mask_head")),
               model.backbone.register_forward_hook(probe("backbone"))]
    return seen, handles


def test_bf16_autocasts_the_heads_and_keeps_the_calibration_float32(tiny_model, tiny_frames):
    seen, handles = _dtype_probes(tiny_model)
    try:
        result = tiny_model.track_video(tiny_frames[:2], precision="bf16", progress=False)
    finally:
        for h in handles:
            h.remove()
    f32, bf16 = torch.float32, torch.bfloat16
    # the calibration (correlation + deformable conv) takes and gives float32, autocast off
    assert seen["calibration"] == {((f32, f32), f32, False)}
    # the heads run under autocast on float32 RoI features (pooled outside autocast)
    assert seen["box_head"] == {((f32,), bf16, True)}
    assert seen["mask_head"] == {((f32,), bf16, True)}
    assert {s[1:] for s in seen["backbone"]} == {(bf16, True)}
    assert all(f.scores.dtype == np.float32 and f.boxes.dtype == np.float32 for f in result.frames)


def _match(a, b):
    """Detections of two runs of one clip matched per frame by (track id, label); returns
    (matched pairs of (score a, score b, mask IoU), unmatched scores of a, unmatched of b)."""
    pairs, only_a, only_b = [], [], []
    for fa, fb in zip(a.frames, b.frames):
        ka = {(int(t), int(l)): i for i, (t, l) in enumerate(zip(fa.track_ids, fa.labels))}
        kb = {(int(t), int(l)): i for i, (t, l) in enumerate(zip(fb.track_ids, fb.labels))}
        for k, i in ka.items():
            if k in kb:
                j = kb[k]
                ma, mb = decode_rle(fa.masks[i]), decode_rle(fb.masks[j])
                union = (ma | mb).sum()
                pairs.append((float(fa.scores[i]), float(fb.scores[j]), (ma & mb).sum() / union if union else 1.0))
            else:
                only_a.append(float(fa.scores[i]))
        only_b += [float(fb.scores[j]) for k, j in kb.items() if k not in ka]
    return pairs, only_a, only_b


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory):
    from PIL import Image

    from cmasktrack.data.synthetic import generate

    root = tmp_path_factory.mktemp("clip")
    generate(root, 1, 7, num_frames=4, size=(320, 192), objects_per_video=(5, 6))
    paths = sorted((root / "frames").rglob("*.jpg")) or sorted((root / "frames").rglob("*.png"))
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def test_bf16_on_the_cpu_tracks_like_fp32_on_the_demo_clip(demo_clip):
    # Tolerance: the same tracks (id, label) wherever fp32 or bf16 scores them >= 0.3, scores
    # within 0.05 and mask IoU >= 0.8 (bfloat16 keeps 8 bits of mantissa: ~0.4% per value).
    import cmasktrack
    from cmasktrack import CMaskTrack

    model = CMaskTrack.from_pretrained(cmasktrack.DEMO_MODEL, device="cpu")
    fp32 = model.track_video(demo_clip, num_refs=1, progress=False)
    bf16 = model.track_video(demo_clip, num_refs=1, precision="bf16", progress=False)
    pairs, only_a, only_b = _match(fp32, bf16)
    assert len(pairs) >= 8
    assert max(only_a + only_b, default=0.0) < 0.3, (only_a, only_b)
    confident = [p for p in pairs if max(p[0], p[1]) >= 0.3]
    assert confident and max(abs(p[0] - p[1]) for p in confident) <= 0.05
    assert min(p[2] for p in confident) >= 0.8
    assert max(abs(p[0] - p[1]) for p in pairs) > 0  # bf16 did change the numbers


def test_channels_last_layout(tiny_model, tiny_frames, reference):
    layouts = []
    handle = tiny_model.backbone.register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        last = tiny_model.track_video(tiny_frames[:3], channels_last=True, progress=False)
        tiny_model.track_video(tiny_frames[:1], progress=False)  # fp32 auto: the reference layout
        tiny_model.track_video(tiny_frames[:1], precision="bf16", progress=False)  # bf16 auto: channels last
    finally:
        handle.remove()
    assert layouts == [True] * 3 + [False, True]
    ref = reference_track(tiny_model, tiny_frames[:3], 2)
    for f, (boxes, scores, labels, ids, _) in zip(last.frames, ref):  # same function, other summation order
        assert np.array_equal(f.labels, labels) and np.array_equal(f.track_ids, ids)
        np.testing.assert_allclose(f.scores, scores, atol=1e-4)
        np.testing.assert_allclose(f.boxes, boxes, atol=1e-2)


# ------------------------------------------------------------------------------ prefetch


def test_prefetching_runs_ahead_and_gives_the_same_result(tiny_model, tiny_frames, reference):
    for depth in (0, 2):
        pulled = []
        ahead = []

        def frames():
            for i, f in enumerate(tiny_frames):
                pulled.append(i)
                yield f"{i}", f

        tracker = tiny_model.new_tracker(prefetch=depth)
        push = tracker.push

        def recording_push(frame, name=None):
            if not ahead and depth:  # the first push waits (bounded) for the thread to read ahead
                end = time.monotonic() + 20
                while len(pulled) < depth + 1 and time.monotonic() < end:
                    time.sleep(0.01)
            ahead.append(len(pulled))
            return push(frame, name)

        tracker.push = recording_push
        result = run_tracker(tracker, frames(), progress=False)
        assert_equal_to_reference(result, reference)
        if depth == 0:
            assert ahead == [1, 2, 3, 4, 5]  # read one at a time, when needed
            assert tracker.timings["preprocess"] > 0 and "prefetch_wait" not in tracker.timings
        else:
            # frame 0 is being pushed while frames 1..2 wait in the queue (and frame 3 may be read)
            assert ahead[0] >= depth + 1 and all(a <= min(i + depth + 2, 5) for i, a in enumerate(ahead)), ahead
            assert tracker.timings["prefetch_wait"] >= 0 and tracker.timings["decode"] >= 0


def test_prefetch_default_is_two_frames_on_cuda_and_none_on_the_cpu(tiny_model):
    assert tiny_model.new_tracker().prefetch_depth == 0  # this model is on the CPU
    assert tiny_model.new_tracker(prefetch=3).prefetch_depth == 3
    assert TrackOptions().prefetch_for(torch.device("cuda", 1)) == 2
    assert TrackOptions().prefetch_for("cuda:0") == 2 and TrackOptions().prefetch_for("cpu") == 0
    assert TrackOptions(prefetch=0).prefetch_for("cuda") == 0


def test_prefetch_errors_reach_the_caller_and_the_thread_ends(tiny_model, tiny_frames):
    def frames():
        yield "0", tiny_frames[0]
        yield "1", tiny_frames[1]
        raise OSError("frame 2 is unreadable")

    ahead = TrackOptions(prefetch=2)
    with pytest.raises(OSError, match="frame 2 is unreadable"):
        track_frames(tiny_model, frames(), options=ahead, progress=False)
    with pytest.raises(ValueError, match="frames must be"):
        track_frames(tiny_model, [("0", tiny_frames[0]), ("1", tiny_frames[1][..., :2])], options=ahead,
                     progress=False)
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name == "cmasktrack-prefetch"]


# ------------------------------------------------------------------------------ compile


def test_calibration_compiles_without_graph_breaks(tiny_model, tiny_frames):
    cfg = tiny_model.config
    x = torch.stack([preprocess_frame(f, cfg.image_scale, cfg.pixel_mean, cfg.pixel_std,
                                      cfg.size_divisor)[0] for f in tiny_frames[:3]])
    with torch.no_grad():
        feats = tiny_model.extract_features(x)
        cur, refs = [f[:1] for f in feats], [f[1:] for f in feats]
        eager = tiny_model.calibrate(cur, refs)
        torch._dynamo.reset()
        compiled = torch.compile(tiny_model.calibrate, backend="eager", fullgraph=True)(cur, refs)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_compile_with_the_eager_backend_matches(tiny_model, tiny_frames, reference):
    torch._dynamo.reset()
    assert_equal_to_reference(tiny_model.track_video(tiny_frames, compile="eager", progress=False), reference)


@pytest.mark.slow
def test_compile_with_inductor_matches_eager_within_tolerance(tiny_model, tiny_frames, reference):
    torch._dynamo.reset()
    result = tiny_model.track_video(tiny_frames, compile=True, progress=False)
    for f, (boxes, scores, labels, ids, masks) in zip(result.frames, reference):
        assert np.array_equal(f.labels, labels) and np.array_equal(f.track_ids, ids)
        np.testing.assert_allclose(f.scores, scores, atol=1e-4)
        np.testing.assert_allclose(f.boxes, boxes, atol=1e-2)
