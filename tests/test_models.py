"""The model zoo: parameter counts, parity with the references, the papers' switches, the API."""
from __future__ import annotations

import copy
import tempfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from helpers import randomize_bn

import inceptionlab as il
from inceptionlab import UserError, create_model
from inceptionlab.models.layers import Concat, ConvBN, PoolProjection, ScaledResidual, merged_pointwise
from inceptionlab.models.spec import Builder, Conv, Factorized5x5, FactorizedNxN, Mixed, Pool, Switches

FAMILIES = ["googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1",
            "inception_resnet_v2"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() // 2


# ------------------------------------------------------------------ registry and counts
def test_all_six_families_are_registered():
    assert set(FAMILIES) <= set(il.list_models())
    assert il.list_models("inception_resnet_*") == ["inception_resnet_v1", "inception_resnet_v2",
                                                    "inception_resnet_v2_paper"]


@pytest.mark.parametrize("name, kwargs, expected", [
    ("googlenet", {}, 6_624_904),
    ("googlenet", {"aux_logits": True}, 13_004_888),
    ("inception_v3", {}, 23_834_568),
    ("inception_v3", {"aux_logits": True}, 27_161_264),
    ("inception_v4", {}, 42_679_816),
    ("inception_resnet_v2", {}, 55_843_464),
    # as the papers' tables imply (no torchvision/timm reference): stated in the model cards
    ("bn_inception", {}, 11_295_240),
    ("inception_resnet_v1", {}, 24_357_096),
])
def test_parameter_counts_equal_the_references(name, kwargs, expected):
    assert n_params(create_model(name, **kwargs)) == expected


def test_parameter_counts_equal_torchvision_and_timm_models():
    import timm
    import torchvision
    assert n_params(torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)) == 6_624_904
    assert n_params(timm.create_model("inception_v4")) == 42_679_816
    assert n_params(timm.create_model("inception_resnet_v2")) == 55_843_464


# ------------------------------------------------------------------ parity with the references
def _save_reference(ref: nn.Module, path, fmt: str) -> str:
    randomize_bn(ref)
    state = ref.state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file
        path = str(path) + ".safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        path = str(path) + ".pth"
        torch.save(state, path)
    return path


def _assert_same(ref, ours, x):
    ref.eval(), ours.eval()
    with torch.no_grad():
        a, b = ref(x), ours(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


# In training our pooling branches project before they pool (layers.PoolProjection): float32
# rounding then differs from the references' order by up to ~5e-5 on logits of size ~7.
TRAIN_ATOL = 1e-4


def test_torchvision_googlenet_parity_with_aux(tmp_path):
    import torchvision
    torch.manual_seed(0)
    ref = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True, transform_input=False)
    path = _save_reference(ref, tmp_path / "googlenet", "pth")
    ours = create_model("googlenet", aux_logits=True, weights=path)
    _assert_same(ref, ours, torch.randn(1, 3, 224, 224))
    _assert_same(ref, ours, torch.randn(1, 3, 160, 192))
    # train mode: aux heads in depth order (dropout off so both are deterministic)
    ref.train(), ours.train()
    ref.dropout.p = ref.aux1.dropout.p = ref.aux2.dropout.p = 0.0
    ours.head.drop_rate = 0.0
    for head in ours.aux_heads.values():
        head.dropout = 0.0
    x = torch.randn(2, 3, 224, 224)
    r, o = ref(x), ours(x)
    assert isinstance(o, il.InceptionOutput) and len(o.aux) == 2
    torch.testing.assert_close(o.logits, r.logits, rtol=1e-4, atol=TRAIN_ATOL)
    torch.testing.assert_close(o.aux[0], r.aux_logits1, rtol=1e-4, atol=TRAIN_ATOL)
    torch.testing.assert_close(o.aux[1], r.aux_logits2, rtol=1e-4, atol=TRAIN_ATOL)


def test_torchvision_googlenet_without_aux_loads_into_model_without_aux(tmp_path):
    import torchvision
    ref = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=False)
    path = _save_reference(ref, tmp_path / "g", "safetensors")
    _assert_same(ref, create_model("googlenet", weights=path), torch.randn(1, 3, 224, 224))


def test_googlenet_card_normalizes_as_torchvisions_weights_expect(tmp_path):
    # torchvision builds googlenet for its weights with transform_input=True: ImageNet-normalized
    # input is turned into (pixel - 0.5) / 0.5 inside the model. The card said ImageNet's mean and
    # std, so predict fed those weights input that moved the logits by 8.5
    import torchvision
    ref = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=True)
    ours = create_model("googlenet", weights=_save_reference(ref, tmp_path / "g", "pth")).eval()
    ref.eval()
    pixels = torch.rand(2, 3, 224, 224)

    def normalized(mean, std):
        return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ref(normalized((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))  # how torchvision is fed
        got = ours(normalized(ours.pretrained_cfg["mean"], ours.pretrained_cfg["std"]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_inception_v3_parity(tmp_path, fmt):
    import torchvision
    torch.manual_seed(0)
    ref = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    path = _save_reference(ref, tmp_path / "v3", fmt)
    ours = create_model("inception_v3", aux_logits=True, weights=path)
    _assert_same(ref, ours, torch.randn(1, 3, 299, 299))
    _assert_same(ref, ours, torch.randn(1, 3, 224, 256))
    # the same weights without aux heads: the aux tensors are ignored
    _assert_same(ref, create_model("inception_v3", weights=path), torch.randn(1, 3, 299, 299))
    ref.train(), ours.train()
    ref.dropout.p = 0.0
    ours.head.drop_rate = 0.0
    x = torch.randn(2, 3, 299, 299)
    r, o = ref(x), ours(x)
    torch.testing.assert_close(o.logits, r.logits, rtol=1e-4, atol=TRAIN_ATOL)
    torch.testing.assert_close(o.aux[0], r.aux_logits, rtol=1e-4, atol=TRAIN_ATOL)
    # the same arithmetic in another order: float64 agrees to rounding
    ref.double(), ours.double()
    r, o = ref(x.double()), ours(x.double())
    torch.testing.assert_close(o.logits, r.logits, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["inception_v3", "inception_v4", "inception_resnet_v2"])
def test_timm_parity(tmp_path, name):
    import timm
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False)
    path = _save_reference(ref, tmp_path / name, "safetensors")
    ours = create_model(name, weights=path)
    _assert_same(ref, ours, torch.randn(1, 3, 299, 299))
    _assert_same(ref, ours, torch.randn(1, 3, 160, 160))


# ------------------------------------------------------------------ training-order fast paths
def _sequential_copy(branch: PoolProjection) -> nn.Sequential:
    """The same pool and projection (copies) as a plain ``nn.Sequential``: the reference order."""
    return nn.Sequential(*copy.deepcopy(list(branch)))


@pytest.mark.parametrize("norm", [True, False])
def test_pool_projection_projects_then_pools_with_the_same_values_and_gradients(norm):
    torch.manual_seed(0)
    branch, _ = Builder(Switches(norm=norm)).branch([Pool("avg"), Conv(24, 1)], 96)
    assert isinstance(branch, PoolProjection)  # the builder's pooling branches take the cheap order
    if norm:
        randomize_bn(branch)
    plain = _sequential_copy(branch)  # the reference order: pool, then project
    assert list(plain.state_dict()) == list(branch.state_dict())
    branch.double().train(), plain.double().train()
    x = torch.randn(3, 96, 11, 9, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = branch(x1), plain(x2)
    assert y1.shape == (3, 24, 11, 9)
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-12)
    grad = torch.randn_like(y1)
    y1.backward(grad), y2.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-12)
    for (name, p1), p2 in zip(branch.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=0, atol=1e-10, msg=name)
    if norm:  # batch statistics were gathered on the same values
        torch.testing.assert_close(branch[1].bn.running_var, plain[1].bn.running_var, rtol=0, atol=1e-12)
    branch.float().eval(), plain.float().eval()
    with torch.no_grad():  # eval keeps the reference order: bit for bit
        assert torch.equal(branch(x.float()), plain(x.float()))


def test_pointwise_convolution_trains_as_one_matmul_with_conv2d_gradients():
    torch.manual_seed(0)
    block = ConvBN(40, 16, 1).double().train()
    x = torch.randn(2, 40, 7, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y = block.convolve(x)
    assert y.is_contiguous(memory_format=torch.channels_last)  # no copy on the way in or out
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = block.convolve(x1), torch.nn.functional.conv2d(x2, block.conv.weight)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    g = torch.randn_like(a)
    (wa,) = torch.autograd.grad(a, block.conv.weight, g, retain_graph=True)
    (wb,) = torch.autograd.grad(b, block.conv.weight, g, retain_graph=True)
    torch.testing.assert_close(wa, wb, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(a, x1, g)[0], torch.autograd.grad(b, x2, g)[0], rtol=0, atol=1e-12)


def _train_step_results(module: nn.Module, x: torch.Tensor):
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y))
    return y, x.grad, [p.grad for p in module.parameters()], list(module.state_dict().values())


