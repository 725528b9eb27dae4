"""Optimizers, their parameter groups, the learning-rate schedules, and the weight average.

- `RMSpropTF`: RMSProp as TensorFlow computes it, which is what the Inception papers' numbers
  (decay 0.9, momentum 0.9, epsilon 1.0) mean. Three differences from ``torch.optim.RMSprop``:
  epsilon is added to the mean square *inside* the square root; the mean square starts at 1, not
  0; and the learning rate is applied inside the momentum buffer:

      ms  <- decay * ms + (1 - decay) * g^2
      mom <- momentum * mom + lr * g / sqrt(ms + eps)
      w   <- w - mom

  Weight decay is an L2 term added to the gradient (TF-slim's regularizer).
- `param_groups`: weight decay for the weights of convolutions and linear layers only; never for
  BN scales and shifts or biases (every parameter with one dimension or none); with a
  ``body_lr_scale``, the body (all but the classifier and the aux heads) in groups of their own
  whose ``lr_scale`` the training step multiplies the learning rate by.
- `LRSchedule`: the paper's exponential staircase (x0.94 every 2 epochs), step, cosine,
  constant; with linear warm-up.
- `ModelEMA`: an exponential moving average of the weights, as the papers evaluate with.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from inceptionlab.errors import UserError
from inceptionlab.train.config import SCHEDULES, TrainConfig


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow's semantics (see the module docstring)."""

    def __init__(self, params, lr: float = 0.045, decay: float = 0.9, momentum: float = 0.9,
                 eps: float = 1.0, weight_decay: float = 0.0):
        for name, value, low in (("lr", lr, 0.0), ("weight_decay", weight_decay, 0.0), ("momentum", momentum, 0.0),
                                 ("decay", decay, 0.0)):
            if not isinstance(value, (int, float)) or not value >= low:
                raise ValueError(f"RMSpropTF: {name} must be a number >= {low:g}, got {value!r}")
        if not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"RMSpropTF: eps must be a number > 0 (TensorFlow's epsilon, 1.0 in the papers' "
                             f"recipe), got {eps!r}")
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            for p in params:
                if not self.state[p]:
                    self.state[p]["square_avg"] = torch.ones_like(p)
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            square_avg = [self.state[p]["square_avg"] for p in params]
            momentum_buffer = [self.state[p]["momentum_buffer"] for p in params]
            decay, lr = group["decay"], group["lr"]
            torch._foreach_mul_(square_avg, decay)
            torch._foreach_addcmul_(square_avg, grads, grads, value=1.0 - decay)     # ms
            denom = torch._foreach_sqrt(torch._foreach_add(square_avg, group["eps"]))  # sqrt(ms + eps)
            torch._foreach_mul_(momentum_buffer, group["momentum"])
            torch._foreach_addcdiv_(momentum_buffer, grads, denom, value=lr)          # mom
            torch._foreach_sub_(params, momentum_buffer)                              # w
        return loss


# the classifier and the aux heads: what a fine-tune replaces (Inception-ResNet-v1's head also holds its
# pretrained embedding layer, head.embedding: body, as facenet's weights bring it)
HEAD_PREFIXES = ("head.fc.", "aux_heads.")


def param_groups(model: nn.Module, weight_decay: float, body_lr_scale: float = 1.0) -> list[dict]:
    """Two groups: decayed (conv and linear weights) and not decayed (BN, biases). With a
    ``body_lr_scale`` other than 1, four: those two for the head (``lr_scale`` 1) and for the body."""
    split = body_lr_scale != 1.0
    groups: dict[tuple[bool, bool], list] = {(body, decayed): [] for body in (False, True) for decayed in (True, False)}
    for name, param in model.named_parameters():
        if param.requires_grad:
            body = split and not name.startswith(HEAD_PREFIXES)
            groups[body, param.ndim > 1].append(param)
    made = [dict(params=groups[False, True], weight_decay=weight_decay),
            dict(params=groups[False, False], weight_decay=0.0)]
    if split:
        made += [dict(params=groups[True, True], weight_decay=weight_decay, lr_scale=body_lr_scale),
                 dict(params=groups[True, False], weight_decay=0.0, lr_scale=body_lr_scale)]
    return made


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names, on ``model``'s parameter groups (``cfg`` resolved first: its
    defaults per optimizer, such as the lr, are filled in there)."""
    cfg = cfg.resolved()
    groups = param_groups(model, cfg.weight_decay, cfg.body_lr_scale)
    if cfg.opt == "rmsprop_tf":
        return RMSpropTF(groups, lr=cfg.lr, decay=0.9, momentum=cfg.momentum, eps=1.0)
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


class LRSchedule:
    """``schedule(step, progress=None) -> lr`` for the optimizer step ``step`` (0-based).

    Staircase schedules decay by ``decay_rate`` every ``decay_epochs`` epochs (epoch = step /
    steps_per_epoch). Cosine anneals to 0 over ``total_steps`` after the warm-up, or over the
    fraction ``progress`` of a wall-clock budget when the number of steps is not known.
    Warm-up rises linearly over the first ``warmup_steps`` steps.
    """

    def __init__(self, name: str, base_lr: float, steps_per_epoch: int, total_steps: int | None = None,
                 warmup_steps: int = 0, decay_epochs: float | None = None, decay_rate: float | None = None):
        if name not in SCHEDULES:
            raise UserError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
        if name in ("exp_staircase", "step") and not (decay_epochs and decay_rate is not None):
            raise UserError(f"the {name} schedule needs decay_epochs and decay_rate (the papers': 2 and 0.94)")
        self.name = name
        self.base_lr = base_lr
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.decay_epochs = decay_epochs
        self.decay_rate = decay_rate

    def __call__(self, step: int, progress: float | None = None) -> float:
        lr = self.base_lr
        if self.name in ("exp_staircase", "step"):
            epoch = step / self.steps_per_epoch
            lr *= self.decay_rate ** math.floor(epoch / self.decay_epochs + 1e-9)
        elif self.name == "cosine":
            if self.total_steps is not None:
                span = max(1, self.total_steps - self.warmup_steps)
                progress = (step - self.warmup_steps) / span
            progress = min(max(progress or 0.0, 0.0), 1.0)
            lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
        if step < self.warmup_steps:
            lr *= (step + 1) / self.warmup_steps
        return lr

    def state_dict(self) -> dict:
        return dict(self.__dict__)


class ModelEMA:
    """An exponential moving average of a model's weights and buffers (BN statistics).

    Like TF's ``ExponentialMovingAverage(decay, num_updates)``, the decay used at update n is
    ``min(decay, (1 + n) / (10 + n))``, so the average follows the weights closely early on and
    a decay such as 0.9999 is usable in short runs too.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        decay = min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))
        averaged, current = [], []
        for ema_value, value in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_value.dtype.is_floating_point:
                averaged.append(ema_value)
                current.append(value.detach())
            else:
                ema_value.copy_(value)  # counters such as BN's num_batches_tracked
        torch._foreach_lerp_(averaged, current, 1.0 - decay)  # ema += (1 - decay) * (w - ema)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
