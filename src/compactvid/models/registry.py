"""The model registry: ``--model`` name -> builder taking the run's Config.

- ``CirculantDiagonalNetwork`` (also the seed's spelling ``CirulantDiagonalNetwork``): the paper's
  frame-level network, on frames ``[batch, n_bagging, iterations, dim]`` (``--frame_features=True``).
- ``LogisticModel``, ``MoeModel``, ``Circulant_MoeModel``, ``CirculantWithFactor_MoeModel``: the
  video-level classifiers alone, on video-level features ``[batch, dim]`` (``--frame_features=False``,
  e.g. ``mean_rgb,mean_audio``).

Every model returns class probabilities ``[batch, num_classes]`` and has ``regularization_loss()`` and
``components()`` (see `compactvid.models.report`).
"""

from __future__ import annotations

import logging
from typing import Callable

from torch import nn

from compactvid.config import Config
from compactvid.errors import ConfigError
from compactvid.models.classifiers import CLASSIFIERS, create_classifier
from compactvid.models.flag_effects import ineffective_flags
from compactvid.models.network import CirculantDiagonalNetwork

__all__ = ["MODELS", "FRAME_LEVEL_MODELS", "create_model", "is_frame_level"]

log = logging.getLogger(__name__)

FRAME_LEVEL_MODELS = ("CirculantDiagonalNetwork", "CirulantDiagonalNetwork")


def _video_level(name: str) -> Callable[[Config], nn.Module]:
    def build(config: Config) -> nn.Module:
        return create_classifier(name, config, sum(config.feature_size_list))
    return build


MODELS: dict[str, Callable[[Config], nn.Module]] = {
    **{name: CirculantDiagonalNetwork for name in FRAME_LEVEL_MODELS},
    **{name: _video_level(name) for name in CLASSIFIERS},
}


def is_frame_level(name: str) -> bool:
    """Whether the registered model ``name`` takes frames (else video-level features)."""
    return name in FRAME_LEVEL_MODELS


def create_model(config: Config) -> nn.Module:
    """Build ``config.model`` from the registry, after warning about flags that would change nothing.

    Raises ConfigError for invalid flag values, an unknown model, or a model that does not fit
    ``--frame_features``.
    """
    config.validate()
    name = config.model
    if name not in MODELS:
        raise ConfigError(f"--model={name}: unknown model; use one of {', '.join(MODELS)}")
    frame_level = is_frame_level(name)
    if frame_level and not config.frame_features:
        raise ConfigError(f"--model={name} takes frame-level features: use --frame_features=True (or a "
                          f"video-level model: {', '.join(CLASSIFIERS)})")
    if not frame_level and config.frame_features:
        raise ConfigError(f"--model={name} is a video-level model: use --frame_features=False with "
                          f"video-level data (mean_rgb,mean_audio), or --model=CirculantDiagonalNetwork")
    for message in ineffective_flags(config, frame_level):
        log.warning(message)
    model = MODELS[name](config)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0 - config.batch_norm_decay
    return model
