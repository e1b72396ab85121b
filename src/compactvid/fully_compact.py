"""The model families compared across compactness levels, and the flags of each level.

For each family (the paper's DBoF, NetVLAD, NetFV networks and NeXtVLAD): its flags, the flags of the
compact network as the paper (or, for NeXtVLAD, its largest matrix) makes it, and the flags of the
fully compact network, in which every matrix above 1 M parameters at the README's sizes is structured
(the classifier included: the circulant mixture of experts, which has no context gating). What stays
dense is listed by ``compactvid params`` with these flags; the benchmarks and the frontier experiment
read them from here.
"""

from __future__ import annotations

__all__ = ["FAMILIES", "PAPER_COMPACT", "FULLY_COMPACT", "COMPACT_CLASSIFIER"]

COMPACT_CLASSIFIER = "--video_level_classifier_model=CirculantWithFactor_MoeModel"

# Family -> flags selecting it (the network's default classifier, MoeModel, unless given here).
FAMILIES: dict[str, list[str]] = {
    "DBoF": ["--add_dbof"],
    "NetVLAD": ["--add_netvlad"],
    "NetFV": ["--add_fisher_vector"],
    "NeXtVLAD": ["--model=NeXtVLADModel", "--video_level_classifier_model=LogisticModel"],
}

PAPER_COMPACT: dict[str, list[str]] = {
    "DBoF": ["--dbof_circulant", "--fc_dbof_circulant"],
    "NetVLAD": ["--fc_netvlad_circulant"],
    "NetFV": ["--fc_fisher_circulant"],
    "NeXtVLAD": ["--fc_nextvlad_circulant"],
}

FULLY_COMPACT: dict[str, list[str]] = {
    "DBoF": ["--dbof_circulant", "--fc_dbof_circulant", COMPACT_CLASSIFIER],
    "NetVLAD": ["--fc_netvlad_circulant", COMPACT_CLASSIFIER],
    "NetFV": ["--fc_fisher_circulant", COMPACT_CLASSIFIER],
    "NeXtVLAD": ["--fc_nextvlad_circulant", "--nextvlad_expansion_circulant", "--nextvlad_cluster_circulant",
                 "--gating_circulant", COMPACT_CLASSIFIER],
}
