"""compactvid: compact (circulant) video classifiers for YouTube-8M-format data, in PyTorch."""

from compactvid.errors import CheckpointError, CompactVidError, ConfigError, DataError

__version__ = "0.1.0"

__all__ = ["CompactVidError", "DataError", "ConfigError", "CheckpointError", "__version__", "load_model",
           "export_model"]


def __getattr__(name: str):
    # Lazily, so that `import compactvid` (and the CLI's --help) does not import torch's exporters.
    if name in ("load_model", "export_model"):
        from compactvid import export

        return getattr(export, name)
    raise AttributeError(f"module 'compactvid' has no attribute {name!r}")
