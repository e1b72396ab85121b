"""What every structured drop-in for ``nn.Linear`` shares: shapes, bias, the structured flag, counts.

A structured layer maps ``[*, in_features] -> [*, out_features]`` with fewer parameters than the dense
``[out_features, in_features]`` matrix it stands for, which ``to_dense()`` returns. Its structured
parameters (named in ``structured_names``) carry ``_is_structured = True`` (as in torch_butterfly) so
that an optimizer setup can exclude them from weight decay; the flag survives ``copy.deepcopy`` and
pickling. The parameter report counts a structured layer's dense equivalent from ``dense_parameters()``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["StructuredLinear"]


class StructuredLinear(nn.Module):
    """Base class: ``in_features``, ``out_features``, an optional ``bias [out_features]`` and counts.

    Subclasses create their structured parameters first, then call ``_add_bias`` (so that ``bias`` is
    the last parameter, as in every checkpoint written so far), list the structured parameters' names in
    ``structured_names``, name their ``kind``, and implement ``forward``, ``to_dense`` and ``structure_repr``.
    """

    structured_names: tuple[str, ...] = ()
    kind: str = ""  # the name `make_compact_linear` and ``--compact_layer`` know the layer by

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"{type(self).__name__} needs in_features >= 1 and out_features >= 1, "
                f"got {in_features}, {out_features}"
            )
        self.in_features = in_features
        self.out_features = out_features

    def _add_bias(self, bias: bool, factory: dict) -> None:
        """Register ``bias [out_features]`` (or None), then flag the structured parameters."""
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self._flag_structured()

    def _flag_structured(self) -> None:
        for name in self.structured_names:
            p = getattr(self, name)
            if p is not None:
                p._is_structured = True

    def __setstate__(self, state: dict) -> None:
        # copy.deepcopy and unpickling rebuild Parameters without their Python attributes.
        super().__setstate__(state)
        self._flag_structured()

    def _check_input(self, x: Tensor) -> None:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects inputs [..., {self.in_features}], got shape {tuple(x.shape)}"
            )

    def to_dense(self) -> Tensor:
        """The equivalent ``[out_features, in_features]`` matrix (bias excluded)."""
        raise NotImplementedError

    def num_compact_parameters(self) -> int:
        """Trainable parameters (bias included)."""
        return sum(p.numel() for p in self.parameters())

    def dense_parameters(self) -> int:
        """Parameters of the ``nn.Linear`` this layer stands for: ``in * out`` (+ out with bias)."""
        return self.in_features * self.out_features + (self.out_features if self.bias is not None else 0)

    def structure_repr(self) -> str:
        """The structure's own arguments, for ``extra_repr``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        params, dense = self.num_compact_parameters(), self.dense_parameters()
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, {self.structure_repr()}, "
            f"params={params} (dense {dense}, {dense / params:.1f}x smaller)"
        )
