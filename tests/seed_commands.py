"""The seed README's command lines, for the tests: its PARAMS and its twelve experiment lines.

PARAMS has one source, `compactvid.experiments.SEED_PARAMS` (which the experiments run); the twelve
lines are the README's verbatim (`python3 code/train.py --train_dir=${OUT_FOLDER}` removed), including
its compact NetFV line that passes --fc_netvlad_circulant.
"""

import shlex

from compactvid.experiments import SEED_PARAMS

SEED_LINES = {
    "exp1 dense": "--add_dbof=True --video_level_classifier_model=MoeModel",
    "exp1 fc circulant, +-1 diagonal":
        "--add_dbof=True --use_d_matrix=True --fc_dbof_circulant=True --video_level_classifier_model=MoeModel",
    "exp2 DBoF dense": "--add_dbof=True --video_level_classifier_model=MoeModel",
    "exp2 DBoF fc circulant": "--add_dbof=True --fc_dbof_circulant=True --video_level_classifier_model=MoeModel",
    "exp2 NetVLAD dense": "--add_netvlad=True --video_level_classifier_model=MoeModel",
    "exp2 NetVLAD fc circulant":
        "--add_netvlad=True --fc_netvlad_circulant=True --video_level_classifier_model=MoeModel",
    "exp2 NetFV dense": "--add_fisher_vector=True --video_level_classifier_model=MoeModel",
    "exp2 NetFV 'compact'":
        "--add_fisher_vector=True --fc_netvlad_circulant=True --video_level_classifier_model=MoeModel",
    "exp3 dense": "--add_dbof=True --no_audio=True --video_level_classifier_model=MoeModel",
    "exp3 DBoF circulant":
        "--add_dbof=True --no_audio=True --dbof_circulant=True --video_level_classifier_model=MoeModel",
    "exp3 fc circulant":
        "--add_dbof=True --no_audio=True --fc_dbof_circulant=True --video_level_classifier_model=MoeModel",
    "exp3 circulant MoE": "--add_dbof=True --no_audio=True --video_level_classifier_model=Circulant_MoeModel",
}


def seed_params(folder: str = "", num_gpu: int = 4) -> list[str]:
    """The README's PARAMS with TRAIN_FOLDER (ending with a separator) and N_GPUS filled in."""
    return shlex.split(SEED_PARAMS.format(data=folder, num_gpu=num_gpu))


def seed_argv(name: str, folder: str = "") -> list[str]:
    """Experiment line ``name`` followed by PARAMS, as the README's command."""
    return shlex.split(SEED_LINES[name]) + seed_params(folder)
