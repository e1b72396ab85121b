"""NeXtVLAD's linear layers as its authors' TF-slim code initializes them (``variance_scaling_initializer()``).

slim's defaults are factor 2, fan-in mode and a truncated normal: values drawn from N(0, s) with
``s = sqrt(1.3 * 2 / fan_in)`` and redrawn beyond two standard deviations (the 1.3 makes up for the
variance the truncation removes, so that the result has variance about ``2 / fan_in``). Biases start at
zero, as ``slim.fully_connected``'s.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from compactvid.layers.circulant import CirculantLinear

__all__ = ["variance_scaling_", "slim_linear"]


@torch.no_grad()
def variance_scaling_(tensor: Tensor, fan_in: int) -> Tensor:
    """Fill ``tensor`` in place as slim's ``variance_scaling_initializer()`` would for ``fan_in`` inputs."""
    std = math.sqrt(1.3 * 2.0 / fan_in)
    return nn.init.trunc_normal_(tensor, 0.0, std, -2.0 * std, 2.0 * std)


def slim_linear(in_features: int, out_features: int, bias: bool, structure: Optional[str] = None,
                k_factor: int = 1) -> nn.Module:
    """``[..., in_features] -> [..., out_features]``: dense and variance-scaled (``structure=None``), or
    ``"circulant"``: diagonal-circulant with a learned diagonal and ``k_factor`` factors (its own
    initialization)."""
    if structure == "circulant":
        return CirculantLinear(in_features, out_features, bias=bias, diag="learned", k_factor=k_factor)
    if structure is not None:
        raise ValueError(f"structure must be None or 'circulant', got {structure!r}")
    layer = nn.Linear(in_features, out_features, bias=bias)
    variance_scaling_(layer.weight, in_features)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer
