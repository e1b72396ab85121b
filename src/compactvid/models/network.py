"""The paper's network (the seed's ``CirulantDiagonalNetwork``): frame embeddings, FC layers, classifier.

Input: frames ``[batch, n_bagging, iterations, dim]``, already sampled and L2-normalized per frame by
the data loader (``[batch, frames, dim]`` is taken as one bag). The first feature of
``--feature_names`` (rgb) is the video modality, the remaining ones (audio) together the audio modality;
``--no_audio`` drops the latter. Optional batch norm on the input frames (``--input_add_batch_norm``).

Per modality, each enabled embedding (DBoF, NetVLAD, NetFV, moments, in that order) is applied to every
bag by ONE module (shared weights) and the results averaged; then FC -> batch norm (else a bias) ->
ReLU6 to ``--fc_hidden_size``. The audio embeddings use half of every cluster size. All FC outputs,
video then audio, are concatenated and classified by ``--video_level_classifier_model``.

Compact switches, as the original: ``--fc_{dbof,netvlad,fisher,moment}_circulant`` make that FC
diagonal-circulant, with a learned diagonal or, with ``--use_d_matrix``, a fixed random +-1 one;
``--dbof_circulant`` makes the DBoF projection diagonal-circulant (learned diagonal, never +-1);
``--k_factor`` factors in every diagonal-circulant layer. ``--compact_layer=lowrank|monarch`` gives
every switch that structure instead (`compactvid.models.compact`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compactvid.errors import ConfigError
from compactvid.layers.batch_norm import SLIM_DECAY, batch_norm
from compactvid.layers.initializers import LinearFactory
from compactvid.models.aggregation import DBoF, Moments, NetFV, NetVLAD
from compactvid.models.args import EMBEDDINGS, ModelArgs
from compactvid.models.classifiers import CLASSIFIERS, create_classifier
from compactvid.models.compact import compact_layer
from compactvid.models.report import Component

__all__ = ["CirculantDiagonalNetwork", "BaggedEmbedding", "as_bags", "average_over_bags", "bag_mean"]


def as_bags(frames: Tensor, input_size: int) -> Tensor:
    """Frames as ``[batch, n_bagging, iterations, input_size]`` (``[batch, iterations, input_size]`` is one
    bag); ValueError for any other shape."""
    if frames.dim() == 3:
        frames = frames.unsqueeze(1)
    if frames.dim() != 4 or frames.shape[-1] != input_size:
        raise ValueError(f"expected frames [batch, n_bagging, iterations, {input_size}], got {tuple(frames.shape)}")
    return frames


def average_over_bags(aggregation: nn.Module, bags: Tensor) -> Tensor:
    """``aggregation`` (``[videos, frames, dim] -> [videos, size]``) applied to every bag of ``bags``
    ``[batch, n_bags, frames, dim]``, the results averaged: ``[batch, size]``.

    In training each bag goes through alone, so that the batch norms inside take their statistics per bag,
    as the original normalizes each sample separately; the outputs are summed as they come (a stack of
    them and its gradient were two 420 MB tensors per step at NetFV's README sizes). In eval mode every
    batch norm is elementwise (running statistics), so the bags go through as one batch of
    ``batch * n_bags`` videos: one product per layer instead of one per bag, and an exported graph without
    a copy of the aggregation per bag.
    """
    if aggregation.training:
        n_bags = bags.shape[1]
        pooled = aggregation(bags[:, 0])
        if n_bags > 1:
            pooled = pooled + aggregation(bags[:, 1])  # a fresh tensor: the other bags add into it
            for i in range(2, n_bags):
                pooled.add_(aggregation(bags[:, i]))
            pooled.div_(n_bags)
        return pooled
    return bag_mean(aggregation(bags.flatten(0, 1)).unflatten(0, bags.shape[:2]))


def bag_mean(pooled: Tensor) -> Tensor:
    """``pooled [batch, n_bags, size]`` averaged over its bags: ``[batch, size]``."""
    # As a product: exported, ONNX Runtime's ReduceMean over a middle axis is several times slower than
    # its matrix product (docs/benchmarks.md, "Export").
    return (pooled.new_full((1, pooled.shape[1]), 1.0 / pooled.shape[1]) @ pooled).squeeze(1)


class BaggedEmbedding(nn.Module):
    """One embedding of one modality: shared aggregation over bags, averaged, then FC -> BN -> ReLU6.

    Args:
        aggregation: ``[batch, frames, dim] -> [batch, aggregation.output_size]``, each row computed
            from its own frames alone in eval mode.
        hidden_size: FC width.
        fc_compact: ``None`` for a dense FC (N(0, 1/sqrt(hidden_size))), else the factory of a structured
            one (`compactvid.models.compact.compact_layer`), with its own initialization.
        add_batch_norm: batch norm after the FC (else a bias, N(0, 0.01)).
        batch_norm_decay: decay of that batch norm's moving averages.
    """

    def __init__(self, aggregation: nn.Module, hidden_size: int, fc_compact: LinearFactory | None = None,
                 add_batch_norm: bool = True, batch_norm_decay: float = SLIM_DECAY) -> None:
        super().__init__()
        self.aggregation = aggregation
        in_size = aggregation.output_size
        if fc_compact is None:
            self.fc: nn.Module = nn.Linear(in_size, hidden_size, bias=not add_batch_norm)
            nn.init.normal_(self.fc.weight, 0.0, 1.0 / math.sqrt(hidden_size))
        else:
            self.fc = fc_compact(in_size, hidden_size, not add_batch_norm)
        if self.fc.bias is not None:
            nn.init.normal_(self.fc.bias, 0.0, 0.01)
        self.norm = batch_norm(hidden_size, batch_norm_decay) if add_batch_norm else nn.Identity()

    def forward(self, bags: Tensor) -> Tensor:
        """``bags [batch, n_bags, frames, dim] -> [batch, hidden_size]``."""
        pooled = average_over_bags(self.aggregation, bags)
        return F.relu6(self.norm(self.fc(pooled)))


class CirculantDiagonalNetwork(nn.Module):
    """``frames [batch, n_bagging, iterations, dim] -> probabilities [batch, num_classes]``, built from
    its `ModelArgs` (the embeddings they enable, compact switches, classifier)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        embeddings = args.embeddings()
        if not embeddings:
            raise ConfigError(f"--model={args.model} needs at least one embedding: add "
                              f"{', '.join('--' + e.add_flag for e in EMBEDDINGS.values())}")
        if args.video_level_classifier_model not in CLASSIFIERS:
            raise ConfigError(f"--video_level_classifier_model={args.video_level_classifier_model}: unknown; "
                              f"use one of {', '.join(CLASSIFIERS)}")
        decay = args.batch_norm_decay
        self.input_size = sum(args.feature_sizes)
        self.modality_sizes = args.modality_sizes()
        self.input_norm = batch_norm(self.input_size, decay) if args.input_add_batch_norm else nn.Identity()
        fc_diag = "sign" if args.use_d_matrix else "learned"
        # The DBoF projection's circulant layer always has a learned diagonal, as the original's.
        dbof_compact = compact_layer(args, args.dbof_circulant)
        self.branches = nn.ModuleDict()
        for modality, size in self.modality_sizes.items():
            divisor = 1 if modality == "video" else 2
            aggregations = {
                "dbof": lambda: DBoF(size, args.dbof_cluster_size // divisor, args.dbof_pooling_method,
                                     args.embedding_add_batch_norm, dbof_compact, decay),
                "netvlad": lambda: NetVLAD(size, args.netvlad_cluster_size // divisor,
                                           args.embedding_add_batch_norm, decay),
                "fisher_vector": lambda: NetFV(size, args.fv_cluster_size // divisor, args.embedding_add_batch_norm,
                                               args.fv_couple_weights, args.fv_coupling_factor, decay),
                "moments": lambda: Moments(size),
            }
            self.branches[modality] = nn.ModuleDict({
                name: BaggedEmbedding(aggregations[name](), args.fc_hidden_size,
                                      compact_layer(args, getattr(args, EMBEDDINGS[name].fc_circulant_flag), fc_diag),
                                      args.fc_add_batch_norm, decay)
                for name in embeddings})
        width = args.fc_hidden_size * len(embeddings) * len(self.modality_sizes)
        self.classifier = create_classifier(args.video_level_classifier_model, args, width)

    def forward(self, frames: Tensor) -> Tensor:
        """``frames [batch, n_bagging, iterations, dim]`` (or ``[batch, iterations, dim]``: one bag)
        -> probabilities ``[batch, num_classes]``."""
        bags = as_bags(frames, self.input_size)
        if isinstance(self.input_norm, nn.BatchNorm1d) and self.input_norm.training:
            # Per bag: its own batch statistics, as the original normalizes each sample separately.
            bags = torch.stack([self._normalize_input(bags[:, i]) for i in range(bags.shape[1])], dim=1)
        else:
            bags = self._normalize_input(bags)
        features = []
        start = 0
        for modality, size in self.modality_sizes.items():
            features.extend(embedding(bags[..., start:start + size]) for embedding in self.branches[modality].values())
            start += size
        return self.classifier(torch.cat(features, dim=1))

    def _normalize_input(self, frames: Tensor) -> Tensor:
        """The input batch norm over every frame of ``frames [..., dim]`` (same shape)."""
        return self.input_norm(frames.reshape(-1, frames.shape[-1])).reshape(frames.shape)

    def regularization_loss(self) -> Tensor:
        """The classifier's L2 penalties (the only ones of the original network)."""
        return self.classifier.regularization_loss()

    def components(self) -> list[Component]:
        """Parameter groups for the report: input BN, embeddings and FC per modality, classifier, gating."""
        parts = []
        if isinstance(self.input_norm, nn.BatchNorm1d):
            parts.append(Component("input_bn", "input_bn", "shared", self.input_norm))
        for modality, branch in self.branches.items():
            for name, embedding in branch.items():
                parts.append(Component(f"{modality}.{name}.embedding", "embedding", modality, embedding.aggregation))
                parts.append(Component(f"{modality}.{name}.fc", "fc", modality,
                                       nn.ModuleList([embedding.fc, embedding.norm])))
        return parts + self.classifier.components()
