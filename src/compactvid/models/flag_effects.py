"""Which model flags change nothing in a given configuration (so that the user can be told).

The original silently ignored such flags; e.g. the seed README's NetFV "compact" run passes
``--fc_netvlad_circulant`` with only NetFV enabled, so it trains the dense model. A flag is reported
when its value differs from the default and the configuration never reads it. Flags the original
defined but never used (the Config's ``ignored`` group) are reported by the flag parser instead.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

from compactvid.config import Config

__all__ = ["ineffective_flags"]

MIXTURES = ("MoeModel", "Circulant_MoeModel", "CirculantWithFactor_MoeModel")


class _Setting(NamedTuple):
    config: Config
    frame_level: bool
    classifier: str
    embeddings: frozenset[str]


def _needs_embedding(name: str, flag: str) -> tuple[Callable[[_Setting], bool], str]:
    return (lambda s: name in s.embeddings), f"the {name} embedding is not enabled (--{flag})"


def _circulant_fcs(s: _Setting) -> bool:
    return any(getattr(s.config, fc) for emb, fc in _FC_FLAGS.items() if emb in s.embeddings)


def _diagonal_circulant_layers(s: _Setting) -> bool:
    return (_circulant_fcs(s) or ("dbof" in s.embeddings and s.config.dbof_circulant)
            or s.classifier == "CirculantWithFactor_MoeModel")


_FC_FLAGS = {"dbof": "fc_dbof_circulant", "netvlad": "fc_netvlad_circulant",
             "fisher_vector": "fc_fisher_circulant", "moments": "fc_moment_circulant"}
_ADD_FLAGS = {"dbof": "add_dbof", "netvlad": "add_netvlad", "fisher_vector": "add_fisher_vector",
              "moments": "add_moments"}

# Flag -> (does it act in this setting?, why not) for frame-level networks.
_NETWORK_RULES: dict[str, tuple[Callable[[_Setting], bool], str]] = {
    **{fc: _needs_embedding(emb, _ADD_FLAGS[emb]) for emb, fc in _FC_FLAGS.items()},
    "dbof_cluster_size": _needs_embedding("dbof", "add_dbof"),
    "dbof_pooling_method": _needs_embedding("dbof", "add_dbof"),
    "dbof_circulant": _needs_embedding("dbof", "add_dbof"),
    "netvlad_cluster_size": _needs_embedding("netvlad", "add_netvlad"),
    "fv_cluster_size": _needs_embedding("fisher_vector", "add_fisher_vector"),
    "fv_couple_weights": _needs_embedding("fisher_vector", "add_fisher_vector"),
    "fv_coupling_factor": (lambda s: "fisher_vector" in s.embeddings and s.config.fv_couple_weights,
                           "it is used only by NetFV with --fv_couple_weights"),
    "embedding_add_batch_norm": (lambda s: bool(s.embeddings - {"moments"}),
                                 "only DBoF, NetVLAD and NetFV have batch norm inside"),
    "use_d_matrix": (_circulant_fcs, "no enabled embedding has a circulant FC (--fc_*_circulant)"),
    "no_audio": (lambda s: len(s.config.feature_size_list) > 1, "there is no audio feature (--feature_names)"),
}

# Flags that only frame-level networks read.
_NETWORK_ONLY = sorted({*_NETWORK_RULES, *_ADD_FLAGS.values(), "iterations", "sample_random_frames", "n_bagging",
                        "input_add_batch_norm", "fc_hidden_size", "fc_add_batch_norm",
                        "video_level_classifier_model"})

_CLASSIFIER_RULES: dict[str, tuple[Callable[[_Setting], bool], str]] = {
    "moe_num_mixtures": (lambda s: s.classifier in MIXTURES, "the classifier is not a mixture of experts"),
    "MoE_gating": (lambda s: s.classifier == "MoeModel", "only MoeModel has output context gating"),
    "moe_add_batch_norm": (lambda s: s.classifier == "MoeModel" and s.config.MoE_gating,
                           "it acts inside MoeModel's output context gating (--MoE_gating)"),
    "moe_l2": (lambda s: s.classifier == "MoeModel", "only MoeModel's dense weights are penalized"),
    "k_factor": (_diagonal_circulant_layers, "no layer is diagonal-circulant"),
}


def ineffective_flags(config: Config, frame_level: bool) -> list[str]:
    """One message per model flag set to a non-default value that changes nothing here.

    Args:
        config: the run's flags.
        frame_level: whether ``config.model`` is a frame-level network (else a video-level classifier
            named by ``config.model``).
    """
    defaults = Config()
    classifier = config.video_level_classifier_model if frame_level else config.model
    embeddings = frozenset(emb for emb, flag in _ADD_FLAGS.items() if getattr(config, flag))
    setting = _Setting(config, frame_level, classifier, embeddings)
    messages = []
    for field in dataclasses.fields(Config):
        name = field.name
        value = getattr(config, name)
        if value == getattr(defaults, name):
            continue
        if name in _CLASSIFIER_RULES:
            acts, why = _CLASSIFIER_RULES[name]
        elif name in _NETWORK_ONLY and not frame_level:
            acts, why = (lambda s: False), f"--model={config.model} is a video-level model"
        elif name in _NETWORK_RULES:
            acts, why = _NETWORK_RULES[name]
        else:
            continue
        if not acts(setting):
            messages.append(f"--{name}={value} has no effect: {why}")
    return messages
