"""The training objective: cross-entropy with label smoothing, plus the auxiliary classifiers.

Label smoothing is the v3 paper's "model regularization via label smoothing" (Sec. 7): the target
distribution is ``(1 - eps) * one_hot + eps / K`` (a uniform prior over the K classes), so

    loss = (1 - eps) * (-log p_y) + eps * mean_k(-log p_k)

The auxiliary classifiers add their own (smoothed) loss with a weight: 0.3 for each of
GoogLeNet's two heads (GoogLeNet Sec. 5), 0.4 for the v3/v4 head (TF-slim's training script).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from inceptionlab.errors import UserError


def check_smoothing(smoothing) -> float:
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
        raise UserError(f"smoothing must be a number in [0, 1) (the paper's 0.1; 0 turns it off), got {smoothing!r}")
    return float(smoothing)


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Mean over the batch of the cross-entropy against the smoothed one-hot target."""
    check_smoothing(smoothing)
    log_probs = F.log_softmax(logits.float(), dim=-1)                  # N x K
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)       # N
    uniform = -log_probs.mean(dim=-1)                                   # N
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


def default_aux_weight(model_name: str) -> float:
    """0.3 for GoogLeNet's heads (its paper), 0.4 for the others (TF-slim's Inception scripts)."""
    return 0.3 if "googlenet" in model_name else 0.4


class InceptionLoss:
    """``loss(output, target)``: the main loss plus ``aux_weight`` times each auxiliary loss.

    ``output`` is a logits tensor, or ``InceptionOutput(logits, aux)`` in train mode with aux heads.
    ``aux_weight`` is one number for every head, or one per head (depth order).
    """

    def __init__(self, smoothing: float = 0.1, aux_weight: float | Sequence[float] = 0.4):
        self.smoothing = check_smoothing(smoothing)
        if isinstance(aux_weight, torch.Tensor):
            aux_weight = aux_weight.tolist()  # (a tensor of weights made the loss a vector)
        weights = aux_weight if isinstance(aux_weight, (list, tuple)) else [aux_weight]
        if not weights or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights):
            raise UserError(f"aux_weight must be a number >= 0, or one per auxiliary head, got {aux_weight!r}")
        self.aux_weight = aux_weight

    def __call__(self, output, target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return smoothed_cross_entropy(output, target, self.smoothing)
        logits, aux = output
        weights = (list(self.aux_weight) if isinstance(self.aux_weight, (list, tuple))
                   else [self.aux_weight] * len(aux))
        if len(weights) != len(aux):  # zip dropped the heads without a weight
            raise UserError(f"aux_weight gives {len(weights)} weight(s) for {len(aux)} auxiliary head(s); give one "
                            f"number for all, or one per head")
        loss = smoothed_cross_entropy(logits, target, self.smoothing)
        for weight, aux_logits in zip(weights, aux):
            loss = loss + weight * smoothed_cross_entropy(aux_logits, target, self.smoothing)
        return loss