def test_branches_opening_with_1x1_convolutions_train_as_one_matmul(monkeypatch):
    import inceptionlab.models.layers as layers
    torch.manual_seed(0)
    spec = Mixed([Conv(16, 1)], [Conv(12, 1), Conv(16, 3)], [Conv(16, 1), Conv(24, 3), Conv(24, 3)],
                 [Pool("avg"), Conv(8, 1)])
    module, chs = Builder(Switches()).block(spec, 32)
    randomize_bn(module)
    module.double().train()
    separate = copy.deepcopy(module)
    calls = []

    def spy(x, blocks):
        calls.append(len(blocks))
        return merged_pointwise(x, blocks)
    monkeypatch.setattr(layers, "merged_pointwise", spy)
    x = torch.randn(4, 32, 9, 7, dtype=torch.float64)
    merged_out = _train_step_results(module, x.contiguous(memory_format=torch.channels_last))
    assert calls == [3]  # the three branches that open with a 1x1 convolution, as one
    separate_out = _train_step_results(separate, x)  # NCHW input: branch by branch
    assert calls == [3]
    y1, gx1, grads1, state1 = merged_out
    y2, gx2, grads2, state2 = separate_out
    assert y1.shape == (4, chs, 9, 7)
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx1, gx2, rtol=0, atol=1e-12)
    for g1, g2 in zip(grads1, grads2):
        torch.testing.assert_close(g1, g2, rtol=0, atol=1e-10)
    for t1, t2 in zip(state1, state2):  # running statistics and batch counts, written back to each BN
        torch.testing.assert_close(t1, t2, rtol=0, atol=1e-12)
    # settings that must not be merged fall back to branch by branch
    module.branches[1][0].bn.eps = 1e-5
    _train_step_results(module, x.contiguous(memory_format=torch.channels_last))
    assert calls == [3]
    module.branches[1][0].bn.eps = module.branches[0].bn.eps
    module.branches[0].bn = nn.SyncBatchNorm(16).double()  # gathers its own statistics
    _train_step_results(module, x.contiguous(memory_format=torch.channels_last))
    assert calls == [3]


@pytest.mark.parametrize("name", ["inception_v3", "inception_resnet_v2"])
@pytest.mark.parametrize("channels_last_weights", [True, False])
def test_gradients_keep_their_weights_strides(name, channels_last_weights):
    """DDP copies each gradient into a bucket laid out like its parameter and warns, at every run,
    when the strides differ. A 1x1 weight's channels-last strides (C, 1, C, C) and default ones
    (C, 1, 1, 1) hold the same matrix; the matrix-product paths give the weight's own back."""
    model = create_model(name, num_classes=10, stem="low_res", depth_multiplier=0.125, min_depth=8).train()
    if channels_last_weights:
        model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    out = model(x)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    pointwise = [(n, p) for n, p in model.named_parameters() if p.dim() == 4 and p.shape[2:] == (1, 1)]
    assert len(pointwise) > 20
    assert [n for n, p in pointwise if p.grad.stride() != p.stride()] == []


@pytest.mark.parametrize("name", ["googlenet", "inception_resnet_v2"])  # (the same wrapper around every block)
def test_grad_checkpointing_recomputes_blocks_with_the_same_gradients_and_statistics(name):
    """Each block runs again in the backward pass; gradients, loss and batch norm's running
    statistics (which a recomputation in training mode would move twice) equal the plain step's."""
    torch.manual_seed(0)
    kwargs = dict(aux_logits=True) if name in ("googlenet", "inception_v3") else {}
    plain = create_model(name, num_classes=5, stem="low_res", depth_multiplier=0.125, min_depth=8, drop_rate=0.5,
                         **kwargs).train().to(memory_format=torch.channels_last)
    recomputed = copy.deepcopy(plain)
    recomputed.set_grad_checkpointing()
    calls = []
    first = next(iter(recomputed.blocks.values()))
    first.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    x = torch.randn(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    losses = []
    for model in (plain, recomputed):
        torch.manual_seed(1)  # the head's dropout
        out = model(x)
        logits, aux = out if isinstance(out, tuple) else (out, ())
        loss = logits.square().sum() + sum(a.square().sum() for a in aux)
        loss.backward()
        losses.append(loss.item())
    assert calls == [True, True]  # the forward (its maps let go), then the recomputation in backward
    assert losses[0] == losses[1]
    for (key, p), q in zip(plain.named_parameters(), recomputed.parameters()):
        assert torch.equal(p.grad, q.grad), key
    for (key, b), c in zip(plain.named_buffers(), recomputed.buffers()):
        assert torch.equal(b, c), key
    with torch.no_grad():  # nothing to recompute: the plain forward
        calls.clear()
        recomputed(x)
    assert calls == [False]


def test_grad_checkpointing_of_a_feature_extractor():
    # timm's features_only models have it; ours had no such method, and the inner model's was ignored
    torch.manual_seed(0)
    plain = create_model("inception_v3", features_only=True, out_indices=(1, 2), stem="low_res",
                         depth_multiplier=0.125, min_depth=8).train()
    recomputed = copy.deepcopy(plain)
    recomputed.set_grad_checkpointing()
    calls = []
    next(iter(recomputed.model.blocks.values())).register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, recomputed):
        sum(f.square().sum() for f in model(x)).backward()
    assert calls == [1, 1]  # the forward, then the recomputation
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(plain.parameters(), recomputed.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(plain.buffers(), recomputed.buffers()))


