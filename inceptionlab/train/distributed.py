"""Multi-process training under ``torchrun``: the process group, data sharding, reductions.

``torchrun --nproc_per_node=N -m inceptionlab train ...`` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; `Distributed.from_env` joins them (gloo on the CPU, NCCL on
CUDA). The batch size of the config is the *global* batch: each process takes
``batch_size / N``, and `ShardedEpochSampler` gives process r the samples r, r+N, r+2N, ... of
the very order a single process would use, so the N processes together see exactly the global
batches of a single-process run, and DDP's averaged gradient is the single-process gradient
when the per-image computation is the same: that holds without augmentation or dropout and with
``--sync-bn`` (then losses agree to rounding). Otherwise each process draws its own random crops
and dropout masks, and batch norm normalizes by each process's share of the batch.

`SyncBatchNorm` on the CPU: ``torch.nn.SyncBatchNorm`` runs on GPUs only; this one reduces the
batch sums with a differentiable all-reduce, so BN statistics (and their gradients) are those of
the global batch.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from inceptionlab.data.loader import EpochSampler


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    started_here: bool = False  # we created the process group (and destroy it at the end)
    broken: bool = False        # another process stopped: no more collectives (they would fail again)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 and not self.broken

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Distributed":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        if world_size <= 1:
            return cls(device=device)
        started = False
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
            started = True
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, device, started)

    def close(self) -> None:
        if self.started_here and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a group whose peer died: nothing left to tear down cleanly
                if not self.broken:
                    raise


    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over processes (in place), or the tensor itself in a single process."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_objects(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn, errors: tuple = (ValueError, OSError)):
        """``fn()`` run by process 0 alone (files: the output folder, checkpoints), its result in
        every process, and its error, of one of the ``errors`` types, raised in every process: a
        failure on process 0 alone left the others to die in the next collective with a gloo
        traceback that buried the real message."""
        outcome = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except errors as exc:
                if not self.enabled:
                    raise
                outcome = ("error", type(exc), str(exc))
        outcome = self.broadcast_object(outcome)
        if outcome[0] == "error":
            kind, message = outcome[1], outcome[2]
            try:
                raise kind(message)
            except TypeError:  # a type that needs other arguments
                raise RuntimeError(message) from None
        return outcome[1]

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Process 0's buffers (batch norm running statistics) in every process. DDP sends them only
        at the start of a training forward, which then updates each process's copy with its own
        batch: evaluating those gave numbers a little off the saved (process 0's) model."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


class ShardedEpochSampler(EpochSampler):
    """Process ``rank``'s share of the single-process order: positions rank, rank+N, ...

    The order is cut to a multiple of N first, so every process gets the same number of samples.
    """

    def __init__(self, size: int, *, rank: int, world_size: int, shuffle: bool, seed: int = 0):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.rank = rank
        self.world_size = world_size

    def __iter__(self):
        order = list(super().__iter__())
        usable = len(order) - len(order) % self.world_size
        return iter(order[self.rank:usable:self.world_size])

    def __len__(self) -> int:
        return self.size // self.world_size


class AllReduceSum(torch.autograd.Function):
    """The sum over processes, differentiable: the gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the batch over all processes (any device)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"SyncBatchNorm expects N x C x ... input, got {x.dim()} dimensions")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        all_reduce = AllReduceSum.apply
        dims = [0] + list(range(2, x.dim()))
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        count = all_reduce(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = all_reduce(x.sum(dims)) / count                                   # C, global
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count                 # C, biased (two passes)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), momentum)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every BatchNorm that trains replaced by this class (weights and statistics kept)."""
        return convert_sync_batchnorm(module, torch.device("cpu"))


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every batch norm that trains replaced by one whose statistics are the global
    batch's: torch's SyncBatchNorm on CUDA, this module's on other devices (weights and statistics
    kept). A frozen layer (--freeze-bn, --freeze-until) normalizes with its stored statistics, so it
    stays as it is; converting it had unfrozen it on the CPU, and its scale, shift and statistics trained."""
    from inceptionlab.models.finetune import is_frozen_norm

    sync_class = nn.SyncBatchNorm if device.type == "cuda" else SyncBatchNorm
    if (isinstance(model, nn.modules.batchnorm._BatchNorm) and not is_frozen_norm(model)
            and not isinstance(model, (nn.SyncBatchNorm, SyncBatchNorm))):
        sync = sync_class(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)
        sync.to(device=model.running_mean.device if model.running_mean is not None else None,
                dtype=model.running_mean.dtype if model.running_mean is not None else None)
        sync.load_state_dict(model.state_dict())
        sync.train(model.training)
        return sync
    for name, child in model.named_children():
        model.add_module(name, convert_sync_batchnorm(child, device))
    return model


def lost_a_process(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process of the run stopped (killed,
    crashed, out of memory): gloo and NCCL raise DistError, or name the broken connection."""
    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        words in text for words in ("Connection reset by peer", "Connection closed by peer", "Broken pipe"))
