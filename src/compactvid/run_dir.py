"""The run directory (--train_dir) of a training run: its file names, starting over, resuming, truncating.

What a run writes there: ``config.json`` (every flag), ``params.json`` (parameter counts),
``checkpoints/ckpt-<step>.pt`` (see `compactvid.checkpoint`), ``metrics.jsonl`` (one JSON object per
logged step or validation) and TensorBoard event files (``events.out.tfevents.*``). This module is the
one place that names them.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from compactvid import checkpoint as ckpt
from compactvid.config import Config, fields_in_group
from compactvid.errors import ConfigError
from compactvid.models.registry import canonical_name

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_PREFIX = "events.out.tfevents."


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


def remove_previous_run(train_dir: str) -> None:
    """Delete what `compactvid train` writes in `train_dir` (known names only; other files stay)."""
    removed = []
    for _, path in ckpt.list_checkpoints(train_dir):
        os.remove(path)
        removed.append(path)
    ckpt.remove_temporary_files(train_dir)
    checkpoints = ckpt.checkpoint_dir(train_dir)
    if os.path.isdir(checkpoints) and not os.listdir(checkpoints):
        os.rmdir(checkpoints)
    for name in sorted(os.listdir(train_dir)):
        if name in (CONFIG_FILE, PARAMS_FILE, METRICS_FILE) or name.startswith(TENSORBOARD_PREFIX):
            os.remove(os.path.join(train_dir, name))
            removed.append(name)
    if removed:
        log.info("--start_new_model: removed the previous run's %d files from %s", len(removed), train_dir)


def prepare_train_dir(config: Config) -> bool:
    """Make --train_dir ready: start over or check that the saved run fits. Returns whether to resume."""
    train_dir = config.train_dir
    os.makedirs(train_dir, exist_ok=True)
    if config.start_new_model:
        remove_previous_run(train_dir)
    ckpt.remove_temporary_files(train_dir)
    resume = bool(ckpt.list_checkpoints(train_dir))
    config_path = os.path.join(train_dir, CONFIG_FILE)
    if resume and os.path.exists(config_path):
        check_resume_flags(Config.from_json_file(config_path), config, train_dir)
    ckpt.write_text_atomically(config_path, config.to_json() + "\n")
    return resume


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