def test_residual_up_projection_trains_as_one_matmul_with_the_reference_gradients(monkeypatch):
    import inceptionlab.models.layers as layers
    torch.manual_seed(0)
    branches = Concat([ConvBN(32, 8, 1), nn.Sequential(ConvBN(32, 8, 1), ConvBN(8, 8, 3, padding=1))])
    block = ScaledResidual(branches, 16, 32, scale=0.17)
    randomize_bn(block)
    block.double().train()
    reference = copy.deepcopy(block)
    up_projections, right = [], layers.pointwise_matmul

    def spy(x, weight, bias):
        if weight.shape[0] == 32:  # the up-projection (the merged 1x1 openers have 16 outputs)
            up_projections.append(tuple(weight.shape))
        return right(x, weight, bias)
    monkeypatch.setattr(layers, "pointwise_matmul", spy)
    x = torch.randn(4, 32, 9, 7, dtype=torch.float64)
    fast = _train_step_results(block, x.contiguous(memory_format=torch.channels_last))
    assert up_projections == [(32, 16, 1, 1)]  # x + 0.17 * (W z + b) took the matrix product
    slow = _train_step_results(reference, x)  # NCHW: nn.Conv2d, then x + 0.17 * residual
    assert up_projections == [(32, 16, 1, 1)]
    torch.testing.assert_close(fast[0], slow[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(fast[1], slow[1], rtol=0, atol=1e-12)
    for g1, g2 in zip(fast[2], slow[2]):
        torch.testing.assert_close(g1, g2, rtol=0, atol=1e-10)
    block.eval()  # eval keeps the reference order on any layout
    with torch.no_grad():
        out = block(x.contiguous(memory_format=torch.channels_last))
    assert up_projections == [(32, 16, 1, 1)]
    torch.testing.assert_close(out, reference.eval()(x), rtol=0, atol=1e-12)


# ------------------------------------------------------------------ the papers' switches
def _module_macs(spec: Mixed, switches: Switches, chs: int = 64, size: int = 17) -> int:
    module, _ = Builder(switches).block(spec, chs)
    return macs(module, torch.randn(1, chs, size, size))


def _conv_macs(module: nn.Module, chs: int = 64, size: int = 17) -> int:
    return macs(module, torch.randn(1, chs, size, size))


def test_two_3x3_cost_28_percent_less_than_one_5x5():
    spec = Mixed([Factorized5x5(64, mid=64)])
    one = _module_macs(spec, Switches(factorize_5x5=False))
    two = _module_macs(spec, Switches(factorize_5x5=True))
    assert 1 - two / one == pytest.approx(1 - 18 / 25, abs=1e-9)  # 28%
    assert round(100 * (1 - two / one)) == 28


@pytest.mark.parametrize("n, saving", [(3, 33), (7, 71)])
def test_asymmetric_factorization_savings(n, saving):
    spec = Mixed([FactorizedNxN(64, n, mid=64)])
    square = _module_macs(spec, Switches(factorize_nxn=False))
    asym = _module_macs(spec, Switches(factorize_nxn=None))
    assert round(100 * (1 - asym / square)) == saving
    # and True turns a plain square convolution inside a module into 1xn + nx1
    plain = Mixed([Conv(64, n)])
    assert _module_macs(plain, Switches(factorize_nxn=True)) == asym


def test_a_split_the_switches_make_saves_at_least_the_papers_share():
    """The middle of a split is its narrower end: a widening 5x5 (GoogLeNet's 16 -> 32) split at its
    output width cost 44% more than the 5x5; at equal widths it is the paper's 18/25."""
    for chs, out, kernel, paper in ((16, 32, 5, 18 / 25), (96, 32, 5, 18 / 25), (16, 64, 3, 6 / 9)):
        spec = Mixed([Conv(out, kernel)])
        switch = "factorize_5x5" if kernel == 5 else "factorize_nxn"
        one = _module_macs(spec, Switches(**{switch: None}), chs=chs)
        split = _module_macs(spec, Switches(**{switch: True}), chs=chs)
        assert split < paper * one, (chs, out, kernel)
    googlenet = create_model("googlenet_paper", factorize_5x5=True).blocks.mixed_3b.branches[2]
    assert [c.weight.shape[:2] for c in googlenet.modules() if isinstance(c, nn.Conv2d)] == [
        (16, 192), (16, 16), (32, 16)]  # 1x1 reduce, then 3x3 16 -> 16 -> 32 for the 5x5 16 -> 32
    x = torch.randn(1, 3, 224, 224)
    assert macs(create_model("googlenet_paper", factorize_5x5=True).eval(), x) < \
        macs(create_model("googlenet_paper").eval(), x)


def test_factorize_nxn_reaches_the_3x3s_of_a_factorized_5x5():
    # the double-3x3 branches (drawn as Factorized5x5) and the 3x3s factorize_5x5 makes were left square
    for name, switches in (("bn_inception", {}), ("inception_v3", dict(factorize_5x5=True))):
        model = create_model(name, factorize_nxn=True, **switches, depth_multiplier=0.25)
        square = [n for n, c in model.blocks.named_modules() if isinstance(c, nn.Conv2d) and n.startswith("mixed")
                  and c.stride == (1, 1) and c.kernel_size[0] == c.kernel_size[1] > 1]
        assert square == [], (name, square)
        assert model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_grid_reduction_with_the_low_res_stem_and_min_depth_at_full_width():
    # the v4 stem's reductions lose their stride in the low-res stem: reordering them raised StopIteration
    for name in ("inception_v4", "inception_resnet_v2_paper"):
        for order in ("pool_then_conv", "conv_then_pool"):
            model = create_model(name, stem="low_res", grid_reduction=order, depth_multiplier=0.125, min_depth=8,
                                 num_classes=3).eval()
            assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    # TF-slim's max(int(d * m), min_depth) at every multiplier: 1.0 ignored min_depth, 1.0000001 did not
    assert create_model("inception_v3", min_depth=64).blocks.conv2d_1a_3x3.conv.out_channels == 64
    assert n_params(create_model("inception_v3", min_depth=16)) == n_params(create_model("inception_v3"))


def test_googlenet_paper_pools_as_the_paper():
    """Table 1's 3x3/2 max pool before inception (5a) (torchvision: 2x2/2), and Sec. 5's 5x5/3 average
    pool in the aux heads (torchvision: adaptive to 4x4); at 224 px both give the same shapes."""
    paper = create_model("googlenet_paper", aux_logits=True)
    assert paper.blocks.maxpool_5a_3x3.kernel_size == 3
    assert create_model("googlenet").blocks.maxpool_5a_2x2.kernel_size == 2
    pool = paper.aux_heads["mixed_4b"].pool
    x = torch.randn(1, 512, 14, 14)
    torch.testing.assert_close(pool(x), F.avg_pool2d(x, 5, 3))  # 14 x 14 -> 4 x 4
    paper.train()
    out = paper(torch.randn(2, 3, 224, 224))
    assert out.logits.shape == (2, 1000) and [a.shape for a in out.aux] == [(2, 1000)] * 2


def test_factorize_switches_change_the_whole_network():
    ref = create_model("inception_v3")
    paper = create_model("inception_v3", factorize_5x5=True)
    unfactorized = create_model("inception_v3", factorize_nxn=False)
    kernels = lambda m: {c.kernel_size for c in m.modules() if isinstance(c, nn.Conv2d)}  # noqa: E731
    assert (5, 5) in kernels(ref) and (5, 5) not in kernels(paper)
    assert (7, 7) in kernels(unfactorized) and (1, 7) not in kernels(unfactorized)
    # the paper's Figure 5: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | pool -> 1x1 (the reference has a
    # 5x5 where Figure 5 draws the single 3x3; factorizing it gave two two-3x3 branches)
    figure5 = create_model("inception_v3_paper").blocks.mixed_5b.branches
    shapes = [[tuple(c.kernel_size) for c in b.modules() if isinstance(c, nn.Conv2d)] for b in figure5]
    assert shapes == [[(1, 1)], [(1, 1), (3, 3)], [(1, 1), (3, 3), (3, 3)], [(1, 1)]]
    figure4 = create_model("inception_v3_paper", factorize_5x5=False).blocks.mixed_5b.branches
    assert [[tuple(c.kernel_size) for c in b.modules() if isinstance(c, nn.Conv2d)] for b in figure4][2] == [
        (1, 1), (5, 5)]
    # v3 with no factorization at all costs more, as the paper says
    x = torch.randn(1, 3, 299, 299)
    assert macs(unfactorized.eval(), x) > macs(ref.eval(), x)


@pytest.mark.parametrize("name", FAMILIES)
def test_norm_false_leaves_no_batchnorm_and_gives_convs_a_bias(name):
    model = create_model(name, norm=False, depth_multiplier=0.25)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) for m in model.modules())
    assert all(c.bias is not None for c in model.modules() if isinstance(c, nn.Conv2d))


