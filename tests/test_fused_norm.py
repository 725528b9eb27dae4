"""The fused training batch norm + ReLU kernel (inceptionlab/models/fused_norm.py, csrc/bn_relu.cpp):
the values and gradients of BatchNorm2d then ReLU, computed in float64 as the reference."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from inceptionlab.models import fused_norm
from inceptionlab.models.layers import Concat, ConvBN

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def built_kernel():
    kernel = fused_norm.kernel()
    assert kernel is not None, "the fused kernel did not build on this machine (g++ and ninja are needed)"
    return kernel


def _bn(chs: int, seed: int = 1) -> nn.BatchNorm2d:
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(chs, eps=1e-3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    return bn


def _step(fn, x: torch.Tensor, bn: nn.Module, grad: torch.Tensor):
    """fn(x, bn) forward and backward: output, input grad, weight and bias grads, running stats, count."""
    x = x.clone().requires_grad_()
    out = fn(x, bn)
    out.backward(grad.to(out.dtype))
    return [out.detach(), x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var,
            bn.num_batches_tracked]


def _reference(x, bn, grad, relu=True):
    """The same step through BatchNorm2d (and ReLU) in float64."""
    return _step(lambda t, b: F.relu(b(t)) if relu else b(t), x.double(), copy.deepcopy(bn).double(), grad)


def _fused(x, bn, grad, relu=True):
    return _step(lambda t, b: fused_norm.fused_bn_relu(t, b, relu=relu), x, copy.deepcopy(bn), grad)


def _assert_close(got, want, rtol=1e-5):
    names = ["output", "input grad", "weight grad", "bias grad", "running mean", "running var", "batch count"]
    for name, g, w in zip(names, got, want):
        assert g.dtype == (torch.long if name == "batch count" else torch.float32), name
        scale = w.abs().max().item() or 1.0
        err = (g.double() - w.double()).abs().max().item() / scale
        assert err <= rtol, f"{name}: relative error {err:.1e}"


@pytest.mark.parametrize("shape", [(4, 64, 15, 13), (2, 131, 7, 9), (3, 768, 5, 5), (1, 8, 2, 1), (2, 1, 3, 3)])
@pytest.mark.parametrize("relu", [True, False])
def test_fused_batch_norm_relu_matches_batchnorm2d_in_float64(shape, relu):
    torch.manual_seed(0)
    # a mean far from zero: float sums of x and x^2 would cancel; the kernel's shifted sums do not
    x = (torch.randn(shape) * 2 + 6).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape)
    bn = _bn(shape[1])
    got = _fused(x, bn, grad, relu)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    assert got[6].item() == 1
    if relu:
        assert (got[0] == 0).float().mean() > 0.1  # the ReLU has work to do
    values_per_channel = shape[0] * shape[2] * shape[3]
    # with two values per channel the input gradient is a difference of near-equal terms in float32
    _assert_close(got, _reference(x, bn, grad, relu), rtol=1e-5 if values_per_channel > 2 else 1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_kernel_splits_its_rows_over_torchs_threads_with_the_same_values(threads):
    """Built with OpenMP, ATen's parallel_for hands each of torch's threads a share of the rows (the
    sums' partial results combine in a fixed order); the values are those of one thread."""
    torch.manual_seed(0)
    shape = (4, 32, 33, 31)  # 4092 rows: enough for two chunks of the sums and of the elementwise pass
    x = (torch.randn(shape) * 2 + 6).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape)
    bn = _bn(32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _fused(x, bn, grad)
        torch.set_num_threads(threads)
        got = _fused(x, bn, grad)
    finally:
        torch.set_num_threads(before)
    _assert_close(got, _reference(x, bn, grad), rtol=1e-5)
    _assert_close(got, one, rtol=1e-6)


def test_fused_kernel_is_more_accurate_than_float32_pytorch_far_from_zero():
    torch.manual_seed(0)
    shape = (8, 256, 9, 9)
    x = (torch.randn(shape) * 2 + 8).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape)
    bn = _bn(256)
    want = _reference(x, bn, grad)
    eager = _step(lambda t, b: F.relu(b(t)), x, copy.deepcopy(bn), grad)
    fused = _fused(x, bn, grad)

    def input_grad_error(res):
        return ((res[1].double() - want[1]).abs().max() / want[1].abs().max()).item()
    assert input_grad_error(fused) < 1e-5
    assert input_grad_error(fused) < input_grad_error(eager)


