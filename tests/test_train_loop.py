"""End-to-end training on a tiny synthetic set: the loss falls, resume is exact, the CLI works,
and two gloo DDP processes take the same steps as an independent single-process reference."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cmasktrack
from cmasktrack.train import (TrainConfig, VISTrainDataset, collate_train, forward_train, prepare_model, total_loss,
                              train)
from cmasktrack.train.dataset import GroupedBatchSampler
from cmasktrack.train.loop import build_model, iteration_seed

TINY_MODEL = dict(depth=18, fpn_channels=32, box_head_fc=64, track_head_fc=64, image_scale=[128, 80],
                  rpn_pre_nms_top_n=100, rpn_post_nms_top_n=50, rpn_max_num=50, detections_per_img=20)


def tiny_cfg(**kw):
    base = dict(model=dict(TINY_MODEL), workers_per_gpu=0, images_per_gpu=2, max_iters=12, by_epoch=False,
                warmup_iters=3, lr_steps=(1000,), lr=0.005, lr_reference_batch=0, log_interval=5,
                checkpoint_interval=0, rpn_num_samples=64, rcnn_num_samples=32, seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cmasktrack.data.synthetic import generate

    out = tmp_path_factory.mktemp("tiny_train")
    ann = generate(out, 3, 0, num_frames=(4, 6), size=(128, 80), objects_per_video=(2, 4))
    return str(ann), str(out / "frames")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_loss_falls(tiny, tmp_path):
    ann, frames = tiny
    cfg = tiny_cfg(max_iters=25, flip_ratio=0.0)
    ds = VISTrainDataset(ann, frames, scale=(128, 80), flip_ratio=0.0)
    batch = collate_train([ds[(i, 7)] for i in range(0, len(ds), 2)])

    def fixed_batch_losses(model):
        model.train()
        with torch.no_grad():
            out = forward_train(model, batch, cfg, torch.Generator().manual_seed(0))
        return {k: float(v) for k, v in out.items() if k.startswith("loss")}

    before = fixed_batch_losses(build_model(cfg, ds, cfg.seed))
    seen = []
    result = train(cfg, ann, frames, tmp_path / "run", progress=False, callback=lambda i, v: seen.append(v))
    after = fixed_batch_losses(result.model)
    assert len(seen) == 25 and result.iterations == 25
    assert sum(after.values()) < 0.7 * sum(before.values()), (before, after)
    for k in ("loss_rpn_cls", "loss_cls", "loss_mask"):
        assert after[k] < before[k], (k, before, after)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [5, 10, 15, 20, 25]
    assert {"lr", "s_per_iter", "loss_mask", "loss_match", "grad_norm"} <= set(log[0])
    # the result is a loadable model that tracks a video
    from cmasktrack.model import CMaskTrack

    model = CMaskTrack.from_pretrained(tmp_path / "run", device="cpu")
    frames_dir = Path(frames) / "synth_00000"
    res = model.track_video(sorted(frames_dir.glob("*.png")), progress=False, score_threshold=0.0)
    assert res.num_frames == len(list(frames_dir.glob("*.png")))


class _Interrupt(Exception):
    pass


def test_resume_gives_identical_parameters(tiny, tmp_path):
    ann, frames = tiny
    cfg = tiny_cfg(max_iters=12, checkpoint_interval=5, keep_checkpoints=1)
    train(cfg, ann, frames, tmp_path / "a", progress=False)

    def stop(it, _):
        if it == 8:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(cfg, ann, frames, tmp_path / "b", progress=False, callback=stop)
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["iter_00000005"]
    assert not (tmp_path / "b" / "model.safetensors").exists()
    result = train(cfg, ann, frames, tmp_path / "b", progress=False, resume=True)
    assert result.iterations == 12
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the run did train: the weights moved away from the initialisation
    ds = VISTrainDataset(ann, frames, scale=(128, 80))
    init = build_model(cfg, ds, cfg.seed).state_dict()
    assert not torch.equal(init["box_head.fc_cls.weight"], a["box_head.fc_cls.weight"])


def test_from_scratch_options_train_every_stage_and_batchnorm(tiny, tmp_path):
    """batchnorm="batch" + frozen_stages=-1 + AdamW: the stem and the BatchNorm statistics and
    affine values move, the saved model keeps the frozen-BatchNorm layout and its eval output
    uses the learnt running statistics."""
    from cmasktrack.model import CMaskTrack

    ann, frames = tiny
    cfg = tiny_cfg(max_iters=4, batchnorm="batch", frozen_stages=-1, optimizer="adamw", lr=1e-3,
                   bn_momentum=0.5)
    ds = VISTrainDataset(ann, frames, scale=(128, 80))
    init = build_model(cfg, ds, cfg.seed).state_dict()
    result = train(cfg, ann, frames, tmp_path / "run", progress=False)
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert saved.keys() == init.keys()
    for key in ("backbone.body.conv1.weight", "backbone.body.bn1.weight", "backbone.body.bn1.running_mean",
                "backbone.body.layer1.0.bn1.running_var", "backbone.body.layer4.1.bn2.bias"):
        assert not torch.equal(saved[key], init[key]), key
    # running statistics are averages of batch statistics: finite and positive variances
    assert all(bool((saved[k] > 0).all()) for k in saved if k.endswith("running_var"))
    loaded = CMaskTrack.from_pretrained(tmp_path / "run", device="cpu")
    x = torch.randn(1, 3, 80, 128)
    with torch.no_grad():
        for a, b in zip(loaded.backbone(x), result.model.backbone(x)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_match_loss_weight_scales_the_match_loss(tiny):
    from cmasktrack.train import TrainingModule

    ann, frames = tiny
    ds = VISTrainDataset(ann, frames, scale=(128, 80), flip_ratio=0.0)
    batch = collate_train([ds[(i, 3)] for i in range(2)])
    cfg = tiny_cfg()
    model = build_model(cfg, ds, cfg.seed).train()
    with torch.no_grad():
        plain = forward_train(model, batch, cfg, torch.Generator().manual_seed(1))
        weighted = TrainingModule(model, cfg.replace(match_loss_weight=0.25))(batch, torch.Generator().manual_seed(1))
    torch.testing.assert_close(weighted["loss_match"], 0.25 * plain["loss_match"])
    expected = sum(v for k, v in plain.items() if k.startswith("loss") and k != "loss_match")
    torch.testing.assert_close(weighted["total_loss"], expected + 0.25 * plain["loss_match"])
    torch.testing.assert_close(weighted["loss_mask"], plain["loss_mask"])


def test_cli(tiny, tmp_path, capsys):
    from cmasktrack.cli import main as cli_main

    def main(argv):
        return cli_main(["train", *argv])

    ann, frames = tiny
    cfg_path = tmp_path / "cfg.json"
    tiny_cfg().save(str(cfg_path))
    assert main(["--config", str(cfg_path), "--data", ann, "--image-root", frames, "--out", str(tmp_path / "o"),
                 "--set", "max_iters=3", "--set", 'model={"calibration": false}', "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["max_iters"] == 3 and printed["model"]["calibration"] is False and printed["model"]["depth"] == 18
    assert main(["--config", str(cfg_path), "--data", ann, "--image-root", frames, "--out", str(tmp_path / "o"),
                 "--set", "max_iters=2", "--no-progress"]) == 0
    assert (tmp_path / "o" / "model.safetensors").is_file() and (tmp_path / "o" / "train_config.json").is_file()
    assert main(["--preset", "cpu_small", "--data", ann, "--image-root", frames, "--out", str(tmp_path / "x"),
                 "--set", "nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_match_single_process_reference(tiny, tmp_path):
    ann, frames = tiny
    cfg = tiny_cfg(images_per_gpu=1, max_iters=2, warmup_iters=2, warmup_ratio=0.5, lr=0.01)
    cfg_path = tmp_path / "cfg.json"
    cfg.save(str(cfg_path))
    root = str(Path(cmasktrack.__file__).resolve().parent.parent)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "cmasktrack.train", "--config", str(cfg_path), "--data", ann,
           "--image-root", frames, "--out", str(tmp_path / "ddp"), "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))

    # Reference: one process, the two ranks' batches of each iteration, gradients averaged,
    # plain SGD with the warm-up learning rates written out (0.5 then 0.75 of lr).
    ds = VISTrainDataset(ann, frames, scale=(128, 80))
    model = build_model(cfg, ds, cfg.seed)
    prepare_model(model, cfg)  # the official trained set (BatchNorm affine of layer2-4 included)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    rank_batches = [list(GroupedBatchSampler(ds.group_flags, 1, 2, r, seed=cfg.seed)) for r in (0, 1)]
    for it, lr in enumerate([0.01 * 0.5, 0.01 * 0.75]):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        for r in (0, 1):
            batch = collate_train([ds[key] for key in rank_batches[r][it]])
            gen = torch.Generator().manual_seed(iteration_seed(cfg.seed, r, it))
            (total_loss(forward_train(model, batch, cfg, gen)) / 2).backward()
        torch.nn.utils.clip_grad_norm_(params, 35.0)
        opt.step()
    ref = model.state_dict()
    init = build_model(cfg, ds, cfg.seed).state_dict()
    moved = 0
    for k, v in ref.items():
        assert torch.allclose(ddp[k], v, rtol=1e-4, atol=1e-6), k
        moved += not torch.equal(v, init[k])
    assert moved > 10
