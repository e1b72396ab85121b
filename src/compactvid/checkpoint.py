"""Checkpoints of a training run: atomic writes, the newest few kept, safe loading.

A checkpoint is one file ``<train_dir>/checkpoints/ckpt-<step>.pt`` holding a dict of tensors and plain
Python values (model and optimizer state dicts, step, epoch and position in it, examples seen, RNG
states, the run's config). It is written to a temporary file in the same directory, flushed to disk and
renamed over its final name, so a process killed at any moment (kill -9 included) leaves either the
previous newest checkpoint or the new one, never a partial file under a checkpoint name. Loading uses
``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import tempfile
from typing import Any, Callable, IO, Iterable, Optional

import numpy as np
import torch

from compactvid.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
KEEP_CHECKPOINTS = 3  # older ones are deleted after each successful write
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
_TEMP_PREFIX = ".tmp-"  # temporary files of interrupted writes start with this (and are cleaned up)
# ".tmp-<final name>.<mkstemp's 8 random characters>"
_TEMP_NAME = re.compile(r"^" + re.escape(_TEMP_PREFIX) + r"(.+)\.[a-z0-9_]{8}$")


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that `path` is either its old content or the complete new one, even after a crash.

    `write` receives a binary file object. The data are fsync'ed before the rename, and the directory
    after it, so the rename itself survives a power loss.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_atomically(path: str, text: str) -> None:
    """`write_atomically` for a text file (UTF-8)."""
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def checkpoint_dir(train_dir: str) -> str:
    return os.path.join(train_dir, CHECKPOINT_DIR)


def list_checkpoints(train_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every checkpoint in `train_dir`, oldest first."""
    directory = checkpoint_dir(train_dir)
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def save_checkpoint(train_dir: str, step: int, state: dict[str, Any], keep: int = KEEP_CHECKPOINTS) -> str:
    """Write `state` as the checkpoint of `step`, then delete all but the newest `keep`. Returns its path.

    `state` must hold only tensors and plain Python values (dicts, lists, tuples, numbers, strings, None),
    which is what ``torch.load(weights_only=True)`` accepts.
    """
    path = os.path.join(checkpoint_dir(train_dir), f"ckpt-{step:09d}.pt")
    write_atomically(path, lambda f: torch.save(state, f))
    for _, old in list_checkpoints(train_dir)[:-keep]:
        os.remove(old)
    return path


def load_checkpoint(path: str) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, safely (no code runs); CheckpointError naming the file if unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({_reason(error)}); delete it to fall back to "
                              f"an older one, or train to write a new one") from error


def _reason(error: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in one line and without torch's advice to reload
    it with weights_only=False: a file that needs that can run code when loaded, and is never loaded here."""
    text = str(error)
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        return (f"it holds a Python object ({blocked.group(1)}) besides tensors and plain values, which "
                f"compactvid never unpickles since that could run code: it was not written by compactvid")
    if isinstance(error, pickle.UnpicklingError):
        return "its bytes are not a PyTorch checkpoint: truncated, corrupt, or another kind of file"
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and "weights_only" not in line and "torch.load" not in line]
    return f"{type(error).__name__}: {lines[0] if lines else 'unreadable'}"


def load_latest_checkpoint(train_dir: str) -> Optional[tuple[str, dict[str, Any]]]:
    """(path, state) of the newest checkpoint that loads, or None if there is none.

    An unreadable newest file (e.g. a disk that filled up) is reported and the next older one is tried.
    """
    for _, path in reversed(list_checkpoints(train_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as error:
            log.warning("skipping %s", error)
    return None


def remove_temporary_files(train_dir: str, names: Iterable[str]) -> list[str]:
    """Delete the temporary files that a kill left behind while `write_atomically` wrote one of `names`
    (files of `train_dir`) or a checkpoint; no other file, whatever its name. Returns their paths."""
    removed = []
    for directory, ours in ((train_dir, set(names).__contains__), (checkpoint_dir(train_dir), _NAME.match)):
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                match = _TEMP_NAME.match(name)
                if match and ours(match.group(1)):
                    removed.append(os.path.join(directory, name))
                    os.remove(removed[-1])
    return removed


def capture_rng_state() -> dict[str, Any]:
    """The state of every random generator a run uses (torch CPU and CUDA, Python, NumPy), weights_only-safe."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo `capture_rng_state`: put every generator back where it was."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
