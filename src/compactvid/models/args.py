"""A model's own arguments (nanoGPT's ``model_args``): everything a registered model is built from.

`ModelArgs` is all a model needs, so that `compactvid.models` and `compactvid.layers` serve without the
command line: ``create_model(ModelArgs(add_dbof=True, num_classes=20))``. Field names are the seed's
flag names (errors name ``--field``) and defaults are the seed's; the CLI's `Config` takes its model
flags' defaults from here and turns a run's flags into `ModelArgs` with ``Config.model_args()``.
This module imports nothing heavy (no torch), so that the flag parser can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from compactvid.errors import ConfigError

__all__ = ["ModelArgs", "Embedding", "EMBEDDINGS"]


class Embedding(NamedTuple):
    """One frame embedding of the paper's network: the flag enabling it, the flag making its FC layer
    circulant, and its name in legends."""

    add_flag: str
    fc_circulant_flag: str
    label: str


# Embedding name -> its flags, in the network's concatenation order: the one table of which flag enables
# and which compacts each embedding (the network, the flag warnings and the plot legends read it).
EMBEDDINGS: dict[str, Embedding] = {
    "dbof": Embedding("add_dbof", "fc_dbof_circulant", "DBoF"),
    "netvlad": Embedding("add_netvlad", "fc_netvlad_circulant", "NetVLAD"),
    "fisher_vector": Embedding("add_fisher_vector", "fc_fisher_circulant", "NetFV"),
    "moments": Embedding("add_moments", "fc_moment_circulant", "moments"),
}

_POSITIVE = ("num_classes", "iterations", "n_bagging", "dbof_cluster_size", "netvlad_cluster_size",
             "fv_cluster_size", "fc_hidden_size", "moe_num_mixtures", "k_factor", "nextvlad_cluster_size",
             "nextvlad_hidden_size", "groups", "expansion", "gating_reduction")
POOLING_METHODS = ("max", "average")


@dataclass(frozen=True)
class ModelArgs:
    """The arguments of every registered model; see `compactvid.config.Config` for each flag's help.

    Input: ``frame_features`` (frames ``[batch, n_bagging, iterations, sum(feature_sizes)]``, sampled
    with ``sample_random_frames``) or video-level features ``[batch, sum(feature_sizes)]``; output:
    probabilities ``[batch, num_classes]``. ``batch_norm_decay`` is the decay of every batch norm's
    moving averages (`compactvid.layers.batch_norm`).
    """

    model: str = "CirculantDiagonalNetwork"
    num_classes: int = 3862
    feature_sizes: tuple[int, ...] = (1024, 128)
    frame_features: bool = True
    iterations: int = 30
    sample_random_frames: bool = True
    n_bagging: int = 1
    no_audio: bool = False
    add_dbof: bool = False
    add_netvlad: bool = False
    add_fisher_vector: bool = False
    add_moments: bool = False
    dbof_cluster_size: int = 8192
    dbof_pooling_method: str = "max"
    dbof_circulant: bool = False
    netvlad_cluster_size: int = 128
    fv_cluster_size: int = 64
    fv_couple_weights: bool = False
    fv_coupling_factor: float = 0.01
    embedding_add_batch_norm: bool = True
    input_add_batch_norm: bool = False
    fc_hidden_size: int = 1024
    fc_add_batch_norm: bool = True
    fc_dbof_circulant: bool = False
    fc_netvlad_circulant: bool = False
    fc_fisher_circulant: bool = False
    fc_moment_circulant: bool = False
    use_d_matrix: bool = False
    k_factor: int = 1
    compact_layer: str = "circulant"
    lowrank_rank: int = 0
    monarch_blocks: int = 0
    compact_budget: float = 1.0
    video_level_classifier_model: str = "MoeModel"
    moe_num_mixtures: int = 2
    moe_add_batch_norm: bool = True
    MoE_gating: bool = True
    moe_l2: float = 1e-8
    l2_penalty: float = 1e-8
    nextvlad_cluster_size: int = 64
    nextvlad_hidden_size: int = 1024
    groups: int = 8
    expansion: int = 2
    gating_reduction: int = 8
    drop_rate: float = 0.5
    fc_nextvlad_circulant: bool = False
    nextvlad_expansion_circulant: bool = False
    nextvlad_cluster_circulant: bool = False
    gating_circulant: bool = False
    batch_norm_decay: float = 0.999

    def embeddings(self) -> list[str]:
        """Names of the enabled embeddings (`EMBEDDINGS` keys), in concatenation order."""
        return [name for name, embedding in EMBEDDINGS.items() if getattr(self, embedding.add_flag)]

    def modality_sizes(self) -> dict[str, int]:
        """``{"video": size[, "audio": size]}``: the first feature is video, the others together audio."""
        modalities = {"video": self.feature_sizes[0]}
        if len(self.feature_sizes) > 1 and not self.no_audio:
            modalities["audio"] = sum(self.feature_sizes[1:])
        return modalities

    def validate(self) -> None:
        """Raise ConfigError for values no model can be built from, naming the flag and a valid value."""
        if not self.feature_sizes or any(s <= 0 for s in self.feature_sizes):
            raise ConfigError(f"--feature_sizes={','.join(map(str, self.feature_sizes))}: sizes must be positive")
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be a positive integer")
        if self.dbof_pooling_method not in POOLING_METHODS:
            raise ConfigError(f"--dbof_pooling_method={self.dbof_pooling_method!r}: use max or average")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"--drop_rate={self.drop_rate}: must be in [0, 1), e.g. 0.5")
        for name in ("lowrank_rank", "monarch_blocks"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be >= 0 (0: sized by --compact_budget)")
        if self.compact_budget <= 0:
            raise ConfigError(f"--compact_budget={self.compact_budget}: must be > 0, e.g. 1 (the circulant "
                              f"layer's parameters), 4 or 16")
        if not 0.0 <= self.batch_norm_decay < 1.0:
            raise ConfigError(f"--batch_norm_decay={self.batch_norm_decay}: must be in [0, 1), e.g. 0.999")
