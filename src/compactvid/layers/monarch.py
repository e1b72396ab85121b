"""Monarch linear layer (Dao et al., ICML 2022): a drop-in for ``nn.Linear`` whose weight is
``P L P^T R``, two block-diagonal factors with a fixed permutation between them.

With ``k = nblocks`` blocks, the input is cut into k slices of ``p = ceil(in / k)`` features (the last
one zero-padded), the output into k slices of ``s = ceil(out / k)`` (the output is truncated to
out_features), and the middle has k slices of ``q = min(p, s)``: the padding, truncation and middle
width of the authors' code (HazyResearch's ``MonarchLinear``), so that a layer is
``k * q * (p + s)`` weights whatever its shape (``2 n sqrt(n)`` for a square n with k = sqrt(n)).

- R = blocks1 ``[k, q, p]``: block i maps input slice i to middle slice i.
- P^T: the middle vector, k slices of q, read as a ``[q, k]`` grid and transposed: slice l of the
  second factor's input holds the entries ``l, l + k, l + 2k, ...`` of the middle vector (the stride
  permutation; for q = k it takes entry l of every first-factor block).
- L = blocks2 ``[k, s, q]``: block l maps its slice to output slice l.
- P: output slice l's entry j goes to output ``j * k + l``.

Both products are batched matmuls over the k blocks (``torch.bmm``), and autograd's bmm backward is
the same two GEMMs a hand-written backward would do, so the layer is plain PyTorch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compactvid.layers.structured import StructuredLinear

__all__ = ["MonarchLinear", "MonarchShape"]


class MonarchShape(NamedTuple):
    """Block sizes of a Monarch layer: ``nblocks`` blocks of ``p`` inputs, ``q`` middle, ``s`` outputs."""

    nblocks: int
    p: int
    q: int
    s: int

    @classmethod
    def of(cls, in_features: int, out_features: int, nblocks: int) -> "MonarchShape":
        p, s = math.ceil(in_features / nblocks), math.ceil(out_features / nblocks)
        return cls(nblocks, p, min(p, s), s)

    def weight_count(self) -> int:
        """Structured weights (bias excluded): ``k * q * (p + s)``."""
        return self.nblocks * self.q * (self.p + self.s)



class MonarchLinear(StructuredLinear):
    """Linear map ``[*, in_features] -> [*, out_features]`` with a Monarch weight (see module doc).

    Compatible with ``torch.nn.Linear`` (same positional arguments, any leading batch dims, any device
    and floating dtype, autocast as nn.Linear).

    Args:
        in_features, out_features: as nn.Linear.
        bias: add a learned bias ``[out_features]`` (nn.Linear's default: True).
        nblocks: blocks k of each factor, ``1 <= k <= min(in, out)`` (default 4, the authors' code's).
            Where the padding fills whole blocks (9 features in 6 blocks of 2: the sixth block sees
            only zeros), those blocks' weights have no effect, as in the authors' code; they are
            counted (the parameter report shows what the layer holds).
        device, dtype: where and in which floating type to create the parameters, as for nn.Linear.

    Parameters:
        blocks1: ``[nblocks, q, p]``, the factor applied first (R); blocks2: ``[nblocks, s, q]`` (L);
        both flagged ``_is_structured``. bias: ``[out_features]`` when ``bias=True``.

    Initialization (``reset_parameters``): blocks1 LeCun-uniform over its fan-in p (``U(+-sqrt(3/p))``,
    variance ``1/p``: the middle keeps the input's variance) and blocks2 nn.Linear's own initialization
    for its fan-in q (``U(+-1/sqrt(q))``, variance ``1/(3q)``), so that for inputs with independent
    unit-variance entries the output variance is nn.Linear's, 1/3 (slightly less where the last input
    slice is padded). The bias is nn.Linear's, ``U(+-1/sqrt(in))``.
    """

    structured_names = ("blocks1", "blocks2")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        nblocks: int = 4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features)
        if not 1 <= nblocks <= min(in_features, out_features):
            raise ValueError(
                f"MonarchLinear({in_features}, {out_features}) nblocks must be between 1 and "
                f"min(in_features, out_features) = {min(in_features, out_features)}, got {nblocks}"
            )
        shape = MonarchShape.of(in_features, out_features, nblocks)
        factory = {"device": device, "dtype": dtype}
        self.shape = shape
        self.blocks1 = nn.Parameter(torch.empty(nblocks, shape.q, shape.p, **factory))
        self.blocks2 = nn.Parameter(torch.empty(nblocks, shape.s, shape.q, **factory))
        self._add_bias(bias, factory)
        self.reset_parameters()

    @property
    def nblocks(self) -> int:
        return self.shape.nblocks

    def reset_parameters(self) -> None:
        """blocks1 ~ U(+-sqrt(3/p)), blocks2 ~ U(+-1/sqrt(q)), bias ~ U(+-1/sqrt(in)): see the class docstring."""
        with torch.no_grad():
            bound1 = math.sqrt(3.0 / self.shape.p)
            self.blocks1.uniform_(-bound1, bound1)
            bound2 = 1.0 / math.sqrt(self.shape.q)
            self.blocks2.uniform_(-bound2, bound2)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                self.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``x [*, in_features] -> [*, out_features]``."""
        self._check_input(x)
        k, p, q, s = self.shape
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        if k * p != self.in_features:
            rows = F.pad(rows, (0, k * p - self.in_features))
        n = rows.shape[0]
        # [k, n, p] @ [k, p, q]: every block at once, rows as the matmul's M dimension.
        middle = torch.bmm(rows.reshape(n, k, p).transpose(0, 1), self.blocks1.transpose(1, 2))
        # P^T: per row, the k*q middle entries (block-major) read as [q, k], then [k, q].
        middle = middle.transpose(0, 1).reshape(n, q, k).permute(2, 0, 1)
        out = torch.bmm(middle, self.blocks2.transpose(1, 2))  # [k, n, s]
        # P: entry j of output block l goes to j * k + l.
        y = out.permute(1, 2, 0).reshape(n, s * k)
        if s * k != self.out_features:
            y = y[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)  # under autocast y is bfloat16/float16, as nn.Linear's output
        return y.reshape(*lead, self.out_features)

    def to_dense(self) -> Tensor:
        """The equivalent ``[out_features, in_features]`` matrix, built from ``torch.block_diag`` and the
        two permutations as index maps (independently of ``forward``). Differentiable."""
        k, p, q, s = self.shape
        device = self.blocks1.device
        right = torch.block_diag(*self.blocks1.unbind(0))  # [k q, k p]
        left = torch.block_diag(*self.blocks2.unbind(0))  # [k s, k q]
        # Input l * q + r of L is middle entry r * k + l; output j * k + l is L's output l * s + j.
        middle = torch.tensor([r * k + l for l in range(k) for r in range(q)], device=device)
        output = torch.tensor([l * s + j for j in range(s) for l in range(k)], device=device)
        return (left @ right[middle])[output][: self.out_features, : self.in_features]

    def structure_repr(self) -> str:
        k, p, q, s = self.shape
        return f"nblocks={k}, blocks=({p}->{q}, {q}->{s})"
