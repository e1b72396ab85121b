"""The structured layer a compact switch of a model builds, from the model's arguments (``--compact_layer``).

Every compact switch (``--fc_*_circulant``, ``--dbof_circulant``, the circulant mixtures of experts,
``--fc_nextvlad_circulant``, ``--nextvlad_expansion_circulant``, ``--nextvlad_cluster_circulant``,
``--gating_circulant``) goes through `compact_layer`, so that one flag changes the structure of all of
them; the factory it returns builds with `compactvid.layers.factory.make_compact_linear`: by default
diagonal-circulant with a learned diagonal and ``--k_factor`` factors per block, as the paper's compact
FC layers; low-rank or Monarch with ``--compact_layer``.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from compactvid.errors import ConfigError
from compactvid.layers.factory import COMPACT_LAYERS, make_compact_linear
from compactvid.layers.initializers import LinearFactory
from compactvid.models.args import ModelArgs

__all__ = ["compact_layer"]


def compact_layer(args: ModelArgs, switch: bool, diag: str = "learned",
                  k_factor: Optional[int] = None) -> Optional[LinearFactory]:
    """The factory ``(in_features, out_features, bias) -> layer`` of a compact switch, or None (dense)
    when ``switch`` is off.

    Args:
        args: the model's arguments (``compact_layer``, ``lowrank_rank``, ``monarch_blocks``,
            ``compact_budget``, ``k_factor``).
        switch: whether the switch is on.
        diag: the diagonal of the switch's circulant layer (``"learned"``, ``"sign"`` or ``"none"``); with
            another ``--compact_layer`` it fixes the budget's reference layer.
        k_factor: that layer's factors (default ``args.k_factor``).

    Raises ConfigError, naming the flag, for an unknown kind or a size the layer refuses.
    """
    if not switch:
        return None
    kind = args.compact_layer
    if kind not in COMPACT_LAYERS:
        raise ConfigError(f"--compact_layer={kind}: unknown; use one of {', '.join(COMPACT_LAYERS)}")
    factors = args.k_factor if k_factor is None else k_factor

    def build(in_features: int, out_features: int, bias: bool) -> nn.Module:
        try:
            return make_compact_linear(kind, in_features, out_features, bias, diag=diag, k_factor=factors,
                                       rank=args.lowrank_rank, nblocks=args.monarch_blocks,
                                       budget=args.compact_budget)
        except ValueError as error:  # e.g. more Monarch blocks than a layer has features
            raise ConfigError(f"--compact_layer={kind} (--monarch_blocks, --lowrank_rank): {error}") from None

    return build