def test_channel_slices_and_nchw_maps_give_the_same_results():
    """The kernel reads rows that are further apart than the channels (a slice of a wider map, as
    Concat's gradients are) without a copy, and any other layout through one."""
    torch.manual_seed(0)
    wide = (torch.randn(3, 40, 6, 5) * 3 - 2).contiguous(memory_format=torch.channels_last)
    x = wide[:, 8:24]  # strided rows
    assert not x.is_contiguous(memory_format=torch.channels_last)
    wide_grad = torch.randn(3, 40, 6, 5).contiguous(memory_format=torch.channels_last)
    grad = wide_grad[:, 16:32]
    bn = _bn(16)
    want = _reference(x, bn, grad)
    _assert_close(_fused(x, bn, grad), want)
    _assert_close(_fused(x.contiguous(), bn, grad.contiguous()), want)  # NCHW input and gradient
    assert not fused_norm.supports(x.contiguous(), bn)  # which training leaves to PyTorch


def test_conv_bn_trains_through_the_kernel_with_pytorch_values(monkeypatch):
    torch.manual_seed(0)
    block = ConvBN(24, 32, 3, padding=1)
    block.bn = _bn(32)
    x = torch.randn(4, 24, 10, 10).contiguous(memory_format=torch.channels_last)
    calls = []
    real = fused_norm.fused_bn_relu
    monkeypatch.setattr(fused_norm, "fused_bn_relu", lambda *a, **k: calls.append(1) or real(*a, **k))

    def run(module):
        inp = x.clone().to(module.conv.weight.dtype).requires_grad_()
        out = module(inp)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        return [out, inp.grad] + [p.grad for p in module.parameters()] + list(module.state_dict().values())
    fast = run(copy.deepcopy(block).train())
    assert calls == [1]
    reference = run(copy.deepcopy(block).double().train())  # float64 never takes the kernel
    assert calls == [1]
    for got, want in zip(fast, reference):
        torch.testing.assert_close(got.double() if got.is_floating_point() else got,
                                   want if want.is_floating_point() else want, rtol=1e-4, atol=1e-5)
    block.eval()  # eval mode is PyTorch's batch norm: reference outputs bit for bit
    with torch.no_grad():
        block(x)
    assert calls == [1]


