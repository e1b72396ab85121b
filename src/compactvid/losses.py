"""Label losses of the original (code/losses.py), chosen by name with `--label_loss`.

Every loss takes the model's output, `predictions` [batch, classes] (probabilities in [0, 1] for every
model here), and multi-hot `labels` [batch, classes] in {0, 1}, and returns a scalar: a per-video value
summed over classes, averaged over the batch. The L2 penalties of the model are added by the training loop.
CrossEntropyLoss also takes per-term weights (segment training: only the rated classes count).
"""

from __future__ import annotations

import torch
from torch import nn

from compactvid.errors import ConfigError


class CrossEntropyLoss(nn.Module):
    """Binary cross-entropy on probabilities, summed over classes, averaged over videos.

    ``-[y log(p + eps) + (1 - y) log(1 - p + eps)]`` with eps = 1e-5, exactly as the original (which wrote
    ``10e-6``); the epsilon keeps the loss finite when a probability saturates at 0 or 1.
    """

    epsilon = 1e-5

    def forward(self, predictions: torch.Tensor, labels: torch.Tensor,
                label_weights: torch.Tensor | None = None) -> torch.Tensor:
        """`label_weights` ([batch, classes], optional): each term's weight, as the official starter code's
        segment training (1 for a segment's rated classes, 0 for the others)."""
        labels = labels.to(predictions.dtype)
        per_class = -(labels * torch.log(predictions + self.epsilon)
                      + (1 - labels) * torch.log(1 - predictions + self.epsilon))
        if label_weights is not None:
            per_class = per_class * label_weights.to(predictions.dtype)
        return per_class.sum(dim=1).mean()


class HingeLoss(nn.Module):
    """Hinge loss ``max(0, b - s * p)`` with s = +1 for positive labels and -1 for negative ones.

    Summed over classes, averaged over videos; b = 1 as the original. Trains `predictions` towards +-1, so
    it is meant for models whose output is not squashed into [0, 1].
    """

    def __init__(self, b: float = 1.0) -> None:
        super().__init__()
        self.b = b

    def forward(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        signs = 2 * labels.to(predictions.dtype) - 1
        return torch.clamp(self.b - signs * predictions, min=0).sum(dim=1).mean()


class SoftmaxLoss(nn.Module):
    """Cross-entropy between softmax(predictions) and the L1-normalized labels, averaged over videos.

    The multi-label extension of the one-hot softmax loss, as the original: a video with n labels puts
    weight 1/n on each; a video without labels contributes 0 (its label row sum is floored at 1e-7).
    """

    epsilon = 1e-7

    def forward(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(predictions.dtype)
        weights = labels / labels.sum(dim=1, keepdim=True).clamp(min=self.epsilon)
        return -(weights * torch.log_softmax(predictions, dim=1)).sum(dim=1).mean()


LOSSES: dict[str, type[nn.Module]] = {
    "CrossEntropyLoss": CrossEntropyLoss,
    "HingeLoss": HingeLoss,
    "SoftmaxLoss": SoftmaxLoss,
}


def create_loss(name: str) -> nn.Module:
    """The loss named by `--label_loss`; ConfigError listing the choices for an unknown name."""
    try:
        return LOSSES[name]()
    except KeyError:
        raise ConfigError(f"--label_loss={name!r} is not a loss here; use one of {', '.join(LOSSES)}") from None
