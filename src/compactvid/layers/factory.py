"""The one factory of compact layers: a structured stand-in for an ``in -> out`` linear layer, by kind.

Every compact switch of the models (``--fc_*_circulant``, ``--dbof_circulant``, the circulant mixtures
of experts, ...) builds its layer here, so that ``--compact_layer`` changes the structure of all of
them at once. A low-rank or Monarch layer is sized by ``rank`` / ``nblocks`` when given, else by a
parameter budget: ``budget`` times the weights of the circulant layer the switch would have built
(same ``diag`` and ``k_factor``; biases are alike in every kind and not counted), so that the kinds can be
compared at equal size, the paper's circulant layers being the reference.
"""

from __future__ import annotations

import torch

from compactvid.layers.circulant import CirculantLinear
from compactvid.layers.lowrank import LowRankLinear
from compactvid.layers.monarch import MonarchLinear, MonarchShape
from compactvid.layers.structured import StructuredLinear

__all__ = ["COMPACT_LAYERS", "make_compact_linear", "circulant_weights", "rank_within", "monarch_blocks_within"]

COMPACT_LAYERS = tuple(layer.kind for layer in (CirculantLinear, LowRankLinear, MonarchLinear))


def circulant_weights(in_features: int, out_features: int, diag: str = "learned", k_factor: int = 1) -> int:
    """Structured weights (bias excluded) of ``CirculantLinear(in, out, diag=diag, k_factor=k_factor)``."""
    layer = CirculantLinear(in_features, out_features, bias=False, diag=diag, k_factor=k_factor, device="meta")
    return layer.num_compact_parameters()


def rank_within(in_features: int, out_features: int, weights: float) -> int:
    """The largest rank whose ``LowRankLinear(in, out)`` holds at most ``weights`` weights (at least 1)."""
    return max(1, int(weights // LowRankLinear.weight_count(in_features, out_features, 1)))


def monarch_blocks_within(in_features: int, out_features: int, weights: float) -> int:
    """The block count whose ``MonarchLinear(in, out)`` holds the most weights within ``weights`` (the
    fewest blocks among equals: larger matmuls); where none fits, the one with the fewest weights."""
    counts = [(MonarchShape.of(in_features, out_features, k).weight_count(), k)
              for k in range(1, min(in_features, out_features) + 1)]
    within = [c for c in counts if c[0] <= weights]
    if within:
        return max(within, key=lambda c: (c[0], -c[1]))[1]
    return min(counts)[1]


def make_compact_linear(
    kind: str,
    in_features: int,
    out_features: int,
    bias: bool,
    *,
    diag: str = "learned",
    k_factor: int = 1,
    rank: int = 0,
    nblocks: int = 0,
    budget: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> StructuredLinear:
    """A structured layer ``[*, in_features] -> [*, out_features]`` of the given kind.

    Args:
        kind: ``"circulant"`` (``CirculantLinear`` with ``diag`` and ``k_factor``: the paper's),
            ``"lowrank"`` (``LowRankLinear``) or ``"monarch"`` (``MonarchLinear``).
        in_features, out_features, bias: as nn.Linear.
        diag, k_factor: the circulant layer's diagonal variant and factor count; for the other kinds
            they define the budget's reference layer.
        rank: the low-rank layer's rank; 0: the largest within the budget (at least 1).
        nblocks: the Monarch layer's block count; 0: the one with the most weights within the budget.
        budget: multiple of the reference circulant layer's weights (> 0) used when rank/nblocks is 0.
        device, dtype: as nn.Linear.

    Each kind keeps its own initialization (the seed's for circulant layers, nn.Linear's scale for the
    others: see each class).
    """
    if kind == "circulant":
        return CirculantLinear(in_features, out_features, bias, diag=diag, k_factor=k_factor, device=device,
                               dtype=dtype)
    if kind not in COMPACT_LAYERS:
        raise ValueError(f"compact layer kind must be one of {COMPACT_LAYERS}, got {kind!r}")
    if budget <= 0:
        raise ValueError(f"the compact layers' parameter budget must be > 0, got {budget}")
    weights = budget * circulant_weights(in_features, out_features, diag, k_factor)
    if kind == "lowrank":
        rank = rank or rank_within(in_features, out_features, weights)
        return LowRankLinear(in_features, out_features, bias, rank=rank, device=device, dtype=dtype)
    nblocks = nblocks or monarch_blocks_within(in_features, out_features, weights)
    return MonarchLinear(in_features, out_features, bias, nblocks=nblocks, device=device, dtype=dtype)
