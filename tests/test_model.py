"""CMaskTrack end to end on a tiny random model: loading, saving, streaming, inputs."""

import json
import os

import numpy as np
import pytest
import torch

from cmasktrack.weights import CheckpointError
from cmasktrack.model_config import CMaskTrackConfig
from cmasktrack.model import CMaskTrack

from conftest import tiny_config


def _same(a, b):
    assert a.num_frames == b.num_frames
    for fa, fb in zip(a.frames, b.frames):
        _same_frame(fa, fb)


def _same_frame(fa, fb):
    assert np.array_equal(fa.track_ids, fb.track_ids)
    assert np.array_equal(fa.boxes, fb.boxes) and np.array_equal(fa.scores, fb.scores)
    assert np.array_equal(fa.labels, fb.labels)
    assert [m["counts"] for m in fa.masks] == [m["counts"] for m in fb.masks]


@pytest.fixture(scope="module")
def tiny_result(tiny_model, tiny_frames):
    return tiny_model.track_video(tiny_frames, progress=False)


def test_track_video_outputs_are_consistent(tiny_result, tiny_frames):
    res = tiny_result
    assert res.num_frames == 5 and (res.height, res.width) == (72, 100)
    assert sum(len(f) for f in res.frames) > 0
    for f in res.frames:
        assert len(set(f.track_ids.tolist())) == len(f)  # one detection per id and frame
        for rle in f.masks:
            assert rle["size"] == [72, 100] and isinstance(rle["counts"], str)
        assert np.all(f.boxes[:, :2] >= 0) and np.all(f.boxes[:, 2] <= 99.5) and np.all(f.boxes[:, 3] <= 71.5)
    entries = res.to_ytvis(video_id=7)
    assert len(entries) == len(res.tracks)
    for e, t in zip(entries, res.tracks):
        assert e["video_id"] == 7 and len(e["segmentations"]) == 5
        assert [i for i, s in enumerate(e["segmentations"]) if s is not None] == t.frame_indices
        assert e["score"] == pytest.approx(np.mean([t.frames[i][1] for i in t.frame_indices]), rel=1e-6)


def test_save_load_round_trip_is_bit_identical(tmp_path, tiny_model, tiny_frames, tiny_result):
    tiny_model.save_pretrained(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]
    loaded = CMaskTrack.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.config == tiny_model.config
    _same(loaded.track_video(tiny_frames, progress=False), tiny_result)


def test_fp16_save_loads_as_float32(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "h", dtype=torch.float16)
    assert os.path.getsize(tmp_path / "h" / "model.safetensors") < 0.6 * sum(
        p.numel() * 4 for p in tiny_model.state_dict().values())
    loaded = CMaskTrack.from_pretrained(tmp_path / "h", device="cpu")
    w0, w1 = tiny_model.box_head.fc_cls.weight, loaded.box_head.fc_cls.weight
    assert w1.dtype == torch.float32 and torch.equal(w1, w0.half().float())


def test_streaming_and_list_inputs_agree(tiny_model, tiny_frames, tiny_result):
    _same(tiny_model.track_video(iter(tiny_frames), progress=False), tiny_result)
    _same(tiny_model.track_video(np.stack(tiny_frames), progress=False), tiny_result)


def test_folder_input(tmp_path, tiny_model, tiny_frames, tiny_result):
    from PIL import Image

    for i, f in enumerate(tiny_frames):  # natural order: 2 before 10
        Image.fromarray(f).save(tmp_path / f"{[1, 2, 10, 11, 20][i]}.png")
    _same(tiny_model.track_video(str(tmp_path), progress=False), tiny_result)


def test_window_memory_is_bounded(tiny_model, tiny_frames):
    tracker = tiny_model.new_tracker(num_refs=2)
    sizes = []
    for i in range(12):
        tracker.push(tiny_frames[i % 5])
        sizes.append(len(tracker.window))
    tracker.finish()
    assert max(sizes) <= 2 * 2 + 1 and tracker.result().num_frames == 12


def test_num_refs_zero_equals_model_without_calibration(tiny_model, tiny_frames):
    plain = CMaskTrack(tiny_config(calibration=False, num_refs=0)).eval()
    state = {k: v for k, v in tiny_model.state_dict().items() if not k.startswith("calibration.")}
    plain.load_state_dict(state)
    _same(tiny_model.track_video(tiny_frames, num_refs=0, progress=False),
          plain.track_video(tiny_frames, progress=False))


