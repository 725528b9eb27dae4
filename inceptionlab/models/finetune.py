"""Fine-tuning helpers: keep BatchNorm fixed, freeze the network up to a named block.

``freeze_bn`` is the usual cure when fine-tuning an Inception network with small batches: batch
statistics of a few images are noisy estimates, and BN layers that keep updating their running
statistics (and normalizing by the batch's) drift away from what the pretrained weights expect, so
validation accuracy collapses while training loss looks fine. A frozen BN layer normalizes with its
stored statistics in training too, and its affine parameters get no gradient.

Both functions keep their effect across ``model.train()``: a frozen BN layer's ``train()`` leaves
it in eval mode (its class becomes a `FrozenBatchNorm2d` subclass of the original, so
``isinstance(m, nn.BatchNorm2d)`` still holds and the state dict is unchanged).
"""
from __future__ import annotations

import re

import torch.nn as nn

from inceptionlab.errors import UserError, closest


class _KeepsEval:
    """Mixin: ``train()`` leaves the layer in eval mode, so its running statistics stay fixed."""

    def train(self, mode: bool = True):
        return super().train(False)


class FrozenBatchNorm1d(_KeepsEval, nn.BatchNorm1d):
    pass


class FrozenBatchNorm2d(_KeepsEval, nn.BatchNorm2d):
    pass


class FrozenBatchNorm3d(_KeepsEval, nn.BatchNorm3d):
    pass


class FrozenSyncBatchNorm(_KeepsEval, nn.SyncBatchNorm):
    pass


_FROZEN = {nn.BatchNorm1d: FrozenBatchNorm1d, nn.BatchNorm2d: FrozenBatchNorm2d,
           nn.BatchNorm3d: FrozenBatchNorm3d, nn.SyncBatchNorm: FrozenSyncBatchNorm}
_UNFROZEN = {v: k for k, v in _FROZEN.items()}


def is_frozen_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a BN layer that `freeze_bn` or `freeze_until` froze."""
    return type(module) in _UNFROZEN


def _freeze_params(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(False)
        param.grad = None  # an optimizer skips parameters without a gradient (no decay, no momentum)


def _freeze_norm(module: nn.Module) -> bool:
    """Freezes one BN layer; False if it is not a (known) BN layer."""
    if type(module) in _FROZEN:
        module.__class__ = _FROZEN[type(module)]
    elif type(module) not in _UNFROZEN:
        return False
    _freeze_params(module)
    module.train(False)
    return True


def freeze_bn(model: nn.Module) -> int:
    """Keeps every BatchNorm layer of ``model`` fixed: running statistics (eval mode, which
    ``model.train()`` does not undo) and affine parameters (no gradients). Returns the count."""
    return sum(_freeze_norm(m) for m in model.modules())


def unfreeze_bn(model: nn.Module) -> int:
    """Undoes `freeze_bn` (and the BN part of `freeze_until`): BN layers train again."""
    count = 0
    for module in model.modules():
        if type(module) in _UNFROZEN:
            module.__class__ = _UNFROZEN[type(module)]
            for param in module.parameters():
                param.requires_grad_(True)
            module.train(model.training)
            count += 1
    return count


def freeze_until(model: nn.Module, block_name: str) -> list[str]:
    """Freezes every block of ``model`` up to and including ``block_name`` (its parameters get no
    gradient, its BN layers keep their statistics); later blocks, the aux heads and the classifier
    train. Returns the frozen block names. An unknown name is a `UserError` with the closest names."""
    frozen = blocks_until(model, block_name)
    blocks = getattr(model, "model", model).blocks
    for name in frozen:
        _freeze_params(blocks[name])
        for module in blocks[name].modules():
            _freeze_norm(module)
    return frozen


def blocks_until(model: nn.Module, block_name: str) -> list[str]:
    """The names of ``model``'s blocks up to and including ``block_name`` (checked: a `UserError`
    with the closest names for one the model lacks)."""
    net = getattr(model, "model", model)  # a FeatureExtractor wraps the network
    blocks = getattr(net, "blocks", None)
    if not isinstance(blocks, nn.ModuleDict):
        raise UserError(f"freeze_until needs an inceptionlab model with named blocks, got {type(model).__name__}")
    names = list(blocks)
    if block_name not in names:
        hint = closest(block_name, names)
        # torchvision names GoogLeNet's modules inception3a..5b; the paper's table (and ours) mixed_3b..5c
        tv = re.fullmatch(r"inception(\d)([a-e])", str(block_name).lower())
        if tv and f"mixed_{tv[1]}{chr(ord(tv[2]) + 1)}" in names:
            hint = f"mixed_{tv[1]}{chr(ord(tv[2]) + 1)} (torchvision's {block_name})"
        raise UserError(f"{getattr(net, 'name', 'the model')} has no block {block_name!r}"
                        + (f"; did you mean {hint}?" if hint else "") + f" (blocks: {', '.join(names)})")
    return names[: names.index(block_name) + 1]
