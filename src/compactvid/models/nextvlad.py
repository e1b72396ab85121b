"""NeXtVLAD (Lin et al., ECCV workshops 2018) and its network, as its authors' code builds them.

Their code is github linrongc/youtube-8m (``nextvlad.py``: ``NeXtVLAD`` and ``NeXtVLADModel``). Per
modality, frames ``x [batch, T, F]``:

1. expansion: ``x' = FC(x)`` to ``lambda * F`` (with bias);
2. group attention: ``sigmoid(FC(x'))`` to G values per frame (with bias), one per group;
3. assignment: ``x' W`` with ``W [lambda F, G K]`` (no bias), batch norm over the ``G K`` values,
   softmax over the K clusters of each group, times the group's attention: ``a [batch, T G, K]``;
4. residuals: x' split into G groups of ``lambda F / G``; ``sum_{t,g} a x'_g - (sum_{t,g} a) c`` with
   centers ``c [lambda F / G, K]``;
5. L2 normalization over the ``lambda F / G`` axis, flattened feature-major to ``K lambda F / G``, batch norm.

The network concatenates video (F=1024, K, G) and audio (F=128, K/2, G/2) descriptors, applies dropout,
a hidden FC to H without bias, batch norm, the SE gating (`compactvid.layers.gating.SEGating`), then the
video-level classifier. Weights are variance-scaled (fan-in), biases zero, batch norm as slim's.

Their model reads every frame (padded to 300) and multiplies the attention by a frame mask; here the
data loader samples ``--iterations`` real frames per video, so there is no padding and the mask would
be all ones: it is left out. Bags (``--n_bagging``) share the NeXtVLAD modules and their descriptors
are averaged, as the paper's network averages its embeddings.

Compact switches (a structured layer factory in place of the dense layer, e.g. diagonal-circulant): the
hidden FC (``--fc_nextvlad_circulant``, 75.5 M of the 88.9 M parameters of their local script's model),
the expansion and cluster projections (``--nextvlad_expansion_circulant``, ``--nextvlad_cluster_circulant``)
and the SE gating (``--gating_circulant``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from compactvid.errors import ConfigError
from compactvid.layers.batch_norm import SLIM_DECAY, batch_norm
from compactvid.layers.gating import SEGating
from compactvid.layers.initializers import LinearFactory, slim_linear, variance_scaling_
from compactvid.models.aggregation import l2_normalize
from compactvid.models.args import ModelArgs
from compactvid.models.classifiers import CLASSIFIERS, create_classifier
from compactvid.models.compact import compact_layer
from compactvid.models.network import as_bags, average_over_bags
from compactvid.models.report import Component

__all__ = ["NeXtVLAD", "NeXtVLADModel", "create_nextvlad_model"]


class NeXtVLAD(nn.Module):
    """NeXtVLAD aggregation: ``[batch, frames, feature_size] -> [batch, cluster_size * expansion * feature_size / groups]``.

    Args:
        feature_size: F, the frame dimension.
        cluster_size: K clusters per group.
        groups: G groups; ``expansion * feature_size`` must be a multiple of G.
        expansion: lambda, the expansion ratio.
        expansion_compact, cluster_compact: ``None`` (dense) or the factory of a structured layer for the
            expansion FC and the cluster projection W.
        batch_norm_decay: decay of the batch norms' moving averages.

    Trainable parameters (dense): ``(F + 1) lambda F`` (expansion) + ``(lambda F + 1) G`` (attention) +
    ``lambda F G K + 2 G K`` (assignment and its batch norm) + ``3 K lambda F / G`` (centers and the
    output batch norm).
    """

    def __init__(self, feature_size: int, cluster_size: int, groups: int, expansion: int = 2,
                 expansion_compact: Optional[LinearFactory] = None, cluster_compact: Optional[LinearFactory] = None,
                 batch_norm_decay: float = SLIM_DECAY) -> None:
        super().__init__()
        expanded = expansion * feature_size
        if groups <= 0 or expanded % groups:
            raise ValueError(f"NeXtVLAD: expansion * feature_size = {expanded} must be a positive multiple of "
                             f"groups, got groups={groups}")
        self.groups, self.cluster_size = groups, cluster_size
        self.group_size = expanded // groups
        self.output_size = cluster_size * self.group_size
        self.expand = slim_linear(feature_size, expanded, True, expansion_compact)
        self.attention = slim_linear(expanded, groups, True)
        self.assignment = slim_linear(expanded, groups * cluster_size, False, cluster_compact)
        self.assignment_norm = batch_norm(groups * cluster_size, batch_norm_decay)
        # Their centers are a [1, lambda F / G, K] variable: fan-in lambda F / G.
        self.centers = nn.Parameter(variance_scaling_(torch.empty(self.group_size, cluster_size), self.group_size))
        self.output_norm = batch_norm(self.output_size, batch_norm_decay)

    def forward(self, frames: Tensor) -> Tensor:
        """``frames [batch, T, feature_size] -> [batch, output_size]``."""
        batch, length, _ = frames.shape
        expanded = self.expand(frames)
        # [batch, T, G] -> [batch, T G, 1]: frame-major, group-minor, as the assignment rows below.
        attention = torch.sigmoid(self.attention(expanded)).reshape(batch, length * self.groups, 1)
        logits = self.assignment_norm(self.assignment(expanded.reshape(batch * length, -1)))
        assignment = torch.softmax(logits.reshape(batch, length * self.groups, self.cluster_size), dim=-1)
        assignment = assignment * attention
        grouped = expanded.reshape(batch, length * self.groups, self.group_size)
        vlad = (grouped.transpose(1, 2) @ assignment) - assignment.sum(dim=1, keepdim=True) * self.centers
        vlad = l2_normalize(vlad, dim=1)  # [batch, lambda F / G, K]
        return self.output_norm(vlad.flatten(1))


class NeXtVLADModel(nn.Module):
    """``frames [batch, n_bagging, iterations, dim] -> probabilities [batch, num_classes]``.

    Args:
        modality_sizes: ``{"video": F[, "audio": F_audio]}``, split from the frames in that order; audio
            uses half the clusters and half the groups.
        input_size: the frames' last dimension (default: the modalities' sum); larger when the frames
            carry a feature the model drops (``--no_audio``: 1152 features, the first 1024 read).
        classifier: the video-level classifier, ``[batch, hidden_size] -> [batch, num_classes]`` with
            ``regularization_loss()`` and ``components()``.
        cluster_size, hidden_size, groups, expansion, gating_reduction, drop_rate: their
            ``--nextvlad_cluster_size``, ``--nextvlad_hidden_size``, ``--groups``, ``--expansion``,
            ``--gating_reduction``, ``--drop_rate`` (dropout before the hidden FC, when positive).
        fc_compact, expansion_compact, cluster_compact, gating_compact: ``None`` (dense) or the factory
            of a structured layer for the hidden FC, the expansion FCs, the cluster projections, the SE gating.
        batch_norm_decay: decay of every batch norm's moving averages.
    """

    def __init__(self, modality_sizes: dict[str, int], classifier: nn.Module, cluster_size: int = 64,
                 hidden_size: int = 1024, groups: int = 8, expansion: int = 2, gating_reduction: int = 8,
                 drop_rate: float = 0.5, *, fc_compact: Optional[LinearFactory] = None,
                 expansion_compact: Optional[LinearFactory] = None, cluster_compact: Optional[LinearFactory] = None,
                 gating_compact: Optional[LinearFactory] = None, batch_norm_decay: float = SLIM_DECAY,
                 input_size: Optional[int] = None) -> None:
        super().__init__()
        self.input_size = input_size or sum(modality_sizes.values())
        self.modality_sizes = dict(modality_sizes)
        self.aggregations = nn.ModuleDict({
            modality: NeXtVLAD(size, cluster_size // divisor, groups // divisor, expansion,
                               expansion_compact, cluster_compact, batch_norm_decay)
            for (modality, size), divisor in zip(modality_sizes.items(), (1, 2))})
        width = sum(aggregation.output_size for aggregation in self.aggregations.values())
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.hidden = slim_linear(width, hidden_size, False, fc_compact)
        self.hidden_norm = batch_norm(hidden_size, batch_norm_decay)
        self.gating = SEGating(hidden_size, gating_reduction, gating_compact, batch_norm_decay)
        self.classifier = classifier

    def forward(self, frames: Tensor) -> Tensor:
        """``frames [batch, n_bagging, iterations, dim]`` (or ``[batch, iterations, dim]``: one bag)
        -> probabilities ``[batch, num_classes]``."""
        frames = as_bags(frames, self.input_size)
        descriptors = []
        start = 0
        for modality, size in self.modality_sizes.items():
            descriptors.append(average_over_bags(self.aggregations[modality], frames[..., start:start + size]))
            start += size
        hidden = self.hidden_norm(self.hidden(self.dropout(torch.cat(descriptors, dim=1))))
        return self.classifier(self.gating(hidden))

    def regularization_loss(self) -> Tensor:
        """The classifier's L2 penalty (their NeXtVLAD layers have no regularizer)."""
        return self.classifier.regularization_loss()

    def components(self) -> list[Component]:
        """Parameter groups for the report: each modality's NeXtVLAD, the hidden FC, the SE gating, the classifier."""
        parts = [Component(f"{modality}.nextvlad.embedding", "embedding", modality, aggregation)
                 for modality, aggregation in self.aggregations.items()]
        parts.append(Component("nextvlad.fc", "fc", "shared", nn.ModuleList([self.hidden, self.hidden_norm])))
        parts.append(Component("nextvlad.gating", "gating", "shared", self.gating))
        return parts + self.classifier.components()


