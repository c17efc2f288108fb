"""Training-from-scratch helpers: trainable BatchNorm (checked against torch.nn.BatchNorm2d and
torchvision's FrozenBatchNorm2d), frozen stages, data-dependent frozen-BN statistics, and the
match-loss weight."""

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from cmasktrack.modeling.backbone import ResNetFPN
from cmasktrack.train.initialisation import normalise_frozen_batchnorm
from cmasktrack.train.norm import (TrainableBatchNorm2d, freeze_batchnorm, make_batchnorm_trainable,
                                   prepare_backbone, recompute_batchnorm_statistics)


def _random_frozen(c, seed):
    g = torch.Generator().manual_seed(seed)
    bn = FrozenBatchNorm2d(c)
    bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
    bn.bias.copy_(torch.randn(c, generator=g))
    bn.running_mean.copy_(torch.randn(c, generator=g))
    bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return bn


def test_trainable_batchnorm_matches_torch_batchnorm():
    frozen = _random_frozen(6, 0)
    ref = nn.BatchNorm2d(6, momentum=0.3)
    with torch.no_grad():
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(ref, k).copy_(getattr(frozen, k))
    holder = nn.Sequential(frozen)
    assert make_batchnorm_trainable(holder, momentum=0.3) == 1
    bn = holder[0]
    assert isinstance(bn, TrainableBatchNorm2d)
    x = torch.randn(4, 6, 5, 7) * 3 + 1
    # train mode: batch statistics, same running-stat update and same gradients as BatchNorm2d
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, y_ref = bn.train()(x1), ref.train()(x2)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(bn.weight.grad, ref.weight.grad)
    torch.testing.assert_close(bn.bias.grad, ref.bias.grad)
    # eval mode: FrozenBatchNorm2d with the same (updated) values
    back = nn.Sequential(bn)
    assert freeze_batchnorm(back) == 1 and isinstance(back[0], FrozenBatchNorm2d)
    torch.testing.assert_close(bn.eval()(x), back[0](x))
    torch.testing.assert_close(back[0](x), ref.eval()(x))


def test_state_dict_layout_is_unchanged_and_round_trip_is_exact():
    torch.manual_seed(0)
    net = ResNetFPN(depth=18, out_channels=32).eval()
    for m in net.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.bias.normal_()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, 3, 64, 96)
    out_before = net(x)
    n = make_batchnorm_trainable(net)
    assert n == sum(1 for _ in before if _.endswith("running_mean"))
    assert net.state_dict().keys() == before.keys()
    net.eval()
    for a, b in zip(net(x), out_before):  # F.batch_norm vs FrozenBatchNorm2d: rounding only
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert freeze_batchnorm(net) == n
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("batchnorm", ["affine", "frozen", "batch"])
@pytest.mark.parametrize("stages", [-1, 0, 1, 3])
def test_prepare_backbone_freezes_the_first_stages(stages, batchnorm):
    body = ResNetFPN(depth=18, out_channels=16).body
    n = prepare_backbone(body, stages, batchnorm)
    frozen = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")[: (stages + 1) + (1 if stages >= 0 else 0)]
    bns = {name: m for name, m in body.named_modules() if isinstance(m, (FrozenBatchNorm2d, TrainableBatchNorm2d))}
    assert all(isinstance(m, TrainableBatchNorm2d) for m in bns.values())  # weight, bias are parameters
    for name, p in body.named_parameters():
        is_bn = name.rsplit(".", 1)[0] in bns
        expect = not name.startswith(frozen) and (not is_bn or batchnorm != "frozen")
        assert p.requires_grad == expect, name
    for name, m in bns.items():  # batch statistics only with "batch", never in frozen stages
        assert m.use_batch_stats == (batchnorm == "batch" and not name.startswith(frozen)), name
    learnt = sum(1 for name in bns if not name.startswith(frozen)) if batchnorm != "frozen" else 0
    assert n == learnt
    # downsample BatchNorms (layerN.0.downsample.1) follow their stage too
    ds = bns["layer2.0.downsample.1"]
    assert ds.weight.requires_grad == (stages < 2 and batchnorm != "frozen")
    # preparing again (another policy) starts from the same weights and gives that policy
    assert prepare_backbone(body, 4, "frozen") == 0
    assert not any(p.requires_grad for p in body.parameters())


