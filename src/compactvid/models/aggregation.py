"""Frame aggregations: a video's frames ``[batch, frames, dim]`` -> one vector ``[batch, output_size]``.

The four embeddings of the paper's network, as the original computes them (``utils_layer.DBof``,
``DBofCirculant``, ``NetVLAD``, ``NetFV`` and the moments in ``frame_level_models``):

- `DBoF`: frame-wise projection to clusters (dense, or structured), batch norm over all frames,
  ReLU6, max or average pooling over frames.
- `NetVLAD`: soft assignment, residuals to learned centers summed over frames, intra-normalization per
  cluster, L2 normalization.
- `NetFV`: soft assignment, first- and second-order Fisher vector statistics with learned (squared,
  +1e-6) covariances.
- `Moments`: mean and (population) variance over frames.

NetVLAD and NetFV share one `SoftAssignment` module. Every module has ``output_size``. L2 normalization
is TensorFlow's ``tf.nn.l2_normalize`` (``x / sqrt(max(sum(x**2), 1e-12))``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compactvid.layers.batch_norm import SLIM_DECAY, batch_norm
from compactvid.layers.initializers import LinearFactory
from compactvid.models.args import POOLING_METHODS
from compactvid.models.fisher_vector import fisher_vector
from compactvid.models.normalize import l2_normalize

__all__ = ["DBoF", "SoftAssignment", "NetVLAD", "NetFV", "Moments", "l2_normalize"]


def _normalize_frames(norm: nn.Module, x: Tensor) -> Tensor:
    """Apply a ``[rows, features]`` batch norm to ``[batch, frames, features]``: statistics over all frames."""
    batch, frames, features = x.shape
    return norm(x.reshape(batch * frames, features)).reshape(batch, frames, features)


class DBoF(nn.Module):
    """Deep Bag of Frames: ``[batch, frames, feature_size] -> [batch, cluster_size]``.

    Args:
        feature_size: frame dimension.
        cluster_size: projection width.
        pooling: ``"max"`` or ``"average"`` over frames.
        add_batch_norm: batch norm after the projection (else the projection has a bias).
        compact: ``None`` for a dense projection, N(0, 1/sqrt(feature_size)) as the original, else the
            factory of a structured one (``--dbof_circulant``: diagonal-circulant with a learned diagonal),
            initialized as that layer's default (circulant: N(0, 1/sqrt(cluster_size))).
        batch_norm_decay: decay of the batch norm's moving averages.
    """

    def __init__(self, feature_size: int, cluster_size: int, pooling: str = "max", add_batch_norm: bool = True,
                 compact: Optional[LinearFactory] = None, batch_norm_decay: float = SLIM_DECAY) -> None:
        super().__init__()
        if pooling not in POOLING_METHODS:
            raise ValueError(f"DBoF pooling must be one of {POOLING_METHODS}, got {pooling!r}")
        self.feature_size = feature_size
        self.output_size = cluster_size
        self.pooling = pooling
        has_bias = not add_batch_norm
        if compact is not None:
            self.projection: nn.Module = compact(feature_size, cluster_size, has_bias)
        else:
            self.projection = nn.Linear(feature_size, cluster_size, bias=has_bias)
            nn.init.normal_(self.projection.weight, 0.0, 1.0 / math.sqrt(feature_size))
        if has_bias:
            nn.init.normal_(self.projection.bias, 0.0, 1.0 / math.sqrt(feature_size))
        self.norm = batch_norm(cluster_size, batch_norm_decay) if add_batch_norm else nn.Identity()

    def forward(self, frames: Tensor) -> Tensor:
        """``frames [batch, frames, feature_size] -> [batch, cluster_size]``."""
        activation = F.relu6(_normalize_frames(self.norm, self.projection(frames)))
        if self.pooling == "max":
            return activation.amax(dim=1)
        return activation.mean(dim=1)


class SoftAssignment(nn.Module):
    """Soft assignment of frames to clusters with cluster centers: the part NetVLAD and NetFV share.

    Assignment: projection ``feature_size -> cluster_size`` (N(0, 1/sqrt(feature_size))), batch norm over
    all frames (else a bias), softmax over clusters. Centers ``[feature_size, cluster_size]`` are learned
    (N(0, 1/sqrt(feature_size))), or, with ``coupling_factor``, tied to the projection weights:
    ``centers = coupling_factor * W`` (NetFV's ``--fv_couple_weights``), which adds no parameters.

    ``forward(frames [batch, frames, feature_size])`` returns
        assignment ``[batch, frames, clusters]``,
        mass ``[batch, 1, clusters]`` (assignment summed over frames),
        first_order ``[batch, feature_size, clusters]`` (sum over frames of assignment * frame).
    """

    def __init__(self, feature_size: int, cluster_size: int, add_batch_norm: bool = True,
                 coupling_factor: Optional[float] = None, batch_norm_decay: float = SLIM_DECAY) -> None:
        super().__init__()
        std = 1.0 / math.sqrt(feature_size)
        self.projection = nn.Linear(feature_size, cluster_size, bias=not add_batch_norm)
        nn.init.normal_(self.projection.weight, 0.0, std)
        if self.projection.bias is not None:
            nn.init.normal_(self.projection.bias, 0.0, std)
        self.norm = batch_norm(cluster_size, batch_norm_decay) if add_batch_norm else nn.Identity()
        self.coupling_factor = coupling_factor
        if coupling_factor is None:
            self.learned_centers = nn.Parameter(torch.empty(feature_size, cluster_size).normal_(0.0, std))
        else:
            self.register_parameter("learned_centers", None)

    def centers(self) -> Tensor:
        """Cluster centers ``[feature_size, cluster_size]``."""
        if self.learned_centers is not None:
            return self.learned_centers
        return self.coupling_factor * self.projection.weight.t()

    def assign(self, frames: Tensor) -> Tensor:
        """``frames [batch, frames, feature_size]`` -> the assignment ``[batch, frames, clusters]``."""
        return torch.softmax(_normalize_frames(self.norm, self.projection(frames)), dim=-1)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        assignment = self.assign(frames)
        mass = assignment.sum(dim=1, keepdim=True)
        first_order = frames.transpose(1, 2) @ assignment
        return assignment, mass, first_order


class NetVLAD(nn.Module):
    """NetVLAD: ``[batch, frames, feature_size] -> [batch, feature_size * cluster_size]``.

    Residuals to the centers weighted by the soft assignment and summed over frames, L2-normalized per
    cluster, flattened (feature-major, as the original) and L2-normalized.
    Trainable parameters: ``2 * feature_size * cluster_size`` + batch norm ``2 * cluster_size``.
    """

    def __init__(self, feature_size: int, cluster_size: int, add_batch_norm: bool = True,
                 batch_norm_decay: float = SLIM_DECAY) -> None:
        super().__init__()
        self.output_size = feature_size * cluster_size
        self.assignment = SoftAssignment(feature_size, cluster_size, add_batch_norm,
                                         batch_norm_decay=batch_norm_decay)

    def forward(self, frames: Tensor) -> Tensor:
        """``frames [batch, frames, feature_size] -> [batch, feature_size * cluster_size]``."""
        _, mass, first_order = self.assignment(frames)
        vlad = l2_normalize(first_order - mass * self.assignment.centers(), dim=1)
        return l2_normalize(vlad.flatten(1), dim=1)


class NetFV(nn.Module):
    """NetFV (learnable Fisher vector): ``[batch, frames, feature_size] -> [batch, 2 * feature_size * cluster_size]``.

    With ``s = covariance**2 + 1e-6`` (covariance ~ N(1, 1/sqrt(feature_size))), centers ``c`` and soft
    assignment ``a``:
    first order ``sum_t a (x - c) / s``, L2-normalized per cluster then over the whole vector;
    second order ``(sum_t a (x - c)**2) / s**2 - sum_t a``, L2-normalized over the whole vector (the
    original normalizes it globally, not per cluster). Output: [first order, second order].

    Args:
        couple_weights: tie the centers to the assignment weights (``--fv_couple_weights``).
        coupling_factor: the tying factor (``--fv_coupling_factor``).
        batch_norm_decay: decay of the assignment's batch-norm moving averages.
    """

    def __init__(self, feature_size: int, cluster_size: int, add_batch_norm: bool = True,
                 couple_weights: bool = False, coupling_factor: float = 0.01,
                 batch_norm_decay: float = SLIM_DECAY) -> None:
        super().__init__()
        self.output_size = 2 * feature_size * cluster_size
        self.assignment = SoftAssignment(feature_size, cluster_size, add_batch_norm,
                                         coupling_factor if couple_weights else None, batch_norm_decay)
        self.covariance = nn.Parameter(
            torch.empty(feature_size, cluster_size).normal_(1.0, 1.0 / math.sqrt(feature_size)))

    def forward(self, frames: Tensor) -> Tensor:
        """``frames [batch, frames, feature_size] -> [batch, 2 * feature_size * cluster_size]``."""
        return fisher_vector(frames, self.assignment.assign(frames), self.assignment.centers(),
                             self.covariance.square() + 1e-6)


class Moments(nn.Module):
    """Mean and population variance over frames: ``[batch, frames, dim] -> [batch, 2 * dim]``. No parameters."""

    def __init__(self, feature_size: int) -> None:
        super().__init__()
        self.output_size = 2 * feature_size

    def forward(self, frames: Tensor) -> Tensor:
        variance, mean = torch.var_mean(frames, dim=1, correction=0)
        return torch.cat([mean, variance], dim=1)