def create_nextvlad_model(args: ModelArgs) -> NeXtVLADModel:
    """``--model=NeXtVLADModel`` from its arguments (their flags, the classifier, the compact switches).

    Raises ConfigError when a branch's groups do not divide its expanded features or the audio branch
    would have no cluster or group.
    """
    if args.video_level_classifier_model not in CLASSIFIERS:
        raise ConfigError(f"--video_level_classifier_model={args.video_level_classifier_model}: unknown; "
                          f"use one of {', '.join(CLASSIFIERS)}")
    sizes = args.modality_sizes()
    for (modality, size), divisor in zip(sizes.items(), (1, 2)):
        groups, clusters = args.groups // divisor, args.nextvlad_cluster_size // divisor
        if groups < 1 or clusters < 1 or (args.expansion * size) % groups:
            raise ConfigError(
                f"--groups={args.groups} --nextvlad_cluster_size={args.nextvlad_cluster_size}: the {modality} "
                f"NeXtVLAD ({size} features x --expansion={args.expansion}) gets {groups} groups and "
                f"{clusters} clusters; both must be at least 1 and the groups must divide "
                f"{args.expansion * size} (e.g. --groups=8)")
    classifier = create_classifier(args.video_level_classifier_model, args, args.nextvlad_hidden_size)
    return NeXtVLADModel(
        sizes, classifier, args.nextvlad_cluster_size, args.nextvlad_hidden_size, args.groups, args.expansion,
        args.gating_reduction, args.drop_rate, fc_compact=compact_layer(args, args.fc_nextvlad_circulant),
        expansion_compact=compact_layer(args, args.nextvlad_expansion_circulant),
        cluster_compact=compact_layer(args, args.nextvlad_cluster_circulant),
        gating_compact=compact_layer(args, args.gating_circulant), batch_norm_decay=args.batch_norm_decay,
        input_size=sum(args.feature_sizes))
