"""Low-rank linear layer: a drop-in for ``nn.Linear`` whose weight is a product ``U V`` of rank r.

``y = U (V x) + b`` with ``V [rank, in_features]`` and ``U [out_features, rank]``: two dense matmuls
through a ``rank``-wide bottleneck, ``rank * (in_features + out_features)`` weights instead of
``in_features * out_features``. Autograd's matmul backward is already the fastest form (two GEMMs per
factor), so the layer is plain PyTorch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compactvid.layers.structured import StructuredLinear

__all__ = ["LowRankLinear"]


class LowRankLinear(StructuredLinear):
    """Linear map ``[*, in_features] -> [*, out_features]`` with weight ``U V`` of rank ``rank``.

    Compatible with ``torch.nn.Linear`` (same positional arguments, any leading batch dims, any device
    and floating dtype, autocast as nn.Linear).

    Args:
        in_features, out_features: as nn.Linear.
        bias: add a learned bias ``[out_features]`` (nn.Linear's default: True).
        rank: width r of the bottleneck (>= 1); keyword-only, there is no size-independent default.
        device, dtype: where and in which floating type to create the parameters, as for nn.Linear.

    Parameters:
        v: ``[rank, in_features]``, applied first; u: ``[out_features, rank]``; both flagged
        ``_is_structured``. bias: ``[out_features]`` when ``bias=True``.

    Initialization (``reset_parameters``): V is LeCun-uniform (``U(-sqrt(3/in), sqrt(3/in))``, variance
    ``1/in``: the bottleneck keeps the input's variance) and U is nn.Linear's own initialization for a
    ``rank -> out`` layer (``U(-1/sqrt(rank), 1/sqrt(rank))``, variance ``1/(3 rank)``), so every entry
    of ``U V`` has variance ``1/(3 in)``, that of nn.Linear's weight, and for inputs with independent
    unit-variance entries the output variance is nn.Linear's, 1/3. The bias is nn.Linear's,
    ``U(-1/sqrt(in), 1/sqrt(in))``.
    """

    structured_names = ("v", "u")
    kind = "lowrank"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rank: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features)
        if rank < 1:
            raise ValueError(f"LowRankLinear rank must be >= 1, got {rank}")
        factory = {"device": device, "dtype": dtype}
        self.rank = rank
        self.v = nn.Parameter(torch.empty(rank, in_features, **factory))
        self.u = nn.Parameter(torch.empty(out_features, rank, **factory))
        self._add_bias(bias, factory)
        self.reset_parameters()

    @staticmethod
    def weight_count(in_features: int, out_features: int, rank: int) -> int:
        """Structured weights of a layer of this shape and rank (bias excluded)."""
        return rank * (in_features + out_features)

    def reset_parameters(self) -> None:
        """V ~ U(+-sqrt(3/in)), U ~ U(+-1/sqrt(rank)), bias ~ U(+-1/sqrt(in)): see the class docstring."""
        with torch.no_grad():
            bound_v = math.sqrt(3.0 / self.in_features)
            self.v.uniform_(-bound_v, bound_v)
            bound_u = 1.0 / math.sqrt(self.rank)
            self.u.uniform_(-bound_u, bound_u)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                self.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``x [*, in_features] -> [*, out_features]``."""
        self._check_input(x)
        return F.linear(F.linear(x, self.v), self.u, self.bias)

    def to_dense(self) -> Tensor:
        """The equivalent ``[out_features, in_features]`` matrix ``U V``. Differentiable."""
        return self.u @ self.v

    def structure_repr(self) -> str:
        return f"rank={self.rank}"