def test_grid_reduction_variants_keep_shapes_and_order_costs():
    x = torch.randn(1, 3, 299, 299)
    costs, outs = {}, {}
    for style in ("efficient", "pool_then_conv", "conv_then_pool"):
        model = create_model("inception_v3", grid_reduction=style, depth_multiplier=0.5).eval()
        ends = model.forward_endpoints(x, ["mixed_6a", "mixed_7a"])
        outs[style] = {k: tuple(v.shape) for k, v in ends.items()}
        reduction = model.blocks["mixed_6a"]
        costs[style] = macs(reduction, torch.randn(1, 144, 35, 35))
    assert outs["efficient"] == outs["pool_then_conv"] == outs["conv_then_pool"]
    assert outs["efficient"]["mixed_6a"] == (1, 384, 17, 17)
    # Figure 9: pooling first is cheapest, convolving at full resolution first is the most expensive
    assert costs["pool_then_conv"] < costs["efficient"] < costs["conv_then_pool"]
    # only the order of pooling and convolution changes: the pass-through branch is the identity
    # (a 3x3/1 pool left in it had pooled those channels twice)
    pool_first = create_model("inception_v3", grid_reduction="pool_then_conv", depth_multiplier=0.5).blocks.mixed_6a
    assert [type(m).__name__ for m in pool_first.modules() if isinstance(m, nn.MaxPool2d)] == ["MaxPool2d"]
    passed = torch.randn(1, 144, 17, 17)
    assert torch.equal(pool_first[1].branches[2](passed), passed)


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v1", "inception_resnet_v2_paper"])
def test_factorize_5x5_false_puts_back_the_5x5_of_every_double_3x3(name):
    # v4's Inception-A, the Inception-ResNet-A blocks and Reduction-A draw "Rethinking" Fig. 5's two
    # 3x3; written as plain 3x3s, factorize_5x5=False had built the same network again
    kernels = lambda m: [tuple(c.kernel_size) for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    small = dict(depth_multiplier=0.25, min_depth=8)
    with torch.device("meta"):  # shapes only: no weights to initialize, no arithmetic
        ref, unfactorized = create_model(name, **small).eval(), create_model(name, factorize_5x5=False, **small).eval()
    fives = kernels(unfactorized).count((5, 5))
    # v4: 4 Inception-A + Reduction-A; the Inception-ResNets: 5 A blocks + Reduction-A + Reduction-B
    assert fives == {"inception_v4": 5}.get(name, 7) and (5, 5) not in kernels(ref)
    assert len(kernels(ref)) - len(kernels(unfactorized)) == fives  # each 5x5 stands for two 3x3
    x = torch.randn(1, 3, 299, 299, device="meta")
    assert ref.forward_features(x).shape == unfactorized.forward_features(x).shape


def test_residual_scale_one_number_or_one_per_stage():
    model = create_model("inception_resnet_v2", depth_multiplier=0.25)
    blocks = model.blocks
    assert blocks["block35_1"].scale == 0.17 and blocks["block17_1"].scale == 0.10
    assert blocks["block8_1"].scale == 0.20
    assert blocks["block8_10"].scale == 1.0 and blocks["block8_10"].activate is False
    uniform = create_model("inception_resnet_v2", residual_scale=0.3, depth_multiplier=0.25)
    assert {m.scale for n, m in uniform.blocks.items() if n not in ("block8_10",)
            and isinstance(m, ScaledResidual)} == {0.3}
    with pytest.raises(UserError, match="residual_scale takes one number or three"):
        create_model("inception_resnet_v2", residual_scale=(0.1, 0.2))
    import numpy as np
    half = create_model("inception_resnet_v2", residual_scale=np.float64(0.5), depth_multiplier=0.25)
    assert half.blocks["block35_1"].scale == 0.5  # a NumPy number was "not iterable"


def test_depth_multiplier_and_min_depth_scale_every_width():
    model = create_model("inception_v3", depth_multiplier=0.5, min_depth=16)
    assert model.blocks["conv2d_1a_3x3"].conv.out_channels == 16
    assert model.blocks["conv2d_4a_3x3"].conv.out_channels == 96
    assert model.num_features == 1024
    with pytest.raises(UserError, match="depth_multiplier must be > 0"):
        create_model("inception_v3", depth_multiplier=0)
    with pytest.raises(UserError, match=r"^depth_multiplier must be > 0 and <= 1000, got 1000000000.0$"):  # (a traceback)
        create_model("googlenet", depth_multiplier=1e9)
    with pytest.raises(UserError, match=r"^min_depth must be >= 1 and <= 4096, got 100000$"):
        create_model("googlenet", min_depth=100000)
    # the aux heads' widths too: GoogLeNet's hidden fc kept 1024 at 1/8 width (two heads, 5.6x the network)
    for name in ("googlenet", "googlenet_paper"):
        small = create_model(name, aux_logits=True, depth_multiplier=0.125, min_depth=8, num_classes=10, stem="low_res")
        assert [head.hidden.out_features for head in small.aux_heads.values()] == [128, 128]
        assert sum(n_params(head) for head in small.aux_heads.values()) < n_params(small) // 2


def test_the_imagenet_top1_describes_only_the_reference_network():
    # a 10-class 1/4-width Inception-ResNet-v2 reported 'top1': 80.4 in its pretrained_cfg
    assert create_model("inception_resnet_v2").pretrained_cfg["top1"] == 80.4
    assert create_model("inception_resnet_v2", num_classes=1000, drop_rate=0.3).pretrained_cfg["top1"] == 80.4
    small = create_model("inception_resnet_v2", num_classes=10, stem="low_res", depth_multiplier=0.25)
    assert "top1" not in small.pretrained_cfg and "weights_top1_source" not in small.pretrained_cfg
    assert il.model_card("inception_resnet_v2")["top1"] == 80.4


@pytest.mark.parametrize("name", FAMILIES)
def test_low_res_stem_trains_on_32x32_without_upscaling(name):
    model = create_model(name, stem="low_res", num_classes=10, depth_multiplier=0.1, min_depth=8,
                         **({"aux_logits": True} if name != "bn_inception" else {}))
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    logits = out.logits if isinstance(out, il.InceptionOutput) else out
    assert logits.shape == (2, 10)
    loss = logits.sum() + sum(a.sum() for a in getattr(out, "aux", ()))
    loss.backward()
    # no early down-sampling: the first Inception stage sees the full 32x32 grid
    first_stage = model.feature_info[0]
    assert first_stage["reduction"] == 1


# ------------------------------------------------------------------ the API
def test_output_types_eval_and_train():
    model = create_model("googlenet", aux_logits=True, num_classes=7, depth_multiplier=0.25)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    assert isinstance(model(x), torch.Tensor) and model(x).shape == (2, 7)
    model.train()
    out = model(x)
    assert isinstance(out, il.InceptionOutput) and out.logits.shape == (2, 7)
    assert [a.shape for a in out.aux] == [(2, 7), (2, 7)]
    no_aux = create_model("googlenet", num_classes=7, depth_multiplier=0.25).train()
    assert isinstance(no_aux(x), torch.Tensor)


def test_timm_style_api():
    model = create_model("inception_v3", num_classes=5, depth_multiplier=0.25).eval()
    x = torch.randn(1, 3, 96, 96)
    features = model.forward_features(x)
    assert features.shape[1] == model.num_features
    assert model.forward_head(features, pre_logits=True).shape == (1, model.num_features)
    torch.testing.assert_close(model.forward_head(features), model(x))
    assert model.get_classifier().out_features == 5
    model.reset_classifier(3)
    assert model(x).shape == (1, 3) and model.pretrained_cfg["num_classes"] == 3
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features)
    cfg = create_model("inception_v3").pretrained_cfg
    assert cfg["input_size"] == (3, 299, 299) and cfg["min_input_size"] == (3, 75, 75)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"


