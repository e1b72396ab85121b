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
``--k_factor`` factors in every diagonal-circulant layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compactvid.config import Config
from compactvid.errors import ConfigError
from compactvid.layers.batch_norm import batch_norm
from compactvid.layers.circulant import CirculantLinear
from compactvid.models.aggregation import DBoF, Moments, NetFV, NetVLAD
from compactvid.models.classifiers import CLASSIFIERS, create_classifier
from compactvid.models.report import Component

__all__ = ["CirculantDiagonalNetwork", "BaggedEmbedding", "EMBEDDINGS", "enabled_embeddings", "modality_sizes"]

# Embedding name -> (flag enabling it, flag making its FC circulant), in concatenation order.
EMBEDDINGS: dict[str, tuple[str, str]] = {
    "dbof": ("add_dbof", "fc_dbof_circulant"),
    "netvlad": ("add_netvlad", "fc_netvlad_circulant"),
    "fisher_vector": ("add_fisher_vector", "fc_fisher_circulant"),
    "moments": ("add_moments", "fc_moment_circulant"),
}


def enabled_embeddings(config: Config) -> list[str]:
    """Names of the embeddings the flags enable, in concatenation order."""
    return [name for name, (flag, _) in EMBEDDINGS.items() if getattr(config, flag)]


def modality_sizes(config: Config) -> dict[str, int]:
    """``{"video": size[, "audio": size]}``: the first feature is video, the others together audio."""
    sizes = config.feature_size_list
    modalities = {"video": sizes[0]}
    if len(sizes) > 1 and not config.no_audio:
        modalities["audio"] = sum(sizes[1:])
    return modalities


class BaggedEmbedding(nn.Module):
    """One embedding of one modality: shared aggregation over bags, averaged, then FC -> BN -> ReLU6.

    Args:
        aggregation: ``[batch, frames, dim] -> [batch, aggregation.output_size]``.
        hidden_size: FC width.
        fc_diag: ``None`` for a dense FC (N(0, 1/sqrt(hidden_size))), else the circulant layer's diagonal
            variant (``"learned"`` or ``"sign"``).
        k_factor: factors per diagonal-circulant block.
        add_batch_norm: batch norm after the FC (else a bias, N(0, 0.01)).
    """

    def __init__(self, aggregation: nn.Module, hidden_size: int, fc_diag: str | None = None, k_factor: int = 1,
                 add_batch_norm: bool = True) -> None:
        super().__init__()
        self.aggregation = aggregation
        in_size = aggregation.output_size
        if fc_diag is None:
            self.fc: nn.Module = nn.Linear(in_size, hidden_size, bias=not add_batch_norm)
            nn.init.normal_(self.fc.weight, 0.0, 1.0 / math.sqrt(hidden_size))
        else:
            self.fc = CirculantLinear(in_size, hidden_size, bias=not add_batch_norm, diag=fc_diag, k_factor=k_factor)
        if self.fc.bias is not None:
            nn.init.normal_(self.fc.bias, 0.0, 0.01)
        self.norm = batch_norm(hidden_size) if add_batch_norm else nn.Identity()

    def forward(self, bags: list[Tensor]) -> Tensor:
        """``bags``: one ``[batch, frames, dim]`` tensor per bag -> ``[batch, hidden_size]``."""
        pooled = torch.stack([self.aggregation(bag) for bag in bags]).mean(dim=0)
        return F.relu6(self.norm(self.fc(pooled)))


class CirculantDiagonalNetwork(nn.Module):
    """``frames [batch, n_bagging, iterations, dim] -> probabilities [batch, num_classes]``, built from a Config."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        embeddings = enabled_embeddings(config)
        if not embeddings:
            raise ConfigError(f"--model={config.model} needs at least one embedding: add --add_dbof, "
                              f"--add_netvlad, --add_fisher_vector or --add_moments")
        if config.video_level_classifier_model not in CLASSIFIERS:
            raise ConfigError(f"--video_level_classifier_model={config.video_level_classifier_model}: unknown; "
                              f"use one of {', '.join(CLASSIFIERS)}")
        self.input_size = sum(config.feature_size_list)
        self.modality_sizes = modality_sizes(config)
        self.input_norm = batch_norm(self.input_size) if config.input_add_batch_norm else nn.Identity()
        fc_diag = "sign" if config.use_d_matrix else "learned"
        self.branches = nn.ModuleDict()
        for modality, size in self.modality_sizes.items():
            divisor = 1 if modality == "video" else 2
            aggregations = {
                "dbof": lambda: DBoF(size, config.dbof_cluster_size // divisor, config.dbof_pooling_method,
                                     config.embedding_add_batch_norm, config.dbof_circulant, config.k_factor),
                "netvlad": lambda: NetVLAD(size, config.netvlad_cluster_size // divisor,
                                           config.embedding_add_batch_norm),
                "fisher_vector": lambda: NetFV(size, config.fv_cluster_size // divisor, config.embedding_add_batch_norm,
                                               config.fv_couple_weights, config.fv_coupling_factor),
                "moments": lambda: Moments(size),
            }
            self.branches[modality] = nn.ModuleDict({
                name: BaggedEmbedding(aggregations[name](), config.fc_hidden_size,
                                      fc_diag if getattr(config, EMBEDDINGS[name][1]) else None,
                                      config.k_factor, config.fc_add_batch_norm)
                for name in embeddings})
        width = config.fc_hidden_size * len(embeddings) * len(self.modality_sizes)
        self.classifier = create_classifier(config.video_level_classifier_model, config, width)

    def forward(self, frames: Tensor) -> Tensor:
        """``frames [batch, n_bagging, iterations, dim]`` (or ``[batch, iterations, dim]``: one bag)
        -> probabilities ``[batch, num_classes]``."""
        if frames.dim() == 3:
            frames = frames.unsqueeze(1)
        if frames.dim() != 4 or frames.shape[-1] != self.input_size:
            raise ValueError(f"expected frames [batch, n_bagging, iterations, {self.input_size}], "
                             f"got {tuple(frames.shape)}")
        batch, n_bags, iterations, dim = frames.shape
        # Input batch norm runs per bag, as the original normalizes each sample separately.
        bags = [self.input_norm(frames[:, i].reshape(-1, dim)).reshape(batch, iterations, dim)
                for i in range(n_bags)]
        features = []
        start = 0
        for modality, size in self.modality_sizes.items():
            modality_bags = [bag[..., start:start + size] for bag in bags]
            features.extend(embedding(modality_bags) for embedding in self.branches[modality].values())
            start += size
        return self.classifier(torch.cat(features, dim=1))

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
