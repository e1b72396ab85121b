"""Context gating: each unit of ``[batch, dim]`` scaled by a sigmoid gate computed from all units.

- `ContextGating` (Miech et al., 2017), after the paper's MoE: ``y = x * sigmoid(W x + b)``, the gate
  normalized by batch norm. As in the original (``utils_layer.context_gating``): ``W`` is ``[dim, dim]``
  drawn from N(0, 1/sqrt(dim)); with batch norm the gate has no bias (batch norm's shift plays its part),
  without it a bias drawn from the same distribution is added.
- `SEGating`, NeXtVLAD's squeeze-and-excitation form (Lin et al., 2018): ``y = x * sigmoid(W2 relu(BN(W1 x)))``
  with a bottleneck ``W1 [dim, dim / reduction]``, ``W2 [dim / reduction, dim]``, no biases,
  variance-scaled as its authors' code.

Given a ``compact`` layer factory (``--gating_circulant``), the projections are structured: ``W`` alone
is ``dim**2`` parameters, 14.9 M for the 3862 classes after the MoE.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from compactvid.layers.batch_norm import SLIM_DECAY, batch_norm
from compactvid.layers.initializers import LinearFactory, slim_linear

__all__ = ["ContextGating", "SEGating"]


class ContextGating(nn.Module):
    """``[batch, dim] -> [batch, dim]``: each unit scaled by a sigmoid gate computed from all units.

    Args:
        dim: number of units.
        add_batch_norm: batch norm on the gate pre-activations (then the projection has no bias).
        compact: ``None`` (dense projection, N(0, 1/sqrt(dim))) or the factory of a structured one.
        batch_norm_decay: decay of that batch norm's moving averages.

    Trainable parameters: ``dim**2 + 2 * dim`` with batch norm, ``dim**2 + dim`` without (dense).
    """

    def __init__(self, dim: int, add_batch_norm: bool = True, compact: Optional[LinearFactory] = None,
                 batch_norm_decay: float = SLIM_DECAY) -> None:
        super().__init__()
        self.dim = dim
        self.compact = compact is not None
        self.projection = slim_linear(dim, dim, not add_batch_norm, compact)
        self.norm = batch_norm(dim, batch_norm_decay) if add_batch_norm else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1.0 / math.sqrt(self.dim)
        if self.compact:
            self.projection.reset_parameters()  # its own (circulant: N(0, 1/sqrt(dim)), as the dense W)
        else:
            nn.init.normal_(self.projection.weight, 0.0, std)
        if self.projection.bias is not None:
            nn.init.normal_(self.projection.bias, 0.0, std)

    def forward(self, x: Tensor) -> Tensor:
        """``x [batch, dim] -> [batch, dim]``."""
        return x * torch.sigmoid(self.norm(self.projection(x)))


class SEGating(nn.Module):
    """``[batch, dim] -> [batch, dim]``: NeXtVLAD's gating ``x * sigmoid(W2 relu(BN(W1 x)))``.

    Args:
        dim: number of units.
        reduction: bottleneck ratio r (``--gating_reduction``); the bottleneck has ``dim // r`` units.
        compact: ``None`` (dense W1 and W2, variance-scaled) or the factory of structured ones.
        batch_norm_decay: decay of the bottleneck batch norm's moving averages.

    Trainable parameters (dense): ``2 * dim * (dim // r) + 2 * (dim // r)``.
    """

    def __init__(self, dim: int, reduction: int = 8, compact: Optional[LinearFactory] = None,
                 batch_norm_decay: float = SLIM_DECAY) -> None:
        super().__init__()
        if not 1 <= reduction <= dim:
            raise ValueError(f"SEGating: reduction must be in [1, dim={dim}], got {reduction}")
        bottleneck = dim // reduction
        self.squeeze = slim_linear(dim, bottleneck, False, compact)
        self.norm = batch_norm(bottleneck, batch_norm_decay)
        self.excite = slim_linear(bottleneck, dim, False, compact)

    def forward(self, x: Tensor) -> Tensor:
        """``x [batch, dim] -> [batch, dim]``."""
        return x * torch.sigmoid(self.excite(torch.relu(self.norm(self.squeeze(x)))))
