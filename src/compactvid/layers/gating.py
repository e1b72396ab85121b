"""Context gating (Miech et al., 2017): ``y = x * sigmoid(W x + b)``, the gate normalized by batch norm.

As in the original (``utils_layer.context_gating``): ``W`` is ``[dim, dim]`` drawn from
N(0, 1/sqrt(dim)); with batch norm the gate has no bias (batch norm's shift plays its part), without it
a bias drawn from the same distribution is added.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from compactvid.layers.batch_norm import batch_norm

__all__ = ["ContextGating"]


class ContextGating(nn.Module):
    """``[batch, dim] -> [batch, dim]``: each unit scaled by a sigmoid gate computed from all units.

    Args:
        dim: number of units.
        add_batch_norm: batch norm on the gate pre-activations (then the projection has no bias).

    Trainable parameters: ``dim**2 + 2 * dim`` with batch norm, ``dim**2 + dim`` without.
    """

    def __init__(self, dim: int, add_batch_norm: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.projection = nn.Linear(dim, dim, bias=not add_batch_norm)
        self.norm = batch_norm(dim) if add_batch_norm else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1.0 / math.sqrt(self.dim)
        nn.init.normal_(self.projection.weight, 0.0, std)
        if self.projection.bias is not None:
            nn.init.normal_(self.projection.bias, 0.0, std)

    def forward(self, x: Tensor) -> Tensor:
        """``x [batch, dim] -> [batch, dim]``."""
        return x * torch.sigmoid(self.norm(self.projection(x)))
