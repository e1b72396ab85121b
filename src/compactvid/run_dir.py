"""The run directory (--train_dir) of a training run: its files, who owns it, starting over and resuming.

What a run writes there: ``run.json`` (the marker that the directory holds a compactvid run: version, run
id, the names of the TensorBoard event files it wrote), ``run.lock`` (locked while a run is in
progress), ``config.json`` (every flag), ``params.json`` (parameter counts), ``checkpoints/ckpt-<step>.pt``
(see `compactvid.checkpoint`), ``metrics.jsonl`` (one JSON object per logged step, epoch end or
validation) and TensorBoard event files (``events.out.tfevents.*``). This module is the one place that
names them. compactvid starts a run only in a new or empty directory or one its marker claims, and
deletes only files it can prove it wrote: its fixed names, the event files the marker lists, and the
temporary files of its own interrupted writes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import uuid
from typing import Any, Iterator, Optional

from compactvid import __version__
from compactvid import checkpoint as ckpt
from compactvid.config import Config, fields_in_group
from compactvid.errors import CompactVidError, ConfigError, DataError, RunDirError
from compactvid.models.registry import canonical_name

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_PREFIX = "events.out.tfevents."
RUN_FILE = "run.json"  # the marker that this directory holds a compactvid run: version, run id, event files
LOCK_FILE = "run.lock"  # locked (flock) by the process that runs in the directory
_OWN_FILES = (CONFIG_FILE, PARAMS_FILE, METRICS_FILE, RUN_FILE)  # the fixed names a run writes


def _comparable(config: Config) -> dict[str, Any]:
    """The data/model flags of `config` with defaults resolved, so equal meanings compare equal
    (--feature_names unset vs rgb,audio; the seed's spelling CirulantDiagonalNetwork)."""
    values = {f.name: getattr(config, f.name) for f in fields_in_group("data", "model")}
    values["feature_names"] = ",".join(config.feature_name_list)
    values["feature_sizes"] = ",".join(map(str, config.feature_size_list))
    values["model"] = canonical_name(config.model)
    return values


def check_resume_flags(saved: Config, current: Config, train_dir: str) -> None:
    """Refuse (ConfigError) to resume a run whose data/model flags differ, naming each one."""
    old, new = _comparable(saved), _comparable(current)
    lines = [f"  --{name}: saved {getattr(saved, name)!r}, now {getattr(current, name)!r}"
             for name in old if old[name] != new[name]]
    if lines:
        raise ConfigError(
            f"{os.path.join(train_dir, CONFIG_FILE)}: the run in --train_dir={train_dir} was trained with "
            f"other data/model flags, so its checkpoints do not fit:\n" + "\n".join(lines) +
            "\nEither repeat the saved values to resume it, or start a new model: --start_new_model "
            "(deletes that run's files) or another --train_dir.")


def refuse_foreign(train_dir: str) -> None:
    """RunDirError unless `train_dir` is new, empty, or a run of compactvid (its RUN_FILE says so): its
    files may be deleted or overwritten, so it must hold nothing that compactvid did not write."""
    path = os.path.realpath(train_dir)
    if path in (os.path.realpath(os.sep), os.path.realpath(os.path.expanduser("~"))):
        raise RunDirError(f"--train_dir={train_dir}: refusing to run in {path}; give a directory for this run "
                          f"alone, e.g. --train_dir=runs/NAME")
    if not os.path.exists(path) or read_marker(train_dir) is not None or _is_earlier_run(train_dir):
        return
    if not os.path.isdir(path):
        raise RunDirError(f"--train_dir={train_dir}: not a directory; give a directory for this run alone")
    others = sorted(set(os.listdir(path)) - {LOCK_FILE})
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise RunDirError(f"--train_dir={train_dir}: not a compactvid run (no {RUN_FILE}) and not empty ({shown}); "
                          f"compactvid writes only into a new or empty directory: choose another --train_dir")


def _is_earlier_run(train_dir: str) -> bool:
    """Whether `train_dir` holds a run of a compactvid from before RUN_FILE: a config.json that loads as a
    `Config` (unknown keys are refused), and nothing but the names such a run writes."""
    names = set(os.listdir(train_dir)) - {LOCK_FILE}
    ours = {CONFIG_FILE, PARAMS_FILE, METRICS_FILE, os.path.basename(ckpt.checkpoint_dir(train_dir))}
    if CONFIG_FILE not in names or not names <= ours | event_files(train_dir):
        return False
    try:
        with open(os.path.join(train_dir, CONFIG_FILE)) as f:
            saved = json.load(f)
        Config.from_dict(saved)  # refuses keys that are no flag of ours
    except (CompactVidError, OSError, ValueError, TypeError, AttributeError):
        return False
    # Every compactvid config.json records every flag; these have been there since the first version.
    return {"train_dir", "model", "video_level_classifier_model"} <= saved.keys()


def read_marker(train_dir: str) -> Optional[dict[str, Any]]:
    """The run marker of `train_dir` (``compactvid``, ``run_id``, ``event_files``), or None if it has none."""
    try:
        with open(os.path.join(train_dir, RUN_FILE)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and "compactvid" in marker and "run_id" in marker else None


def _write_marker(train_dir: str, marker: dict[str, Any]) -> None:
    ckpt.write_text_atomically(os.path.join(train_dir, RUN_FILE), json.dumps(marker, indent=2) + "\n")


def record_event_files(train_dir: str, names: list[str]) -> None:
    """Add TensorBoard event files that this run created to its marker, so that a new start may delete them."""
    marker = read_marker(train_dir)
    marker["event_files"] = sorted(set(marker["event_files"]) | set(names))
    _write_marker(train_dir, marker)


def event_files(train_dir: str) -> set[str]:
    """The names of the TensorBoard event files in `train_dir` (this run's and any other's)."""
    return {name for name in os.listdir(train_dir) if name.startswith(TENSORBOARD_PREFIX)}


class RunLock:
    """An exclusive lock on a run directory (flock on its LOCK_FILE), held until `release` or the end of
    the process: the OS drops it when the process dies, even by kill -9, so it never goes stale.

    One process holds it for the whole run: the one that prepared the directory (the parent of
    --num_gpu's processes, rank 0 under torchrun). Readers (`eval` watching the run) take no lock.
    """

    def __init__(self, train_dir: str) -> None:
        path = os.path.join(train_dir, LOCK_FILE)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self._fd, 200).decode("utf-8", "replace").strip() or "a process that just started"
            os.close(self._fd)
            raise RunDirError(f"--train_dir={train_dir} is in use by another `compactvid train` ({holder}); "
                              f"wait for it to end (or stop it), or choose another --train_dir") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())

    def release(self) -> None:
        os.close(self._fd)


