"""Context gating: each unit of ``[batch, dim]`` scaled by a sigmoid gate computed from all units.

- `ContextGating` (Miech et al., 2017), after the paper's MoE: ``y = x * sigmoid(W x + b)``, the gate
  normalized by batch norm. As in the original (``utils_layer.context_gating``): ``W`` is ``[dim, dim]``
  drawn from N(0, 1/sqrt(dim)); with batch norm the gate has no bias (batch norm's shift plays its part),
  without it a bias drawn from the same distribution is added.
- `SEGating`, NeXtVLAD's squeeze-and-excitation form (Lin et al., 2018): ``y = x * sigmoid(W2 relu(BN(W1 x)))``
  with a bottleneck ``W1 [dim, dim / reduction]``, ``W2 [dim / reduction, dim]``, no biases,
  variance-scaled as its authors' code.

With ``structure="circulant"`` (``--gating_circulant``) the projections are diagonal-circulant (learned
diagonal): ``W`` alone is ``dim**2`` parameters, 14.9 M for the 3862 classes after the MoE.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from compactvid.layers.batch_norm import batch_norm
from compactvid.layers.circulant import CirculantLinear
from compactvid.layers.initializers import slim_linear

__all__ = ["ContextGating", "SEGating"]


class ContextGating(nn.Module):
    """``[batch, dim] -> [batch, dim]``: each unit scaled by a sigmoid gate computed from all units.

    Args:
        dim: number of units.
        add_batch_norm: batch norm on the gate pre-activations (then the projection has no bias).
        structure: ``None`` (dense) or ``"circulant"`` (diagonal-circulant projection, ``k_factor`` factors).

    Trainable parameters: ``dim**2 + 2 * dim`` with batch norm, ``dim**2 + dim`` without (dense).
    """

    def __init__(self, dim: int, add_batch_norm: bool = True, structure: Optional[str] = None,
                 k_factor: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.projection = slim_linear(dim, dim, not add_batch_norm, structure, k_factor)
        self.norm = batch_norm(dim) if add_batch_norm else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1.0 / math.sqrt(self.dim)
        if isinstance(self.projection, CirculantLinear):
            self.projection.reset_parameters()  # N(0, 1/sqrt(dim)) per circulant vector, as the dense W
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
        structure: ``None`` (dense) or ``"circulant"`` (diagonal-circulant W1 and W2, ``k_factor`` factors).

    Trainable parameters (dense): ``2 * dim * (dim // r) + 2 * (dim // r)``.
    """

    def __init__(self, dim: int, reduction: int = 8, structure: Optional[str] = None, k_factor: int = 1) -> None:
        super().__init__()
        if not 1 <= reduction <= dim:
            raise ValueError(f"SEGating: reduction must be in [1, dim={dim}], got {reduction}")
        bottleneck = dim // reduction
        self.squeeze = slim_linear(dim, bottleneck, False, structure, k_factor)
        self.norm = batch_norm(bottleneck)
        self.excite = slim_linear(bottleneck, dim, False, structure, k_factor)

    def forward(self, x: Tensor) -> Tensor:
        """``x [batch, dim] -> [batch, dim]``."""
        return x * torch.sigmoid(self.excite(torch.relu(self.norm(self.squeeze(x)))))
