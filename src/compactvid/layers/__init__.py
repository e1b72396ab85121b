"""Compact (structured) layers: drop-ins for ``nn.Linear``."""

from compactvid.layers.circulant import CirculantLinear
from compactvid.layers.factory import COMPACT_LAYERS, make_compact_linear
from compactvid.layers.lowrank import LowRankLinear
from compactvid.layers.monarch import MonarchLinear
from compactvid.layers.structured import StructuredLinear

__all__ = ["COMPACT_LAYERS", "CirculantLinear", "LowRankLinear", "MonarchLinear", "StructuredLinear", "make_compact_linear"]