@contextlib.contextmanager
def claimed(train_dir: str) -> Iterator[None]:
    """Hold `train_dir` for this run until the block ends: refuse another program's directory (before
    writing anything into it), create it, lock it (RunDirError naming the process that holds it)."""
    refuse_foreign(train_dir)
    with explained_os_errors(train_dir):
        os.makedirs(train_dir, exist_ok=True)
        lock = RunLock(train_dir)
    try:
        yield
    finally:
        lock.release()


def remove_previous_run(train_dir: str, marker: dict[str, Any]) -> None:
    """Delete the files the run of `marker` wrote in `train_dir`: its checkpoints, its fixed-name files, the
    event files it recorded, and the temporary files of its interrupted writes. Nothing else."""
    removed = [path for _, path in ckpt.list_checkpoints(train_dir)]
    for path in removed:
        os.remove(path)
    removed += ckpt.remove_temporary_files(train_dir, _OWN_FILES)
    checkpoints = ckpt.checkpoint_dir(train_dir)
    if os.path.isdir(checkpoints) and not os.listdir(checkpoints):
        os.rmdir(checkpoints)
    for name in [CONFIG_FILE, PARAMS_FILE, METRICS_FILE, *marker["event_files"]]:
        path = os.path.join(train_dir, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    if removed:
        log.info("--start_new_model: removed the previous run's %d files from %s", len(removed), train_dir)


def prepare_train_dir(config: Config) -> bool:
    """Make --train_dir ready for this run, which holds it (`claimed`): start over (--start_new_model) or
    check that the saved run fits; mark it as compactvid's. Returns whether to resume."""
    train_dir = config.train_dir
    marker = read_marker(train_dir)
    if marker is None and _is_earlier_run(train_dir):
        # Its event files are its own: the directory holds nothing but what a compactvid run writes.
        marker = {"compactvid": __version__, "run_id": uuid.uuid4().hex, "event_files": sorted(event_files(train_dir))}
        _write_marker(train_dir, marker)
        log.info("%s: a run of an earlier compactvid; marked as this program's (%s)", train_dir, RUN_FILE)
    if marker is not None and config.start_new_model:
        remove_previous_run(train_dir, marker)
        marker = None
    ckpt.remove_temporary_files(train_dir, _OWN_FILES)
    if marker is None:
        _write_marker(train_dir, {"compactvid": __version__, "run_id": uuid.uuid4().hex, "event_files": []})
    resume = bool(ckpt.list_checkpoints(train_dir))
    config_path = os.path.join(train_dir, CONFIG_FILE)
    if resume and os.path.exists(config_path):
        check_resume_flags(Config.from_json_file(config_path), config, train_dir)
    ckpt.write_text_atomically(config_path, config.to_json() + "\n")
    return resume


# errno values that the user fixes on the side of the directory, with the fix.
_RESUME = "then run the same command again (it resumes from the newest checkpoint)"
_FIXES = {errno.ENOSPC: f"free some space, {_RESUME}", errno.EDQUOT: f"free some space (disk quota), {_RESUME}",
          errno.EACCES: "choose a --train_dir you can write to", errno.EPERM: "choose a --train_dir you can write to",
          errno.EROFS: "choose a --train_dir on a writable file system"}


@contextlib.contextmanager
def explained_os_errors(train_dir: str) -> Iterator[None]:
    """Turn a full disk or an unwritable --train_dir into a one-line RunDirError (files already written,
    checkpoints included, stay as they are: every write is atomic)."""
    try:
        yield
    except OSError as error:
        where = os.fspath(error.filename or train_dir)
        inside = os.path.realpath(where).startswith(os.path.realpath(train_dir))
        if error.errno not in _FIXES or not inside:
            raise
        raise RunDirError(f"{where}: {error.strerror}; {_FIXES[error.errno]}") from error


def truncate_metrics(path: str, step: int) -> None:
    """Drop the lines of metrics.jsonl logged after `step` (by a run killed before its next checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a line cut short by a kill
    if len(kept) != len(lines):
        ckpt.write_text_atomically(path, "".join(kept))


def read_metrics(train_dir: str) -> list[dict]:
    """The records of `train_dir`/metrics.jsonl, in order (empty when the run logged nothing yet)."""
    path = os.path.join(train_dir, METRICS_FILE)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file; is {train_dir} a --train_dir of `compactvid train`?")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
