"""TensorFlow's ``tf.nn.l2_normalize``, as the aggregations of the original use it."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["EPSILON", "l2_normalize"]

# The floor on the norm: TensorFlow's 1e-12 on the squared norm.
EPSILON = 1e-6


def l2_normalize(x: Tensor, dim: int) -> Tensor:
    """TensorFlow's ``l2_normalize``: ``x / sqrt(max(sum(x**2), 1e-12))`` along ``dim``."""
    # F.normalize's values, without its expand of the norm to x's shape: exported, that is a copy of
    # the whole tensor in ONNX Runtime.
    return x / torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(EPSILON)
