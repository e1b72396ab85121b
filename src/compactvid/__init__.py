"""compactvid: compact (circulant) video classifiers for YouTube-8M-format data, in PyTorch."""

from compactvid.errors import CheckpointError, CompactVidError, ConfigError, DataError

__version__ = "0.1.0"

__all__ = ["CompactVidError", "DataError", "ConfigError", "CheckpointError", "__version__"]
