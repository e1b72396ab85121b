"""Batch normalization configured as the original's ``slim.batch_norm`` (TF-slim defaults).

The original calls ``slim.batch_norm(x, center=True, scale=True)`` with slim's defaults: moving averages
with decay 0.999 and epsilon 0.001. PyTorch's ``momentum`` is the weight of the new batch statistic,
i.e. ``1 - decay``. A layer normalizing ``[rows, features]`` counts ``2 * features`` trainable
parameters (scale and shift), as in the original.
"""

from __future__ import annotations

from torch import nn

__all__ = ["SLIM_DECAY", "SLIM_EPSILON", "batch_norm"]

SLIM_DECAY = 0.999
SLIM_EPSILON = 1e-3


def batch_norm(num_features: int, decay: float = SLIM_DECAY) -> nn.BatchNorm1d:
    """A ``BatchNorm1d`` over ``[rows, num_features]`` with the original's epsilon and moving averages of
    ``decay`` (``--batch_norm_decay``)."""
    return nn.BatchNorm1d(num_features, eps=SLIM_EPSILON, momentum=1.0 - decay)
