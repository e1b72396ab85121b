"""NetFV's Fisher-vector statistics and their normalization, as one autograd Function.

From a soft assignment ``a [batch, frames, K]``, frames ``x [batch, frames, D]``, centers ``c [D, K]``
and variances ``s [D, K]`` (``covariance**2 + 1e-6``), with the mass ``m = sum_t a``, the first and
second order sums ``F1 = sum_t a x``, ``F2 = sum_t a x**2``:

- first order ``u = (F1 - m c) / s``, L2-normalized per cluster (over D), then over the whole vector;
- second order ``f = (F2 - 2 F1 c + m c**2) / s**2 - m`` (``sum_t a (x - c)**2 / s**2 - m``),
  L2-normalized over the whole vector (the original normalizes it globally, not per cluster);
- output ``[batch, 2 * D * K]``: both, each flattened feature-major, first order first.

Why a Function: at the README's sizes ``[batch, D, K]`` is 80 x 1024 x 64 (21 MB in float32), ten
bags per step, and this part was most of the step of every NetFV network. Written with autograd's
ops, each of the dozen elementwise steps and its backward is a pass over such a tensor, most of them
into a fresh allocation (page faults). Here ``F1`` and
``F2`` come from one batched product of ``[x, x**2]``, ``u`` and ``f`` are formed in place, both
normalizations are one per-row and per-cluster scale, and the backward pass is written out (the
normalizations' gradients are ``G * P + u * Q`` with ``P``, ``Q`` per row and cluster).
torch.compile and torch.export (ONNX) trace `fisher_vector_traced` instead: the same statistics in
plain differentiable ops, which is also the reference the tests compare the Function with.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from compactvid.models.normalize import EPSILON

__all__ = ["fisher_vector", "fisher_vector_traced"]


def fisher_vector_traced(frames: Tensor, assignment: Tensor, centers: Tensor, variance: Tensor) -> Tensor:
    """The normalized Fisher vector ``[batch, 2 * D * K]`` in plain differentiable ops (see module doc).

    ``frames [batch, frames, D]``, ``assignment [batch, frames, K]``, ``centers``, ``variance [D, K]``.
    Written for ONNX Runtime, which runs each op as a pass over ``[batch, D, K]`` into a new buffer: the
    second order from ``u`` as the Function forms it, and the per-cluster then global normalization of
    ``u`` as one scale per row and cluster (docs/benchmarks.md, "Export")."""
    inverse = variance.reciprocal()
    scaled = centers * inverse
    mass = assignment.sum(dim=1, keepdim=True)  # [B, 1, K]
    first = frames.transpose(1, 2) @ assignment
    second = frames.square().transpose(1, 2) @ assignment
    u = first * inverse - mass * scaled
    f = second * inverse.square() - u * (2.0 * scaled) - mass * (scaled.square() + 1.0)
    norms = torch.linalg.vector_norm(u, dim=1, keepdim=True)  # [B, 1, K]
    per_cluster = norms.clamp_min(EPSILON)
    # The norm of u normalized per cluster, [B, 1, 1].
    whole = torch.linalg.vector_norm(norms / per_cluster, dim=2, keepdim=True).clamp_min(EPSILON)
    f_norm = torch.linalg.vector_norm(f, dim=(1, 2), keepdim=True).clamp_min(EPSILON)
    return torch.cat([(u / (per_cluster * whole)).flatten(1), (f / f_norm).flatten(1)], dim=1)


def _scales(first: Tensor, second: Tensor) -> tuple[Tensor, ...]:
    """The norms behind both normalizations: per-cluster norms ``n1 [B, 1, K]`` of ``first`` and their
    floors ``c1``, the norm ``g [B, 1, 1]`` of the per-cluster-normalized vector and its floor ``cg``,
    the floor ``c2 [B, 1, 1]`` of ``second``'s norm."""
    n1 = first.square().sum(dim=1, keepdim=True).sqrt()  # 1.6x faster than vector_norm over D (CPU)
    c1 = n1.clamp_min(EPSILON)
    g = (n1 / c1).square().sum(dim=2, keepdim=True).sqrt()
    c2 = torch.linalg.vector_norm(second, dim=(1, 2), keepdim=True).clamp_min(EPSILON)
    return n1, c1, g, g.clamp_min(EPSILON), c2


