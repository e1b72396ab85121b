"""TensorFlow's ``tf.nn.l2_normalize``, as the aggregations of the original use it."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["EPSILON", "l2_normalize"]

# The floor on the norm: TensorFlow's 1e-12 on the squared norm.
EPSILON = 1e-6


def l2_normalize(x: Tensor, dim: int) -> Tensor:
    """TensorFlow's ``l2_normalize``: ``x / sqrt(max(sum(x**2), 1e-12))`` along ``dim``."""
    return F.normalize(x, p=2.0, dim=dim, eps=EPSILON)
