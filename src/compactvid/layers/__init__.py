"""Compact (structured) layers: drop-ins for ``nn.Linear``."""

from compactvid.layers.circulant import CirculantLinear
from compactvid.layers.lowrank import LowRankLinear
from compactvid.layers.monarch import MonarchLinear
from compactvid.layers.structured import StructuredLinear

__all__ = ["CirculantLinear", "LowRankLinear", "MonarchLinear", "StructuredLinear"]