def test_merged_openers_take_the_kernel_and_keep_each_batch_norms_statistics(monkeypatch):
    torch.manual_seed(0)
    module = Concat([ConvBN(16, 8, 1), ConvBN(16, 12, 1), nn.Sequential(ConvBN(16, 4, 1), ConvBN(4, 6, 3, padding=1))])
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.load_state_dict(_bn(m.num_features, seed=m.num_features).state_dict())
    separate = copy.deepcopy(module)
    x = torch.randn(2, 16, 7, 7).contiguous(memory_format=torch.channels_last)
    kernel_calls = []
    real = fused_norm.batch_norm_relu
    monkeypatch.setattr(fused_norm, "batch_norm_relu", lambda *a, **k: kernel_calls.append(a[0].shape[1]) or real(*a, **k))
    out = module.train()(x)
    assert kernel_calls[0] == 8 + 12 + 4  # one kernel call for the three merged 1x1 openers
    monkeypatch.setenv(fused_norm.ENV_SWITCH, "0")
    reference = separate.train()(x.contiguous())  # NCHW, PyTorch's batch norm, branch by branch
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(module.state_dict().items(), separate.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_switch_off_and_failed_build_fall_back_to_pytorch(monkeypatch):
    bn = _bn(8).train()
    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    assert fused_norm.supports(x, bn)
    monkeypatch.setenv(fused_norm.ENV_SWITCH, "0")
    assert not fused_norm.supports(x, bn)
    monkeypatch.delenv(fused_norm.ENV_SWITCH)
    assert not fused_norm.supports(x.double(), bn.double())  # float32 only
    assert not fused_norm.supports(x[:1, :, :1, :1], bn.float())  # one value per channel: PyTorch's error
    bn.float().eval()
    assert not fused_norm.supports(x, bn)

    def no_compiler():
        raise RuntimeError("Error building extension 'inceptionlab_bn_relu': c++: not found")
    monkeypatch.setattr(fused_norm, "_kernel", None)
    monkeypatch.setattr(fused_norm, "_tried", False)
    monkeypatch.setattr(fused_norm, "_build", no_compiler)
    block = ConvBN(8, 8, 1).train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = block(x)
        block(x)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1  # warned once
    assert "could not be built (Error building extension 'inceptionlab_bn_relu': c++: not found)" in messages[0]
    assert "INCEPTIONLAB_FUSED_NORM=0" in messages[0]
    torch.testing.assert_close(out, F.relu(F.batch_norm(block.conv(x), None, None, block.bn.weight, block.bn.bias,
                                                        True, 0.1, 1e-3)))


def test_bad_switch_values_are_one_line_errors(monkeypatch):
    # INCEPTIONLAB_FUSED_NORM=maybe meant on without a word; INCEPTIONLAB_KERNEL_CACHE_MB=abc turned the
    # built kernel off as "could not be built (could not convert string to float)"
    from inceptionlab.errors import UserError

    monkeypatch.setenv(fused_norm.ENV_SWITCH, "maybe")
    with pytest.raises(UserError, match=r"^INCEPTIONLAB_FUSED_NORM='maybe' is neither on nor off; set it to 1"):
        fused_norm.enabled()
    monkeypatch.setenv(fused_norm.ENV_SWITCH, "yes")
    assert fused_norm.enabled()
    monkeypatch.setattr(fused_norm, "_kernel", None)
    monkeypatch.setattr(fused_norm, "_tried", False)
    for bad in ("abc", "-5", "inf"):
        monkeypatch.setenv(fused_norm.CACHE_SWITCH, bad)
        with pytest.raises(UserError, match=rf"^INCEPTIONLAB_KERNEL_CACHE_MB='{bad}' is not a size in MiB"):
            fused_norm.kernel()
    monkeypatch.setenv(fused_norm.CACHE_SWITCH, "0.5")
    assert fused_norm.cache_limit() == 2**19


def _model_step(model: nn.Module, x: torch.Tensor):
    """Logits, input gradient, parameter gradients and buffers of one training step."""
    x = x.clone().requires_grad_()
    torch.manual_seed(1)  # the same dropout
    out = model(x)
    logits = out.logits if hasattr(out, "logits") else out
    logits.backward(torch.linspace(-1, 1, logits.numel()).view_as(logits))
    return [logits.detach(), x.grad] + [p.grad for p in model.parameters()] + list(model.buffers())


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "inception_resnet_v2"])
def test_branches_write_into_the_concatenation_with_the_values_of_torch_cat(monkeypatch, name):
    """In training, each branch's last batch norm writes its result into the module's output (the
    gradient comes back as slices of one map): the same values as torch.cat of the branches."""
    import inceptionlab.models.layers as layers
    torch.manual_seed(0)
    model = il_model(name)
    model.train().to(memory_format=torch.channels_last)
    with_cat = copy.deepcopy(model)
    x = torch.randn(2, 3, 75, 75).contiguous(memory_format=torch.channels_last)
    results, writes = [], []
    real = fused_norm.ConcatOutput.result
    monkeypatch.setattr(fused_norm.ConcatOutput, "result", lambda self: writes.append(self.channels) or real(self))
    results.append(_model_step(model, x))
    modules = [m for m in model.modules() if isinstance(m, Concat)]
    outermost = [m for m in modules if not any(m is not n and m in set(n.modules()) for n in modules)]
    assert len(writes) == len(outermost)  # every module's output was filled in place
    monkeypatch.setattr(layers, "output_channels", lambda *a: None)  # back to torch.cat
    results.append(_model_step(with_cat, x))
    assert len(writes) == len(outermost)
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_without_batch_norm_training_keeps_the_merged_openers(monkeypatch):
    """A network built with ``norm=False`` has nothing for the kernel to write: its modules run
    their 1x1 openers as one matrix product, as they did before the kernel, with the same values."""
    import inceptionlab.models.layers as layers
    from inceptionlab import create_model
    torch.manual_seed(0)
    model = create_model("inception_v3", num_classes=10, aux_logits=False, norm=False, drop_rate=0.0).train()
    model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 75, 75).contiguous(memory_format=torch.channels_last)
    merged = []
    real = layers.merged_pointwise
    monkeypatch.setattr(layers, "merged_pointwise", lambda x, blocks: merged.append(len(blocks)) or real(x, blocks))
    monkeypatch.setattr(fused_norm, "ConcatOutput", None)  # would fail if the in-place path were taken
    got = model(x)
    assert merged == [3, 3, 3, 3, 3, 3, 3, 2, 3, 3]  # Mixed_5b-7c but 6a (one opener)
    monkeypatch.setattr(layers, "_mergeable_openers", lambda branches: {})  # plain torch.cat of each branch
    torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-6)


