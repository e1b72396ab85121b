"""Monarch linear layer (Dao et al., ICML 2022): a drop-in for ``nn.Linear`` whose weight is
``L P^T R``, two block-diagonal factors with a fixed permutation between them.

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

Where we differ from the paper: its Monarch matrix is ``P L P^T R``; the last permutation P only
reorders the outputs of a learned layer (the layers ``L P^T R`` are exactly the row-permuted Monarch
matrices: same parameters, same expressiveness), and applying it costs a full copy of the output, so
we leave it out: output slice l is outputs ``l s .. l s + s - 1``.

Both products are batched matmuls over the k blocks. A custom ``autograd.Function`` chooses every
layout: operands are strided views that BLAS reads directly, the output and the input gradient are
written in place into their final ``[rows, k, width]`` layout (``bmm(out=)`` on a transposed view).
Measured at the DBoF projection (1200 rows, 1024 -> 8192, 37 blocks, one thread): autograd's own bmm
backward fell back to per-block copies (61% of the step in ``copy_``), and a fresh output written
then permuted cost 54 + 46 ms against 16 ms for the in-place write.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

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



def _stride_permute(middle: Tensor, q: int) -> Tensor:
    """P^T: ``[k, rows, q]`` by R's blocks -> ``[k, rows, q]`` by L's blocks, contiguous (slice l holds
    entries ``l, l + k, ...`` of each row's k*q middle entries)."""
    k, rows, _ = middle.shape
    return middle.transpose(0, 1).reshape(rows, q, k).permute(2, 0, 1).contiguous()


def _stride_unpermute(grad: Tensor, q: int) -> Tensor:
    """P, the inverse (and adjoint) of `_stride_permute`."""
    k, rows, _ = grad.shape
    return grad.permute(1, 2, 0).reshape(rows, k, q).transpose(0, 1).contiguous()


def _middle(x: Tensor, blocks1: Tensor) -> Tensor:
    """``x [rows, k*p]`` -> ``P^T R x`` as ``[k, rows, q]`` (by L's blocks)."""
    k, q, p = blocks1.shape
    rows = x.shape[0]
    return _stride_permute(torch.bmm(x.view(rows, k, p).transpose(0, 1), blocks1.transpose(1, 2)), q)


def _monarch_traced(x: Tensor, blocks1: Tensor, blocks2: Tensor, out_features: int) -> Tensor:
    """`_MonarchFunction`'s product in plain differentiable ops without ``out=``, for torch.compile and
    torch.export (ONNX), which trace the graph whole and choose the layouts themselves."""
    y = torch.bmm(_middle(x, blocks1), blocks2.transpose(1, 2)).transpose(0, 1).reshape(x.shape[0], -1)
    return y[:, :out_features]


class _MonarchFunction(torch.autograd.Function):
    """``x [rows, k*p] -> [rows, out_features]`` through ``blocks1 [k, q, p]``, P^T and ``blocks2
    [k, s, q]``, the last ``k*s - out_features`` outputs cut."""

    @staticmethod
    def forward(ctx, x: Tensor, blocks1: Tensor, blocks2: Tensor, out_features: int) -> Tensor:
        k, s = blocks2.shape[:2]
        rows = x.shape[0]
        middle = _middle(x, blocks1)
        y = x.new_empty(rows, k, s)
        torch.bmm(middle, blocks2.transpose(1, 2), out=y.transpose(0, 1))
        ctx.save_for_backward(x, blocks1, blocks2, middle)
        return y.view(rows, k * s)[:, :out_features]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, blocks1, blocks2, middle = ctx.saved_tensors
        k, q, p = blocks1.shape
        s = blocks2.shape[1]
        rows, out_features = grad_y.shape
        need_x, need_1, need_2 = ctx.needs_input_grad[:3]
        if out_features < k * s:
            # The cut outputs get zero gradient; one pass (autograd's slice backward zero-fills, then copies).
            padded = grad_y.new_empty(rows, k * s)
            padded[:, :out_features] = grad_y
            padded[:, out_features:] = 0
            grad_y = padded
        grad_blocks = grad_y.reshape(rows, k, s).transpose(0, 1)  # [k, rows, s]
        grad2 = torch.bmm(grad_blocks.transpose(1, 2), middle) if need_2 else None
        grad_x = grad1 = None
        if need_x or need_1:
            grad_middle = _stride_unpermute(torch.bmm(grad_blocks, blocks2), q)  # [k, rows, q]
            if need_1:
                grad1 = torch.bmm(grad_middle.transpose(1, 2), x.view(rows, k, p).transpose(0, 1))
            if need_x:
                grad_x = x.new_empty(rows, k, p)
                torch.bmm(grad_middle, blocks1, out=grad_x.transpose(0, 1))
                grad_x = grad_x.view(rows, k * p)
        return grad_x, grad1, grad2, None


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
    kind = "monarch"

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
        k, p = self.shape.nblocks, self.shape.p
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        blocks1, blocks2 = self.blocks1, self.blocks2
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            # As nn.Linear under autocast: products and output in the autocast dtype.
            dtype = torch.get_autocast_dtype(device_type)
            rows, blocks1, blocks2 = rows.to(dtype), blocks1.to(dtype), blocks2.to(dtype)
        if k * p != self.in_features:
            rows = F.pad(rows, (0, k * p - self.in_features))
        product = _monarch_traced if torch.compiler.is_compiling() else _MonarchFunction.apply
        with torch.autocast(device_type, enabled=False):
            y = product(rows, blocks1, blocks2, self.out_features)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features)

    def to_dense(self) -> Tensor:
        """The equivalent ``[out_features, in_features]`` matrix, built from ``torch.block_diag`` and the
        permutation as an index map (independently of ``forward``). Differentiable."""
        k, p, q, s = self.shape
        device = self.blocks1.device
        right = torch.block_diag(*self.blocks1.unbind(0))  # [k q, k p]
        left = torch.block_diag(*self.blocks2.unbind(0))  # [k s, k q]
        # Input l * q + r of L is middle entry r * k + l.
        middle = torch.tensor([r * k + l for l in range(k) for r in range(q)], device=device)
        return (left @ right[middle])[: self.out_features, : self.in_features]

    def structure_repr(self) -> str:
        k, p, q, s = self.shape
        return f"nblocks={k}, blocks=({p}->{q}, {q}->{s})"
