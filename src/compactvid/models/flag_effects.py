"""Which model arguments change nothing in a given model (so that the user can be told).

The original silently ignored such flags; e.g. the seed README's NetFV "compact" run passes
``--fc_netvlad_circulant`` with only NetFV enabled, so it trains the dense model. An argument is
reported when its value differs from the default and the model never reads it. Flags the original
defined but never used (`compactvid.seed_flags`) are reported by the flag parser instead.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

from compactvid.models.args import EMBEDDINGS, ModelArgs
from compactvid.models.classifiers import MIXTURES
from compactvid.models.registry import NEXTVLAD, canonical_name, is_frame_level

__all__ = ["ineffective_flags"]


class _Setting(NamedTuple):
    args: ModelArgs
    classifier: str
    embeddings: frozenset[str]


def _needs_embedding(name: str, flag: str) -> tuple[Callable[[_Setting], bool], str]:
    return (lambda s: name in s.embeddings), f"the {name} embedding is not enabled (--{flag})"


def _circulant_fcs(s: _Setting) -> bool:
    return any(getattr(s.args, EMBEDDINGS[emb].fc_circulant_flag) for emb in s.embeddings)


def _nextvlad(s: _Setting) -> bool:
    return canonical_name(s.args.model) == NEXTVLAD


def _context_gating(s: _Setting) -> bool:
    return _nextvlad(s) or (MIXTURES.get(s.classifier) == "dense" and s.args.MoE_gating)


def _diagonal_circulant_layers(s: _Setting) -> bool:
    if _nextvlad(s):
        compact = any(getattr(s.args, flag) for flag in _NEXTVLAD_SWITCHES) or s.args.gating_circulant
    else:
        compact = _circulant_fcs(s) or ("dbof" in s.embeddings and s.args.dbof_circulant)
    return (compact or (s.args.gating_circulant and _context_gating(s))
            or MIXTURES.get(s.classifier) == "diagonal_circulant")


def _compact_switches(s: _Setting) -> bool:
    return _diagonal_circulant_layers(s) or MIXTURES.get(s.classifier) == "circulant"


def _sized_by_budget(s: _Setting) -> bool:
    """Whether some low-rank or Monarch layer takes its size from --compact_budget."""
    size = {"lowrank": s.args.lowrank_rank, "monarch": s.args.monarch_blocks}.get(s.args.compact_layer)
    return size == 0 and _compact_switches(s)


def _circulant_shaped(s: _Setting) -> bool:
    """Whether the circulant layers' own arguments shape a layer: they build it, or size it by the budget."""
    return s.args.compact_layer == "circulant" or _sized_by_budget(s)


# NeXtVLADModel's own flags: no other model reads them.
_NEXTVLAD_SWITCHES = ("fc_nextvlad_circulant", "nextvlad_expansion_circulant", "nextvlad_cluster_circulant")
_NEXTVLAD_ONLY = ("nextvlad_cluster_size", "nextvlad_hidden_size", "groups", "expansion", "gating_reduction",
                  "drop_rate", *_NEXTVLAD_SWITCHES)
# Flags every frame-level model reads (the paper's network reads all of _NETWORK_ONLY).
_FRAME_LEVEL = ("iterations", "sample_random_frames", "n_bagging", "no_audio", "video_level_classifier_model")


# Flag -> (does it act in this setting?, why not) for frame-level networks.
_NETWORK_RULES: dict[str, tuple[Callable[[_Setting], bool], str]] = {
    **{e.fc_circulant_flag: _needs_embedding(name, e.add_flag) for name, e in EMBEDDINGS.items()},
    "dbof_cluster_size": _needs_embedding("dbof", "add_dbof"),
    "dbof_pooling_method": _needs_embedding("dbof", "add_dbof"),
    "dbof_circulant": _needs_embedding("dbof", "add_dbof"),
    "netvlad_cluster_size": _needs_embedding("netvlad", "add_netvlad"),
    "fv_cluster_size": _needs_embedding("fisher_vector", "add_fisher_vector"),
    "fv_couple_weights": _needs_embedding("fisher_vector", "add_fisher_vector"),
    "fv_coupling_factor": (lambda s: "fisher_vector" in s.embeddings and s.args.fv_couple_weights,
                           "it is used only by NetFV with --fv_couple_weights"),
    "embedding_add_batch_norm": (lambda s: bool(s.embeddings - {"moments"}),
                                 "only DBoF, NetVLAD and NetFV have batch norm inside"),
    "use_d_matrix": (lambda s: _circulant_fcs(s) and _circulant_shaped(s),
                     "no enabled embedding has a circulant FC (--fc_*_circulant) whose layer or budget it "
                     "shapes (--compact_layer, --compact_budget)"),
    "no_audio": (lambda s: len(s.args.feature_sizes) > 1, "there is no audio feature (--feature_names)"),
}