def test_feature_info_and_features_only_match_timm():
    import timm
    ours = create_model("inception_v4", depth_multiplier=0.25)
    ref = timm.create_model("inception_v4")
    # from the 35x35 grid on, the same taps as timm; at stride 4 ours is the last block of that
    # stride (mixed_4a, 192 channels), where timm taps the one before it (mixed_3a, 160)
    assert [(i["num_chs"] * 4, i["reduction"]) for i in ours.feature_info[2:]] == \
        [(i["num_chs"], i["reduction"]) for i in ref.feature_info[2:]]
    assert (ours.feature_info[1]["module"], ours.feature_info[1]["reduction"]) == ("mixed_4a", 4)
    extractor = create_model("inception_v3", features_only=True, out_indices=(1, 3, -1), depth_multiplier=0.25)
    feats = extractor(torch.randn(1, 3, 299, 299))
    assert [f.shape[1] for f in feats] == [i["num_chs"] for i in extractor.feature_info]
    assert [299 // f.shape[-1] for f in feats] == [4, 17, 37]  # 71, 17, 8 pixels a side


def test_torch_jit_script_is_refused_with_what_works_instead():
    import warnings

    model = create_model("googlenet", depth_multiplier=0.125, min_depth=8)
    for target in (model, create_model("googlenet", features_only=True, depth_multiplier=0.125, min_depth=8),
                   nn.Sequential(model)):  # inside a user's own module too
        with warnings.catch_warnings(), pytest.raises(UserError, match=r"^googlenet does not compile with "
                                                                          r"torch.jit.script; use torch.jit.trace"):
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.10+
            torch.jit.script(target)


def test_tracing_reset_classifier_and_feature_extractors_as_timm_users_expect():
    # torch.jit.trace (and the TorchScript ONNX exporter) refused every size: the sizes were 0-dim
    # tensors, which a set holds as all different
    model = create_model("inception_v3", stem="low_res", depth_multiplier=0.125, min_depth=8).eval()
    x = torch.randn(1, 3, 32, 32)
    traced = torch.jit.trace(model, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
    # reset_classifier on aux heads without a classifier read head.fc.in_features of an Identity
    bare = create_model("googlenet", aux_logits=True, num_classes=0, depth_multiplier=0.125, min_depth=8)
    bare.reset_classifier(10)
    assert [h.fc.out_features for h in bare.aux_heads.values()] == [10, 10] and bare.head.fc.out_features == 10
    for bad in (2.5, -3, True):
        with pytest.raises(UserError, match="num_classes must be a whole number >= 0"):
            bare.reset_classifier(bad)
    import numpy as np
    bare.reset_classifier(np.int64(4), "avg")  # timm's signature, and NumPy's integers
    assert bare.num_classes == 4 and type(bare.num_classes) is int and bare.head.fc.out_features == 4
    with pytest.raises(UserError, match="global_pool 'max' is not available"):
        bare.reset_classifier(4, "max")
    # timm's feature_info accessors; the aux heads a feature extractor drops no longer set its minimum
    extractor = create_model("inception_v3", aux_logits=True, features_only=True, out_indices=[1, 2],
                             depth_multiplier=0.125, min_depth=8).train()
    assert extractor.feature_info.channels() == [i["num_chs"] for i in extractor.feature_info]
    assert extractor.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)  # the preprocessing to feed it, as in timm
    assert extractor.feature_info.reduction() == [4, 8] and model.feature_info.module_name()[-1] == "mixed_7c"
    assert [f.shape[-1] for f in extractor(torch.randn(2, 3, 96, 96))] == [20, 9]  # it asked for 299 px
    for indices, message in ((2, "out_indices must be a list of feature levels"), ((), "out_indices is empty"),
                             (-1, r"out_indices must be a list of feature levels, e\.g\. \(1, 3\), 0\.\.4, or "
                                  r"\(-1,\) for the last; got -1$")):  # (the docstring said "-1 for the last")
        with pytest.raises(UserError, match=message):
            create_model("inception_v3", features_only=True, out_indices=indices)
    for name, message in ((None, "create_model takes a model name"), (123, "create_model takes a model name")):
        with pytest.raises(UserError, match=message):
            create_model(name)
    with pytest.raises(UserError, match=r"^weights= takes the path of a weights file or a state dict \(a dict of tensors, as "
                                        r"model.state_dict\(\) gives\), got int 123$"):
        create_model("googlenet", weights=123)
    with pytest.raises(UserError, match="takes normalized float images, got torch.uint8"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(UserError, match="takes a torch.Tensor batch"):
        model(x.numpy())
    with pytest.raises(UserError, match=r"has torch.float32 weights and the input is torch.float64; convert the input "
                                        r"\(x.to\(torch.float32\)\) or the model"):
        model(x.double())  # PyTorch's own error named neither fix
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts the input itself
        assert model(x.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(UserError, match="features_only takes True or False, got 'yes'"):
        create_model("inception_v3", features_only="yes")
    with pytest.raises(UserError, match="out_indices chooses the feature levels of features_only=True"):
        create_model("inception_v3", out_indices=(1, 2))  # was ignored
    with pytest.raises(UserError, match=r"inception_v3 with depth_multiplier=1000.0 has [0-9.]+ GiB of weights, and "
                                        r"this machine has [0-9.]+ GiB available; lower depth_multiplier"):
        create_model("inception_v3", depth_multiplier=1000.0)  # 1.0 mistyped: PyTorch's allocator error
    ends = model.forward_endpoints(x, "mixed_6e")  # one name: was read letter by letter
    assert list(ends) == ["mixed_6e"]


def test_any_named_end_point():
    model = create_model("bn_inception", depth_multiplier=0.25).eval()
    ends = model.forward_endpoints(torch.randn(1, 3, 224, 224), ["mixed_3b", "mixed_5a"])
    assert ends["mixed_3b"].shape[-1] == 28 and ends["mixed_5a"].shape[-1] == 7
    with pytest.raises(UserError, match="has no block 'mixed_9z'"):
        model.forward_endpoints(torch.randn(1, 3, 224, 224), ["mixed_9z"])


def test_torch_export_with_dynamic_batch():
    model = create_model("inception_resnet_v1", num_classes=4, stem="low_res", depth_multiplier=0.1,
                         min_depth=8).eval()
    x = torch.randn(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    y = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(program.module()(y), model(y))


def test_torch_export_with_dynamic_height_and_width():
    # a symbolic H/W was hashed by the input check ("unhashable type: non-nested SymInt")
    torch.set_num_threads(1)
    h, w = torch.export.Dim("h", min=16, max=512), torch.export.Dim("w", min=16, max=512)
    model = create_model("inception_resnet_v1", num_classes=4, stem="low_res", depth_multiplier=0.1,
                         min_depth=8).eval()
    program = torch.export.export(model, (torch.randn(1, 3, 40, 40),), dynamic_shapes=({2: h, 3: w},))
    for size in ((16, 22), (57, 33)):
        x = torch.randn(1, 3, *size)
        torch.testing.assert_close(program.module()(x), model(x))
    # GoogLeNet's ceil-mode pools (torchvision's layout): torch's shape solver failed deep in sympy
    googlenet = create_model("googlenet", num_classes=4, stem="low_res", depth_multiplier=0.125, min_depth=8).eval()
    with pytest.raises(UserError, match=r"^googlenet exports with a static H and W only \(its ceil-mode pools give "
                                        r"sizes torch.export cannot solve for\); make only the batch dimension "
                                        r"dynamic, and export once per input size \(a tensor an earlier "
                                        r"export with Dim.AUTO took stays marked dynamic: pass x.clone\(\)\)$"):
        torch.export.export(googlenet, (torch.randn(1, 3, 40, 40),), dynamic_shapes=({2: h, 3: w},))


# ------------------------------------------------------------------ bad input
def test_small_input_names_the_minimum_and_the_fix():
    model = create_model("inception_v3", depth_multiplier=0.25).eval()
    with pytest.raises(ValueError, match=r"^inception_v3 needs at least 75x75 input, got 32x32; "
                                         r"use stem='low_res' for small images$"):
        model(torch.randn(1, 3, 32, 32))
    model(torch.randn(1, 3, 75, 75))  # the minimum itself works
    with_aux = create_model("inception_v3", depth_multiplier=0.125, min_depth=8, aux_logits=True).train()
    with pytest.raises(ValueError, match=r"^inception_v3 with aux_logits=True in train mode needs at least 299x299 "
                                         r"input, got 298x298; resize the images up, or build the model without "
                                         r"aux_logits \(eval mode takes 298x298\)$"):  # (it said: use stem='low_res')
        with_aux(torch.randn(2, 3, 298, 298))


def test_wrong_channel_count():
    model = create_model("googlenet", depth_multiplier=0.25).eval()
    with pytest.raises(UserError, match=r"expects a N x 3 x H x W batch, got shape \(1, 1, 224, 224\); "
                                        r"pass in_chans=1"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(UserError, match=r"got one image of shape \(3, 224, 224\); add the batch dimension "
                                        r"\(x.unsqueeze\(0\)\)$"):
        model(torch.randn(3, 224, 224))
    with pytest.raises(UserError, match=r"x H x W batch, got shape \(224, 224\)$"):
        model(torch.randn(224, 224))
    gray = create_model("googlenet", in_chans=1, depth_multiplier=0.25).eval()
    assert gray(torch.randn(1, 1, 224, 224)).shape == (1, 1000)


def test_unknown_model_and_switch_name_the_closest():
    with pytest.raises(UserError, match="unknown model 'inception_v5'; did you mean inception_v4"):
        create_model("inception_v5")
    with pytest.raises(UserError, match="has no switch 'factorise_5x5'; did you mean factorize_5x5"):
        create_model("inception_v3", factorise_5x5=True)
    with pytest.raises(UserError, match="has no switch 'grid_reduction'"):
        create_model("googlenet", grid_reduction="efficient")


def test_contradictory_and_bad_switch_values():
    with pytest.raises(UserError, match="aux_norm=True needs aux_logits=True"):
        create_model("inception_v3", aux_norm=True)
    with pytest.raises(UserError, match="factorize_5x5=True needs kernel_5x5=5"):
        create_model("googlenet", factorize_5x5=True)
    with pytest.raises(UserError, match="grid_reduction must be one of efficient, pool_then_conv, conv_then_pool"):
        create_model("inception_v4", grid_reduction="fast")
    with pytest.raises(UserError, match="stem must be one of imagenet, low_res"):
        create_model("inception_v4", stem="tiny")
    with pytest.raises(UserError, match="does not download weights"):
        create_model("inception_v3", pretrained=True)


@pytest.mark.parametrize("switch, value, message", [
    ("depth_multiplier", "abc", "depth_multiplier takes a finite number, got 'abc'"),     # was a TypeError traceback
    ("in_chans", 1.5, "in_chans takes a whole number, got 1.5"),                    # was quietly 1
    ("num_classes", True, "num_classes takes a whole number, got True"),
    ("norm", "maybe", "norm takes true or false, got 'maybe'"),                     # was quietly on
    ("aux_logits", 3, "aux_logits takes true or false, got 3"),
    ("factorize_nxn", 2, r"factorize_nxn takes true, false or none \(the table as drawn\), got 2"),
    ("residual_scale", [0.1, "x"], r"residual_scale takes a finite number or a list of three, got \[0.1, 'x'\]"),
    ("depth_multiplier", float("inf"), "depth_multiplier takes a finite number, got inf"),  # was an OverflowError
    ("residual_scale", -0.1, r"residual_scale must be > 0 \(the paper scales by 0.1-0.3\), got -0.1"),
    ("residual_scale", (0.17, 0.0, 0.2), r"residual_scale must be > 0 .*, got \(0.17, 0.0, 0.2\)"),
])
def test_switch_values_of_the_wrong_type_are_named(switch, value, message):
    with pytest.raises(UserError, match=f"^{message}$"):
        create_model("inception_resnet_v2", **{switch: value})


def test_switch_values_of_the_right_type_still_build():
    import numpy as np
    model = create_model("inception_resnet_v2", num_classes=np.int64(7), depth_multiplier=0.25, drop_rate=0,
                         factorize_nxn=None, residual_scale=[0.1, 0.2, 0.3], norm=True)
    assert model.num_classes == 7 and model.switches.residual_scale == (0.1, 0.2, 0.3)


def test_out_indices_out_of_range_are_refused_not_wrapped():
    # 7 used to wrap round to 2 (7 % 5) and return the 35x35 map without a word
    with pytest.raises(UserError, match=r"out_indices must lie in 0..4 \(or -5..-1 from the end\) for inception_v4, got 7"):
        create_model("inception_v4", features_only=True, out_indices=(7,), depth_multiplier=0.25)
    with pytest.raises(UserError, match="got -6"):
        create_model("inception_v4", features_only=True, out_indices=(-6,), depth_multiplier=0.25)
    last = create_model("inception_v4", features_only=True, out_indices=(-1,), depth_multiplier=0.25)
    assert [i["module"] for i in last.feature_info] == ["mixed_7d"]
    # out of order: the blocks after the first index given were dropped ("has no block 'mixed_5c'")
    torch.manual_seed(0)
    both = create_model("googlenet", features_only=True, out_indices=(2, 0), depth_multiplier=0.25).eval()
    torch.manual_seed(0)
    ordered = create_model("googlenet", features_only=True, out_indices=(0, 2), depth_multiplier=0.25).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        late, early = both(x)
        first, third = ordered(x)
    assert torch.equal(late, third) and torch.equal(early, first) and late.shape[-1] < early.shape[-1]


def test_weights_of_another_architecture_or_class_count(tmp_path):
    import torchvision
    ref = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    path = tmp_path / "g.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(UserError, match=r"g\.pth does not fit inception_v3: its body has"):
        create_model("inception_v3", weights=path)
    with pytest.raises(UserError, match="has a 1000-class classifier, the model 10 classes; pass num_classes=1000"):
        create_model("googlenet", num_classes=10, weights=path)
    ours = create_model("googlenet", num_classes=10, depth_multiplier=0.25)
    torch.save(ours.state_dict(), tmp_path / "ours.pth")
    with pytest.raises(UserError, match="missing keys"):
        create_model("bn_inception", weights=tmp_path / "ours.pth")


def test_building_every_model_is_quick_enough_to_list():
    # not a timing test: building every registered model at full size works and gives the
    # right stage structure (the build-time figure is in BENCHMARKS.md)
    for name in il.list_models():
        model = create_model(name)
        assert model.feature_info[-1]["reduction"] == 32


def test_torch_compile_captures_one_graph_with_the_eager_outputs():
    # fullgraph=True fails on any graph break; aot_eager skips the C++ code generation that takes
    # minutes on this CPU (inductor itself is exercised by `inceptionlab benchmark --compile`)
    model = create_model("googlenet", num_classes=4, stem="low_res", depth_multiplier=0.1, min_depth=8).eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


def test_sizes_at_which_parallel_branches_disagree_get_a_clear_error():
    # BN-Inception's stride-2 modules (Caffe layout: padded convs next to a ceil-mode pool) only
    # agree at even grid sizes; an odd one is named with working sizes instead of a concat error
    model = create_model("bn_inception", depth_multiplier=0.25).eval()
    with pytest.raises(UserError, match=r"bn_inception cannot take 75x75 input: the branches of a stride-2 "
                                        r"module would disagree in size .*; use a size such as \d+"):
        model(torch.randn(1, 3, 75, 75))
    side = model.min_input_size
    assert model(torch.randn(1, 3, side, side)).shape == (1, 1000)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_a_model_name_means_the_model_even_beside_a_folder_of_that_name(tmp_path, monkeypatch, capsys):
    # create_model("googlenet") beside a save_pretrained folder "googlenet" recursed until Python gave up
    from inceptionlab.cli import main

    monkeypatch.chdir(tmp_path)
    small = dict(depth_multiplier=0.125, min_depth=8, stem="low_res", num_classes=3)
    saved = create_model("googlenet", **small).eval()
    saved.save_pretrained("googlenet", classes=["a", "b", "c"])
    fresh = create_model("googlenet")
    assert fresh.num_classes == 1000 and "saved_from" not in fresh.pretrained_cfg
    loaded = create_model("./googlenet").eval()  # the folder, by its path
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), saved(x))
    assert loaded.pretrained_cfg["classes"] == ["a", "b", "c"]
    # its model.safetensors as weights= still brings the folder's config along
    assert create_model("googlenet", weights="googlenet/model.safetensors").num_classes == 3
    assert create_model("googlenet", weights="googlenet").num_classes == 3  # the folder as weights=, the same
    # a switch against the folder's own: one fix, in the API's terms (it gave the API's and the CLI's)
    with pytest.raises(UserError, match=r"^googlenet holds weights trained with num_classes=3; leave num_classes "
                                        r"out \(the folder sets it\), then reset_classifier\(5\) for a new classifier$"):
        create_model("./googlenet", num_classes=5)
    assert main(["predict", "--model", "googlenet", "x.jpg"]) == 2
    assert capsys.readouterr().err.strip().endswith("; ./googlenet is a folder here: pass --model ./googlenet to use it")


def test_aux_heads_after_api_changes_and_train_mode_batch_of_one():
    import warnings

    small = dict(depth_multiplier=0.125, min_depth=8, stem="low_res", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    # reset_classifier(0): the aux heads have no classifier, so training gives features, not
    # (features, aux features) that InceptionLoss took for logits
    model = create_model("inception_v3", aux_logits=True, **small).train()
    model.reset_classifier(0)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, model.num_features)
    model.reset_classifier(5)  # the heads come back with the classes
    assert [a.shape for a in model(x).aux] == [(2, 5)]
    # drop_aux_heads then save_pretrained: the folder said aux_logits=True and reloaded fresh heads
    model.drop_aux_heads()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("error")  # (the reload warned that the aux heads kept their initial weights)
        model.save_pretrained(folder)
        again = create_model(folder).train()
    assert not again.has_aux and isinstance(again(x), torch.Tensor)
    # a batch of one in train mode: one line naming the fix, not batch norm's own error
    embedder = create_model("inception_resnet_v1", embedding_dim=8, **small).train()
    with pytest.raises(UserError, match=r"^inception_resnet_v1 in train mode needs more than one value per channel.*"
                                        r"a batch of 1 .* batches of 2 or more images, or call model.eval\(\)$"):
        embedder(x[:1])
    assert embedder.eval()(x[:1]).shape == (1, 10)
    # forward_head takes forward_features' output
    with pytest.raises(UserError, match=rf"^forward_head takes forward_features' output, N x {model.num_features} x H x "
                                        rf"W; got shape \(2, {model.num_features}\)$"):
        model.forward_head(torch.randn(2, model.num_features))
    # tracing reads the sizes without TracerWarnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        torch.jit.trace(model.eval(), x)


def test_weights_that_are_a_folder_or_missing_say_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"^\S+empty is a folder, not a weights file; it holds no weights file "
                                        r"\(.safetensors/.pth/.pt/.bin/.h5\); pass one, or a folder that training or "
                                        r"save_pretrained wrote$"):
        create_model("googlenet", weights=tmp_path / "empty", depth_multiplier=0.125, min_depth=8)
    # a run's checkpoints/ folder: "pass the file inside it" did not say which
    for name in ("step_00000003.pt", "best.pt", "notes.txt"):
        (tmp_path / "empty" / name).write_text("x")
    with pytest.raises(UserError, match=r"^\S+empty is a folder, not a weights file; pass one of its files "
                                        r"\(best.pt, step_00000003.pt\), e.g. \S+empty/best.pt$"):
        create_model("googlenet", weights=tmp_path / "empty", depth_multiplier=0.125, min_depth=8)
    with pytest.raises(UserError, match=r"^\S+nope does not exist; pass a folder written by training or save_pretrained$"):
        il.from_pretrained(tmp_path / "nope")  # it said "nope has no config.json"


def test_api_edges_list_models_save_pretrained_and_a_switch_the_weights_lack(tmp_path):
    assert il.list_models(None) == il.list_models() and il.list_models("googlenet*") == ["googlenet", "googlenet_paper"]
    with pytest.raises(UserError, match="list_models takes a name pattern"):
        il.list_models(3)
    model = create_model("googlenet", depth_multiplier=0.125, min_depth=8)
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(UserError, match=r"^cannot save in \S+afile: \S+afile is a file, not a folder; pass a folder"):
        model.save_pretrained(tmp_path / "afile")  # a bare FileExistsError before
    assert (tmp_path / "afile").read_text() == "keep"
    # default weights into a model with a switch they lack: that switch is named (the hint named others)
    torch.save(create_model("googlenet_paper").state_dict(), tmp_path / "g.pth")
    with pytest.raises(UserError, match=r"the file holds googlenet_paper weights of the default switches, and this "
                                        r"model has factorize_5x5=True: leave those out$"):
        create_model("googlenet_paper", factorize_5x5=True, weights=tmp_path / "g.pth")


def test_public_names_and_docstrings():
    import inceptionlab
    from inceptionlab.models.weights import save_pretrained
    assert inceptionlab.save_pretrained is save_pretrained
    names = inceptionlab.__all__
    assert "save_pretrained" in names and len(set(names)) == len(names) and set(names) <= set(dir(inceptionlab))
    for name in names:
        if name != "__version__":
            assert getattr(inceptionlab, name).__doc__, name  # model_card had none
    card = il.model_card("googlenet")
    for key in ("paper", "reference", "input_size", "crop_pct", "interpolation", "mean", "std", "top1",
                "weights_top1_source", "name"):
        assert key in card and f"``{key}``" in il.model_card.__doc__, key
    assert "'*', or None" in il.list_models.__doc__ and "None: all" not in il.list_models.__doc__
    assert "features_only" in il.create_model.__doc__ and "out_indices" in il.create_model.__doc__


def test_a_new_classifier_drops_the_old_ones_names_and_top1(tmp_path):
    """reset_classifier(n): the class names and ImageNet top-1 of the old classifier go with it
    (save_pretrained wrote 5 names beside a 3-class classifier, which predict then refused)."""
    model = create_model("googlenet", depth_multiplier=0.125, num_classes=5, stem="low_res")
    model.save_pretrained(tmp_path / "five", classes=list("abcde"))
    again = create_model(str(tmp_path / "five"))
    again.reset_classifier(3)
    assert "classes" not in again.pretrained_cfg and again.pretrained_cfg["switches"]["num_classes"] == 3
    again.save_pretrained(tmp_path / "three")
    reloaded = create_model(str(tmp_path / "three"))
    assert reloaded.num_classes == 3 and reloaded.pretrained_cfg.get("classes") is None
    imagenet = create_model("googlenet")
    assert imagenet.pretrained_cfg["top1"] == pytest.approx(69.778)
    assert create_model("googlenet", norm=True).pretrained_cfg["top1"] == pytest.approx(69.778)  # a default value
    imagenet.reset_classifier(10)
    assert "top1" not in imagenet.pretrained_cfg
    imagenet.pretrained_cfg["classes"] = list("abc")  # edited by hand: refused, not written
    with pytest.raises(UserError, match=r"the model's pretrained_cfg lists 3 class names for its 10-class "
                                        r"classifier; pass classes=\[\.\.\.\] with one name per output"):
        imagenet.save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad" / "config.json").exists()


def test_model_names_as_paths_and_empty_names():
    from pathlib import Path

    assert create_model(Path("googlenet"), depth_multiplier=0.125).name == "googlenet"
    with pytest.raises(UserError, match=r"^runs/missing does not exist: pass a folder that training or save_pretrained"):
        create_model(Path("runs/missing"))
    with pytest.raises(UserError, match=r"^the model name is empty; pass a name such as inception_v3"):
        create_model("")
    assert il.model_card(Path("inception_v3"))["name"] == "inception_v3"


def test_widths_that_do_not_fit_in_memory_are_refused_before_building(monkeypatch):
    """Measured on meta first: Linux overcommits, and googlenet with min_depth=4096 (19 GiB) was
    killed by the kernel without a word while its weights were initialized."""
    from inceptionlab.models import registry

    monkeypatch.setattr(registry, "_available_memory", lambda: 100 * 2**20)
    with pytest.raises(UserError, match=r"^googlenet with depth_multiplier=2.0 has 0.1 GiB of weights, and this "
                                        r"machine has 0.1 GiB available; lower depth_multiplier or min_depth$"):
        create_model("googlenet", depth_multiplier=2.0)
    assert create_model("googlenet", depth_multiplier=0.5).name == "googlenet"  # standard widths are not measured
    with pytest.raises(UserError, match=r"^googlenet with num_classes=2500000 has 9.6 GiB of weights, .*; lower num_classes$"):
        create_model("googlenet", num_classes=2_500_000)  # a 1024 x 2.5M classifier


def test_tracing_and_endpoints_refusals_name_what_works():
    model = create_model("inception_v3", depth_multiplier=0.125).eval()
    with pytest.raises(UserError, match=r"does not trace with torch.fx.symbolic_trace .*use torch.export.export"):
        torch.fx.symbolic_trace(model)
    fast = il.optimize_for_inference(copy.deepcopy(model))
    x = torch.randn(2, 3, 139, 139)
    assert torch.allclose(fast.forward_endpoints(x, ["mixed_5b"])["mixed_5b"],
                          model.forward_endpoints(x, ["mixed_5b"])["mixed_5b"], atol=1e-4)
    with pytest.raises(UserError, match=r"^optimize_for_inference runs the stem blocks conv2d_1a_3x3 to "
                                        r"maxpool_5a_3x3 as one, and keeps only maxpool_5a_3x3's output; ask the "
                                        r"model before optimize_for_inference for conv2d_2b_3x3$"):
        fast.forward_endpoints(x, fast.feature_info.module_name())
    with pytest.raises(UserError, match=r"^an optimize_for_inference model does not trace with torch.jit.trace"):
        torch.jit.trace(fast, x)


def test_register_model_keeps_the_built_in_names_and_fills_a_card_without_mean():
    from inceptionlab.models.registry import _REGISTRY, register_model

    with pytest.raises(UserError, match=r"^a model named 'googlenet' is registered already \(inceptionlab.models."
                                        r"googlenet.googlenet\); register yours under another name$"):
        @register_model("googlenet")
        def mine(**switches):
            return create_model("googlenet_paper", **switches)
    assert create_model("googlenet", depth_multiplier=0.125).pretrained_cfg["reference"] == "torchvision googlenet"

    @register_model("my_small_googlenet", input_size=(3, 64, 64))  # a card without mean and std
    def my_small_googlenet(num_classes: int = 1000, in_chans: int = 3):
        return il.models.googlenet.googlenet(depth_multiplier=0.125, num_classes=num_classes, in_chans=in_chans)
    try:
        gray = create_model("my_small_googlenet", in_chans=1)
        assert gray.pretrained_cfg["mean"] == (0.5,) and gray.pretrained_cfg["std"] == (0.5,)
    finally:
        del _REGISTRY["my_small_googlenet"]


def test_explain_factorization_hint_for_googlenet_names_switches_that_work():
    from inceptionlab.tools.summary import explain_factorization, format_factorization

    text = format_factorization(explain_factorization("googlenet"))
    assert text.endswith("--model-kwargs kernel_5x5=5 factorize_5x5=true or factorize_nxn=true")
    assert explain_factorization("googlenet", kernel_5x5=5, factorize_5x5=True).found  # the hint works
    assert format_factorization(explain_factorization("googlenet_paper")).endswith(
        "--model-kwargs factorize_5x5=true or factorize_nxn=true")


# ------------------------------------------------------------------ 1x1 convolutions in training
@pytest.mark.parametrize("path", ["gemm", "onednn"])
def test_pointwise_convolutions_train_on_either_path_with_the_same_results(path, monkeypatch, one_thread):
    """Training's 1x1 convolutions run as one GEMM, or (`cpus.pointwise_path`, on AVX-512 CPUs that
    MKL does not take its AVX-512 kernels on) as oneDNN's convolution forward and backward; both
    give nn.Conv2d's outputs and gradients."""
    from torch.profiler import ProfilerActivity, profile

    from inceptionlab import cpus
    monkeypatch.setenv("INCEPTIONLAB_POINTWISE", path)
    cpus.pointwise_path.cache_clear()
    try:
        torch.manual_seed(0)
        layer = ConvBN(48, 24, 1).train()
        reference = copy.deepcopy(layer)
        x = torch.randn(3, 48, 9, 9)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            y = layer(x.contiguous(memory_format=torch.channels_last))
            y.square().sum().backward()
        ops = {e.key for e in prof.key_averages()}
        reference(x).square().sum().backward()
        torch.testing.assert_close(y, reference(x).detach(), rtol=1e-4, atol=1e-5)
        for p, q in zip(layer.parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)
        if path == "onednn" and torch.backends.mkldnn.is_available():
            assert "aten::mkldnn_convolution" in ops and not ops & {"aten::mm", "aten::addmm", "aten::linear"}
            assert not [op for op in ops if "slow_conv" in op]  # backward too: no im2col fallback
        if path == "gemm":
            assert "aten::linear" in ops and "aten::mkldnn_convolution" not in ops
    finally:
        cpus.pointwise_path.cache_clear()


def test_the_pointwise_path_follows_the_cpu_and_the_environment(monkeypatch, tmp_path):
    from inceptionlab import cpus
    from inceptionlab.errors import UserError
    amd, intel = tmp_path / "amd", tmp_path / "intel"
    amd.write_text("vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512bw\n\n"
                   "vendor_id\t: AuthenticAMD\nflags\t\t: fpu\n")
    intel.write_text("vendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f\n")
    assert cpus.cpu_identity(str(amd)) == ("AuthenticAMD", {"fpu", "avx2", "avx512f", "avx512bw"})
    assert cpus.cpu_identity(str(tmp_path / "none")) == ("", set())
    real = cpus.cpu_identity
    monkeypatch.delenv("INCEPTIONLAB_POINTWISE", raising=False)
    try:
        for cpuinfo, expected in [(amd, "onednn"), (intel, "gemm")]:
            monkeypatch.setattr(cpus, "cpu_identity", lambda f=cpuinfo: real(str(f)))
            cpus.pointwise_path.cache_clear()
            assert cpus.pointwise_path() == (expected if torch.backends.mkldnn.is_available() else "gemm")
        monkeypatch.setattr(cpus, "cpu_identity", lambda: ("AuthenticAMD", {"avx2"}))  # MKL's AVX2 kernels are its best
        cpus.pointwise_path.cache_clear()
        assert cpus.pointwise_path() == "gemm"
        monkeypatch.setenv("INCEPTIONLAB_POINTWISE", "oneDNN")
        cpus.pointwise_path.cache_clear()
        assert cpus.pointwise_path() == "onednn"
        monkeypatch.setenv("INCEPTIONLAB_POINTWISE", "mkl")
        cpus.pointwise_path.cache_clear()
        with pytest.raises(UserError, match=r"^INCEPTIONLAB_POINTWISE='mkl' is not a path for 1x1 convolutions; "
                                            r"set it to gemm or onednn, or unset it"):
            cpus.pointwise_path()
    finally:
        cpus.pointwise_path.cache_clear()