class _FisherVectorFunction(torch.autograd.Function):
    """`fisher_vector_traced`'s result with fewer passes over ``[batch, D, K]`` (see module doc)."""

    @staticmethod
    def forward(ctx, frames: Tensor, assignment: Tensor, centers: Tensor, variance: Tensor) -> Tensor:
        batch, _, d = frames.shape
        k = assignment.shape[2]
        inverse = variance.reciprocal()
        mass = assignment.sum(dim=1, keepdim=True)  # [B, 1, K]
        squares = frames.square()
        first = frames.transpose(1, 2) @ assignment  # F1 [B, D, K]
        second = squares.transpose(1, 2) @ assignment  # F2
        first.addcmul_(mass, centers, value=-1.0).mul_(inverse)  # u
        # f = F2/s**2 - 2 u c/s - m (c**2/s**2 + 1): F2 - 2 F1 c + m c**2 rewritten with u.
        second.mul_(inverse.square()).addcmul_(first, centers * inverse, value=-2.0)
        second.addcmul_(mass, (centers * inverse).square() + 1.0, value=-1.0)
        _, c1, _, cg, c2 = scales = _scales(first, second)
        out = frames.new_empty(batch, 2, d, k)
        torch.mul(first, (c1 * cg).reciprocal(), out=out[:, 0])
        torch.mul(second, c2.reciprocal(), out=out[:, 1])
        ctx.save_for_backward(frames, squares, assignment, centers, inverse, mass, first, second, *scales)
        return out.view(batch, 2 * d * k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        frames, squares, assignment, centers, inverse, mass, first, second, n1, c1, g, cg, c2 = ctx.saved_tensors
        batch, d, k = first.shape
        grad = grad.reshape(batch, 2, d, k)
        grad1, grad2 = grad[:, 0], grad[:, 1]
        scratch = torch.empty_like(first)
        # Gradient of the two-level normalization of u: G * P + u * Q, P and Q per row and cluster.
        r1 = torch.mul(first, grad1, out=scratch).sum(dim=1, keepdim=True)  # <u_k, G_k>
        s1 = (c1 * cg).reciprocal()
        zg = (s1 * r1).sum(dim=2, keepdim=True) * (g > EPSILON)  # <z, G>, 0 below the floor
        yg = (r1 - zg * s1 * n1.square()) / (c1 * cg)  # <y_k, Gy_k>, y = u normalized per cluster
        q1 = -(zg * s1 / (cg * c1) + yg * (n1 > EPSILON) / c1.square())
        grad_u = torch.mul(grad1, s1).addcmul_(first, q1)
        r2 = (second.reshape(batch, 1, d * k) @ grad2.reshape(batch, d * k, 1))  # <f, G2>
        q2 = -r2 * (c2 > EPSILON) / c2.pow(3)
        grad_f = torch.mul(grad2, c2.reciprocal()).addcmul_(second, q2)
        # Parameters: dL/dc = -(1/s) sum_b (m Gu + 2 u Gf); dL/ds = -(1/s) sum_b (u Gu + 2 (f + m) Gf).
        torch.mul(grad_u, mass, out=scratch).addcmul_(first, grad_f, value=2.0)
        grad_centers = -inverse * scratch.sum(dim=0)
        torch.add(second, mass, out=scratch).mul_(grad_f).mul_(2.0).addcmul_(first, grad_u)
        grad_variance = -inverse * scratch.sum(dim=0)
        # The mass's own terms: dL/dm = sum_D (-Gu c/s + Gf (c**2/s**2 - 1)).
        scaled = centers * inverse
        torch.mul(grad_u, -scaled, out=scratch).addcmul_(grad_f, scaled.square() - 1.0)
        grad_mass = scratch.sum(dim=1, keepdim=True)
        # Back to F1 and F2: dL/dF1 = Gu/s - 2 Gf c/s**2, dL/dF2 = Gf/s**2.
        grad_u.mul_(inverse).addcmul_(grad_f, scaled * inverse, value=-2.0)
        grad_f.mul_(inverse.square())
        grad_assignment = torch.baddbmm(grad_mass, frames, grad_u).baddbmm_(squares, grad_f)
        grad_frames = torch.bmm(assignment, grad_u.transpose(1, 2))
        grad_frames.addcmul_(frames, assignment @ grad_f.transpose(1, 2), value=2.0)
        return grad_frames, grad_assignment, grad_centers, grad_variance


def fisher_vector(frames: Tensor, assignment: Tensor, centers: Tensor, variance: Tensor) -> Tensor:
    """The normalized Fisher vector ``[batch, 2 * D * K]`` (see module doc), computed in the inputs'
    common floating type (autocast off: the sums of squares need float32 at least).

    Args:
        frames: ``[batch, frames, D]``.
        assignment: ``[batch, frames, K]``, each frame's soft assignment to the clusters.
        centers: ``[D, K]``.
        variance: ``[D, K]``, positive.
    """
    dtype = torch.promote_types(torch.promote_types(frames.dtype, assignment.dtype),
                                torch.promote_types(centers.dtype, variance.dtype))
    inputs = [t.to(dtype) for t in (frames, assignment, centers, variance)]
    compute = fisher_vector_traced if torch.compiler.is_compiling() else _FisherVectorFunction.apply
    with torch.autocast(frames.device.type, enabled=False):
        return compute(*inputs)