def test_affine_policy_is_batchnorm_in_eval_mode_with_trained_affine():
    """``use_batch_stats=False`` (the official ``norm_eval``): the output and the gradients of
    input, weight and bias are those of ``nn.BatchNorm2d`` in eval mode, in train mode too, and
    the running statistics do not move."""
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(6).double().eval()
    with torch.no_grad():
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2.0)
        ref.weight.normal_()
        ref.bias.normal_()
    bn = TrainableBatchNorm2d(6, use_batch_stats=False).double().train()
    bn.load_state_dict({k: v for k, v in ref.state_dict().items() if k != "num_batches_tracked"})
    x = torch.randn(3, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    grad = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    out, expected = bn(x), ref(x2)
    torch.testing.assert_close(out, expected)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(bn.weight.grad, ref.weight.grad)
    torch.testing.assert_close(bn.bias.grad, ref.bias.grad)
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)


def test_normalise_frozen_batchnorm_gives_unit_statistics():
    torch.manual_seed(0)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = ResNetFPN(depth=18, out_channels=16)

    model = Wrapper().eval()
    images = torch.randn(3, 3, 64, 64) * 2 + 0.5
    outputs = {}

    def hook(name):
        return lambda m, i, o: outputs.__setitem__(name, o.detach().clone())  # ReLUs are in place

    bns = {n: m for n, m in model.backbone.body.named_modules() if isinstance(m, FrozenBatchNorm2d)}
    for n, m in bns.items():
        m.register_forward_hook(hook(n))
    assert normalise_frozen_batchnorm(model, images) == len(bns)
    model.backbone.body(images)
    for n, y in outputs.items():  # weight 1, bias 0: every channel is standardised on these images
        mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0, msg=n)
        torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3, rtol=1e-3, msg=n)


def test_recompute_batchnorm_statistics_is_the_mean_of_batch_statistics():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3)
    body = nn.Sequential()
    body.add_module("conv1", conv)
    body.add_module("bn1", _random_frozen(5, 1))
    body.add_module("layer1", nn.Sequential(nn.ReLU(), _random_frozen(5, 2)))
    keep = body.layer1[1].running_mean.clone()
    batches = [torch.randn(2, 3, 9, 8) * (k + 1) + k for k in range(3)]
    # hand-computed: the conv's output statistics per batch, averaged over the batches
    outs = [conv(x).detach() for x in batches]
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outs]).mean(0)
    assert recompute_batchnorm_statistics(body, iter(batches), skip=("layer1",)) == 3
    assert isinstance(body.bn1, FrozenBatchNorm2d)  # the layer type is kept
    torch.testing.assert_close(body.bn1.running_mean, mean)
    torch.testing.assert_close(body.bn1.running_var, var)
    assert torch.equal(body.layer1[1].running_mean, keep)  # skipped
    # no batches: nothing changes
    before = body.bn1.running_var.clone()
    assert recompute_batchnorm_statistics(body, iter([])) == 0
    assert torch.equal(body.bn1.running_var, before)


def test_recompute_batchnorm_statistics_keeps_each_layer_type():
    # a body with one trainable and one frozen BatchNorm: each comes back as it was
    body = nn.Sequential()
    body.add_module("bn1", _random_frozen(3, 4))
    body.add_module("bn2", _random_frozen(3, 5))
    make_batchnorm_trainable(body, skip=("bn2",))
    batches = [torch.randn(2, 3, 6, 6) + k for k in range(2)]
    # hand-computed: bn1 sees the input itself
    mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches]).mean(0)
    assert recompute_batchnorm_statistics(body, iter(batches)) == 2
    assert isinstance(body.bn1, TrainableBatchNorm2d) and isinstance(body.bn2, FrozenBatchNorm2d)
    torch.testing.assert_close(body.bn1.running_mean, mean)
