"""NeXtVLAD's linear layers as its authors' TF-slim code initializes them (``variance_scaling_initializer()``).

slim's defaults are factor 2, fan-in mode and a truncated normal: values drawn from N(0, s) with
``s = sqrt(1.3 * 2 / fan_in)`` and redrawn beyond two standard deviations (the 1.3 makes up for the
variance the truncation removes, so that the result has variance about ``2 / fan_in``). Biases start at
zero, as ``slim.fully_connected``'s.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

__all__ = ["LinearFactory", "variance_scaling_", "slim_linear"]

# Builds a (structured) layer from ``(in_features, out_features, bias)``, as ``nn.Linear``'s arguments;
# e.g. ``functools.partial(make_compact_linear, "circulant")``.
LinearFactory = Callable[[int, int, bool], nn.Module]


@torch.no_grad()
def variance_scaling_(tensor: Tensor, fan_in: int) -> Tensor:
    """Fill ``tensor`` in place as slim's ``variance_scaling_initializer()`` would for ``fan_in`` inputs."""
    std = math.sqrt(1.3 * 2.0 / fan_in)
    return nn.init.trunc_normal_(tensor, 0.0, std, -2.0 * std, 2.0 * std)


def slim_linear(in_features: int, out_features: int, bias: bool, compact: Optional[LinearFactory] = None
                ) -> nn.Module:
    """``[..., in_features] -> [..., out_features]``: dense and variance-scaled, or, given ``compact``, the
    structured layer it builds (with that layer's own initialization)."""
    if compact is not None:
        return compact(in_features, out_features, bias)
    layer = nn.Linear(in_features, out_features, bias=bias)
    variance_scaling_(layer.weight, in_features)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer
