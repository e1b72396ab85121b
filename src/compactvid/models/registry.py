"""The model registry: a model name -> builder taking the model's arguments (`ModelArgs`).

- ``CirculantDiagonalNetwork`` (also the seed's spelling ``CirulantDiagonalNetwork``): the paper's
  frame-level network, on frames ``[batch, n_bagging, iterations, dim]`` (``frame_features=True``).
- ``NeXtVLADModel``: NeXtVLAD (Lin et al., 2018) as its authors' code, on the same frames
  (`compactvid.models.nextvlad`).
- ``LogisticModel``, ``MoeModel``, ``Circulant_MoeModel``, ``CirculantWithFactor_MoeModel``: the
  video-level classifiers alone, on video-level features ``[batch, dim]`` (``frame_features=False``,
  e.g. ``mean_rgb,mean_audio``).

Every model returns class probabilities ``[batch, num_classes]`` and has ``regularization_loss()`` and
``components()`` (see `compactvid.models.report`). Example, without the command line::

    model = create_model(ModelArgs(add_dbof=True, dbof_cluster_size=256, num_classes=20))
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from compactvid.errors import ConfigError
from compactvid.models.args import ModelArgs
from compactvid.models.classifiers import CLASSIFIERS, create_classifier
from compactvid.models.network import CirculantDiagonalNetwork
from compactvid.models.nextvlad import create_nextvlad_model

__all__ = ["MODELS", "NETWORK", "NEXTVLAD", "SEED_NETWORK_SPELLING", "create_model", "is_frame_level", "canonical_name"]

NETWORK = "CirculantDiagonalNetwork"
# The seed's README and train.py spell the network this way; its command lines must work verbatim.
SEED_NETWORK_SPELLING = "CirulantDiagonalNetwork"
NEXTVLAD = "NeXtVLADModel"


def _video_level(name: str) -> Callable[[ModelArgs], nn.Module]:
    def build(args: ModelArgs) -> nn.Module:
        return create_classifier(name, args, sum(args.feature_sizes), alone=True)
    return build


MODELS: dict[str, Callable[[ModelArgs], nn.Module]] = {
    NETWORK: CirculantDiagonalNetwork,
    SEED_NETWORK_SPELLING: CirculantDiagonalNetwork,
    NEXTVLAD: create_nextvlad_model,
    **{name: _video_level(name) for name in CLASSIFIERS},
}


def canonical_name(name: str) -> str:
    """The registry's name for model ``name`` (the seed's spelling of the network is an alias)."""
    return NETWORK if name == SEED_NETWORK_SPELLING else name


def is_frame_level(name: str) -> bool:
    """Whether the registered model ``name`` takes frames (else video-level features)."""
    return canonical_name(name) in (NETWORK, NEXTVLAD)


def create_model(args: ModelArgs) -> nn.Module:
    """Build model ``args.model`` from ``args``.

    Raises ConfigError for invalid argument values, an unknown model, or a model that does not fit
    ``args.frame_features``.
    """
    args.validate()
    name = args.model
    if name not in MODELS:
        raise ConfigError(f"--model={name}: unknown model; use one of {', '.join(MODELS)}")
    frame_level = is_frame_level(name)
    if frame_level and not args.frame_features:
        raise ConfigError(f"--model={name} takes frame-level features: use --frame_features=True (or a "
                          f"video-level model: {', '.join(CLASSIFIERS)})")
    if not frame_level and args.frame_features:
        raise ConfigError(f"--model={name} is a video-level model: use --frame_features=False with "
                          f"video-level data (mean_rgb,mean_audio), or --model={NETWORK}")
    return MODELS[name](args)
