"""Models: frame aggregations, video-level classifiers, the paper's network, and the registry."""

from compactvid.models.registry import FRAME_LEVEL_MODELS, MODELS, create_model, is_frame_level
from compactvid.models.report import parameter_report

__all__ = ["MODELS", "FRAME_LEVEL_MODELS", "create_model", "is_frame_level", "parameter_report"]
