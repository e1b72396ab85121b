"""Compact (structured) layers."""

from compactvid.layers.circulant import CirculantLinear

__all__ = ["CirculantLinear"]
