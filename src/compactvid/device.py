"""Where a command computes: the torch device that --device names, and the mixed-precision context on it.

`train`, `eval` and `inference` choose their device and their autocast here, so that one flag value means
the same everywhere and a bad one gets the same error.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from compactvid.errors import ConfigError


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """The device of --device=`requested` (auto: CUDA when present, cpu, cuda); with several GPUs, the one
    of this machine's process `local_rank`. ConfigError when CUDA is asked for and absent."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device={requested!r}: use auto, cpu or cuda")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but PyTorch sees no CUDA GPU; use --device=cpu or auto")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def autocast(device: torch.device, mixed_precision: bool) -> ContextManager:
    """bfloat16 autocast on a GPU when `mixed_precision` (--mixed_precision); float32 otherwise, and on a
    CPU always (the flag's documented scope)."""
    if device.type == "cuda" and mixed_precision:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