def test_frozen_batch_norm_never_builds_the_kernel(monkeypatch):
    """--freeze-bn's batch norms are not the kernel's to run; asking for it had built it (minutes on
    a busy machine) inside the first timed training step, and then left it unused."""
    from inceptionlab import create_model
    from inceptionlab.models.finetune import freeze_bn
    model = create_model("inception_v3", num_classes=10, stem="low_res", depth_multiplier=0.125, min_depth=8).train()
    freeze_bn(model)
    model.to(memory_format=torch.channels_last)
    asked = []
    monkeypatch.setattr(fused_norm, "kernel", lambda: asked.append(1))
    model(torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)).sum().backward()
    assert asked == []


def test_bf16_autocast_trains_bn_inception_in_channels_last():
    # its first module gets a float32 map (batch norm, then a pool), and took the fused path with the
    # bf16 products of autocast: "input must be a 2-d float32 CPU tensor"
    from inceptionlab import create_model
    model = create_model("bn_inception", num_classes=5, stem="low_res", depth_multiplier=0.125, min_depth=8).train()
    model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16):
        out = model(torch.randn(4, 3, 28, 28).contiguous(memory_format=torch.channels_last))
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and all(p.grad is not None for p in model.parameters())


def il_model(name: str) -> nn.Module:
    from inceptionlab import create_model
    kwargs = {"aux_logits": False} if name in ("googlenet", "inception_v3") else {}
    return create_model(name, num_classes=10, **kwargs)


def test_concat_output_says_when_the_branches_do_not_fit():
    out = fused_norm.ConcatOutput(6)
    out.copy(torch.ones(2, 4, 3, 3), 0)
    with pytest.raises(ValueError, match=r"the branches filled 4 of the concatenation's 6 channels"):
        out.result()
    with pytest.raises(ValueError, match=r"does not fit the concatenation \(2, 6, 3, 3\)"):
        out.copy(torch.ones(2, 2, 4, 4), 4)
    out.copy(torch.full((2, 2, 3, 3), 2.0), 4)
    assert torch.equal(out.result(), torch.cat([torch.ones(2, 4, 3, 3), torch.full((2, 2, 3, 3), 2.0)], 1))
    with pytest.raises(ValueError, match="more than the concatenation's 6 channels"):
        out.copy(torch.ones(2, 1, 3, 3), 5)