# Flags that only frame-level networks read.
_NETWORK_ONLY = sorted({*_NETWORK_RULES, *(e.add_flag for e in EMBEDDINGS.values()), "iterations",
                        "sample_random_frames", "n_bagging", "input_add_batch_norm", "fc_hidden_size",
                        "fc_add_batch_norm", "video_level_classifier_model"})

_CLASSIFIER_RULES: dict[str, tuple[Callable[[_Setting], bool], str]] = {
    "moe_num_mixtures": (lambda s: s.classifier in MIXTURES, "the classifier is not a mixture of experts"),
    "MoE_gating": (lambda s: MIXTURES.get(s.classifier) == "dense", "only MoeModel has output context gating"),
    "moe_add_batch_norm": (lambda s: MIXTURES.get(s.classifier) == "dense" and s.args.MoE_gating
                           and is_frame_level(s.args.model),
                           "it acts inside the output context gating (--MoE_gating) of a network's MoeModel; "
                           "MoeModel alone gates with a bias, as the original's train.py builds it"),
    "moe_l2": (lambda s: MIXTURES.get(s.classifier) == "dense", "only MoeModel's dense weights are penalized"),
    "k_factor": (lambda s: _diagonal_circulant_layers(s) and _circulant_shaped(s),
                 "no layer is diagonal-circulant, nor sized by a diagonal-circulant layer's budget"),
    "compact_layer": (_compact_switches, "no compact switch is on (--fc_*_circulant, --dbof_circulant, "
                      "--gating_circulant, a circulant MoE, NeXtVLAD's --nextvlad_*_circulant)"),
    "lowrank_rank": (lambda s: s.args.compact_layer == "lowrank" and _compact_switches(s),
                     "no compact switch builds a low-rank layer (--compact_layer=lowrank)"),
    "monarch_blocks": (lambda s: s.args.compact_layer == "monarch" and _compact_switches(s),
                       "no compact switch builds a Monarch layer (--compact_layer=monarch)"),
    "compact_budget": (_sized_by_budget, "no low-rank or Monarch layer is sized by it (--compact_layer, "
                       "--lowrank_rank=0, --monarch_blocks=0)"),
    "gating_circulant": (_context_gating, "there is no context gating (MoeModel with --MoE_gating, or "
                         "NeXtVLADModel)"),
    "l2_penalty": (lambda s: s.classifier == "LogisticModel", "only LogisticModel reads it (MoeModel: --moe_l2)"),
}


def ineffective_flags(args: ModelArgs) -> list[str]:
    """One message per model argument set to a non-default value that changes nothing in model ``args.model``."""
    defaults = ModelArgs()
    frame_level = is_frame_level(args.model)
    classifier = args.video_level_classifier_model if frame_level else args.model
    setting = _Setting(args, classifier, frozenset(args.embeddings()))
    messages = []
    for field in dataclasses.fields(ModelArgs):
        name = field.name
        value = getattr(args, name)
        if value == getattr(defaults, name):
            continue
        if name in _CLASSIFIER_RULES:
            acts, why = _CLASSIFIER_RULES[name]
        elif name in (*_NETWORK_ONLY, *_NEXTVLAD_ONLY) and not frame_level:
            acts, why = (lambda s: False), f"--model={args.model} is a video-level model"
        elif name in _NEXTVLAD_ONLY:
            acts, why = _nextvlad, f"only --model={NEXTVLAD} reads it"
        elif name in _NETWORK_ONLY and name not in _FRAME_LEVEL and _nextvlad(setting):
            acts, why = (lambda s: False), f"--model={NEXTVLAD} does not read it (the paper's network does)"
        elif name in _NETWORK_RULES:
            acts, why = _NETWORK_RULES[name]
        else:
            continue
        if not acts(setting):
            messages.append(f"--{name}={value} has no effect: {why}")
    return messages
