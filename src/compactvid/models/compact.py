"""The structured layer a compact switch of a model builds, from the model's arguments.

Every switch added with NeXtVLAD (``--fc_nextvlad_circulant``, ``--nextvlad_expansion_circulant``,
``--nextvlad_cluster_circulant``, ``--gating_circulant``) goes through `compact_layer`, which builds its
layer with `compactvid.layers.factory.make_compact_linear`: diagonal-circulant with a learned diagonal
and ``--k_factor`` factors per block, as the paper's compact FC layers.
"""

from __future__ import annotations

import functools
from typing import Optional

from compactvid.layers.factory import make_compact_linear
from compactvid.layers.initializers import LinearFactory
from compactvid.models.args import ModelArgs

__all__ = ["compact_layer"]


def compact_layer(args: ModelArgs, switch: bool) -> Optional[LinearFactory]:
    """The factory of the structured layer a compact switch builds, or None (dense) when ``switch`` is off."""
    if not switch:
        return None
    return functools.partial(make_compact_linear, "circulant", diag="learned", k_factor=args.k_factor)