def test_large_outputs_reuse_the_blocks_that_earlier_ones_freed(built_kernel):
    """The kernel's block cache: a training step frees and re-allocates the same large sizes, and
    a freshly mapped block costs a page fault per 4 KiB on first touch."""
    fused_norm.empty_cache()
    assert built_kernel.cache_held() == 0
    big = built_kernel.empty_map(2, 64, 100, 100)  # 5 MB
    assert big.shape == (2, 64, 100, 100) and big.is_contiguous(memory_format=torch.channels_last)
    address, size = big.data_ptr(), big.numel() * 4
    del big
    assert built_kernel.cache_held() == size
    again = built_kernel.empty_map(2, 64, 100, 100)
    assert again.data_ptr() == address and built_kernel.cache_held() == 0
    other = built_kernel.empty_map(2, 32, 100, 200)  # the same bytes while that block is in use: a new one
    assert other.data_ptr() != address
    del again, other
    assert built_kernel.cache_held() == 2 * size
    small = built_kernel.empty_map(1, 8, 10, 10)  # below 4 MiB: plain allocation, never held
    del small
    assert built_kernel.cache_held() == 2 * size
    fused_norm.empty_cache()
    assert built_kernel.cache_held() == 0
    built_kernel.set_cache_limit(size)  # holds at most one
    blocks = [built_kernel.empty_map(2, 64, 100, 100) for _ in range(2)]
    del blocks
    assert built_kernel.cache_held() == size
    built_kernel.set_cache_limit(0)
    assert built_kernel.cache_held() == 0
    built_kernel.set_cache_limit(1 << 30)


def test_inside_torch_compile_training_leaves_batch_norm_to_the_compiler(monkeypatch):
    bn = _bn(8).train()
    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    module = Concat([ConvBN(8, 4, 1), ConvBN(8, 4, 3, padding=1)]).train()
    filled = []
    real = fused_norm.ConcatOutput.result
    monkeypatch.setattr(fused_norm.ConcatOutput, "result", lambda self: filled.append(1) or real(self))
    assert fused_norm.supports(x, bn)
    module(x)
    assert filled == [1]
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # as while dynamo traces
    assert not fused_norm.supports(x, bn)
    assert module(x).shape == (2, 8, 4, 4)
    assert filled == [1]  # torch.cat, PyTorch's batch norm


def test_a_kernel_built_before_loads_without_ninja(monkeypatch, tmp_path, built_kernel):
    """Another checkout or venv with the same torch loads the build it finds instead of compiling
    again (ninja would: the include paths in its command line name the venv); a file that does not
    load is built again."""
    from torch.utils import cpp_extension
    so_file = built_kernel.__file__
    name = fused_norm._build_name()
    assert so_file.endswith(f"{name}.so")

    def no_build(**kwargs):
        raise AssertionError("cpp_extension.load was called")
    monkeypatch.setattr(cpp_extension, "load", no_build)
    monkeypatch.setenv("INCEPTIONLAB_BUILD_DIR", str(tmp_path))
    (tmp_path / f"{name}.so").write_bytes(open(so_file, "rb").read())
    module = fused_norm._build()
    assert hasattr(module, "empty_cache") and hasattr(module, "set_cache_limit")

    builds = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: builds.append(kwargs) or "built")
    broken = tmp_path / "broken"  # not the loaded file: the process maps it
    broken.mkdir()
    (broken / f"{name}.so").write_bytes(b"\x7fELF not really")  # a half-written file
    monkeypatch.setenv("INCEPTIONLAB_BUILD_DIR", str(broken))
    assert fused_norm._build() == "built" and builds[0]["name"] == name
    assert fused_norm._load_built(name, str(tmp_path / "missing")) is None