def test_references_change_the_result(tiny_model, tiny_frames, tiny_result):
    other = tiny_model.track_video(tiny_frames, num_refs=1, progress=False)
    assert any(not np.array_equal(a.scores, b.scores) for a, b in zip(other.frames, tiny_result.frames))
    # non-causal (num_refs=2): frame 2 of 5 frames has references 0, 1, 3, 4; of 3 frames, 0, 1
    first3 = tiny_model.track_video(tiny_frames[:3], progress=False)
    assert not np.array_equal(first3.frames[2].scores, tiny_result.frames[2].scores)


def test_causal_results_do_not_depend_on_later_frames(tiny_model, tiny_frames, tiny_result):
    # streaming: every frame is ready as soon as it is pushed
    tracker = tiny_model.new_tracker(causal=True)
    assert [len(tracker.push(f)) for f in tiny_frames] == [1] * 5 and tracker.finish() == []
    causal = tracker.result()
    assert causal.num_frames == 5
    assert any(not np.array_equal(a.scores, b.scores) for a, b in zip(causal.frames, tiny_result.frames))
    # past frames only: the first 3 frames come out the same whether 2 more frames follow or not
    first3 = tiny_model.track_video(tiny_frames[:3], causal=True, progress=False)
    for a, b in zip(first3.frames, causal.frames[:3]):
        _same_frame(a, b)
    # the first frame has no past: it is its own reference, as in a one-frame video
    _same_frame(causal.frames[0], tiny_model.track_video(tiny_frames[:1], progress=False).frames[0])


def test_one_frame_video_uses_itself_as_reference(tiny_model, tiny_frames):
    one = tiny_model.track_video(tiny_frames[:1], progress=False)
    assert one.num_frames == 1 and len(one.frames[0]) > 0
    # Calibrating a frame by itself is what the ordinary reference path computes for frame 0 of
    # a video that shows that frame twice (its one reference, frame 1, is the same image).
    twice = tiny_model.track_video([tiny_frames[0], tiny_frames[0]], num_refs=1, progress=False)
    _same_frame(one.frames[0], twice.frames[0])
    # ... and not what the frame gives without calibration
    plain = tiny_model.track_video(tiny_frames[:1], num_refs=0, progress=False)
    assert not np.array_equal(plain.frames[0].scores, one.frames[0].scores)


def test_track_options_object_and_keywords_agree(tiny_model, tiny_frames):
    from cmasktrack import TrackOptions

    opts = TrackOptions(num_refs=1, score_threshold=0.2)
    by_object = tiny_model.track_video(tiny_frames[:2], opts, progress=False)
    _same(by_object, tiny_model.track_video(tiny_frames[:2], num_refs=1, score_threshold=0.2, progress=False))
    # keywords override the object's fields
    _same(by_object, tiny_model.track_video(tiny_frames[:2], TrackOptions(num_refs=3, score_threshold=0.2),
                                            num_refs=1, progress=False))
    assert tiny_model.new_tracker(opts).options == opts
    assert tiny_model.new_tracker(causal=True).options == TrackOptions(num_refs=2, causal=True)  # config's 2
    with pytest.raises(ValueError, match="num_refs must be >= 0"):
        tiny_model.track_video(tiny_frames[:1], num_refs=-1, progress=False)


def test_frames_of_different_sizes_are_refused(tiny_model, tiny_frames):
    frames = [tiny_frames[0], tiny_frames[1][:60]]
    with pytest.raises(ValueError, match="size|60"):
        tiny_model.track_video(frames, progress=False)


def test_high_threshold_gives_no_tracks(tiny_model, tiny_frames):
    res = tiny_model.track_video(tiny_frames[:2], score_threshold=0.999, progress=False)
    assert res.tracks == [] and res.to_ytvis(1) == []


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        CMaskTrack.from_pretrained(str(tmp_path / "missing.pth"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        CMaskTrack.from_pretrained(str(tmp_path / "d"))
    (tmp_path / "d" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        CMaskTrack.from_pretrained(str(tmp_path / "d"))


def test_weights_of_another_config_are_refused(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["num_classes"], cfg["category_names"] = 6, ["a", "b", "c", "d", "e"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="box_head.fc_cls.weight"):
        CMaskTrack.from_pretrained(tmp_path / "m")


def test_config_round_trip(tmp_path):
    cfg = tiny_config(score_threshold=0.2, match_coeff=(1.0, 3.0, 5.0))
    cfg.save(str(tmp_path))
    assert CMaskTrackConfig.load(str(tmp_path)) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        CMaskTrackConfig.from_dict({**cfg.to_dict(), "bogus": 1})
