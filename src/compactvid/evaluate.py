"""Evaluation of a model over a dataset: GAP@k, mAP, Hit@1, PERR and the label loss.

`evaluate` runs a model over a loader (each process its share under DDP, the metrics reduced exactly
across processes); `load_trained_model` rebuilds a model from a --train_dir's config.json and one of
its checkpoints (`initialize_from_run` loads them into a new run's model, --init_from);
`evaluate_checkpoint` is the two together, what `compactvid eval` runs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import torch
from torch import nn

from compactvid import checkpoint as ckpt
from compactvid.config import Config
from compactvid.data.loader import make_loader, prepare_frames
from compactvid.device import autocast
from compactvid.errors import CheckpointError, ConfigError, DataError
from compactvid.losses import create_loss
from compactvid.metrics import EvaluationMetrics
from compactvid.models.registry import create_model
from compactvid.run_dir import CONFIG_FILE


def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, loss_fn: nn.Module, device: torch.device,
             num_classes: int, top_k: int = 20, *, mixed_precision: bool = False,
             distributed: bool = False) -> dict[str, float]:
    """Metrics of `model` (in eval mode) over every batch of `loader`.

    Returns ``gap``, ``map``, ``hit_at_1``, ``perr`` and ``loss`` (label loss per video). With
    `distributed`, every process passes its own share and gets the metrics of all shares together.
    The model is left in eval mode.
    """
    model.eval()
    metrics = EvaluationMetrics(num_classes, top_k)
    with torch.inference_mode():
        for batch in loader:
            labels = batch["labels"].to(device, non_blocking=True)
            with autocast(device, mixed_precision):
                frames = prepare_frames(batch["frames"].to(device, non_blocking=True), batch["num_frames"])
                predictions = model(frames)
            predictions = predictions.float()
            metrics.accumulate(predictions, labels, loss_fn(predictions, labels))
    if distributed:
        metrics = metrics.all_reduce()
    if metrics.num_videos and not metrics.num_labels:
        files = loader.dataset.files
        raise DataError(f"these files have no labels ({metrics.num_videos} videos in {len(files)} files: "
                        f"{files[0]}{', ...' if len(files) > 1 else ''}): metrics need labelled files such as "
                        f"validate*.tfrecord; `compactvid inference` predicts unlabelled ones")
    return metrics.get()


def load_trained_model(train_dir: str, checkpoint_path: Optional[str] = None,
                       device: torch.device = torch.device("cpu"), state: Optional[dict] = None
                       ) -> tuple[Config, nn.Module, dict]:
    """The model of a --train_dir: built from its config.json, weights from `checkpoint_path` (default:
    the newest checkpoint that loads), or from `state` when the caller has loaded that file already.
    Returns (config, model in eval mode on `device`, the checkpoint's state)."""
    config = Config.from_json_file(os.path.join(train_dir, CONFIG_FILE))
    if state is None and checkpoint_path is None:
        found = ckpt.load_latest_checkpoint(train_dir)
        if found is None:
            raise CheckpointError(f"{ckpt.checkpoint_dir(train_dir)}: no checkpoint; has `compactvid train "
                                  f"--train_dir={train_dir}` written one yet?")
        checkpoint_path, state = found
    elif state is None:
        state = ckpt.load_checkpoint(checkpoint_path)
    model = create_model(config.model_args())
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{checkpoint_path}: does not fit the model of {train_dir}/config.json "
                              f"({error})") from error
    return config, model.to(device).eval(), state


def initialize_from_run(model: nn.Module, config: Config) -> int:
    """Load into `model` (built from `config`) the weights of the newest checkpoint of
    ``config.init_from``, a --train_dir trained with the same model flags; returns that checkpoint's
    step. ConfigError naming each model flag that differs; CheckpointError when there is no checkpoint."""
    saved, trained, state = load_trained_model(config.init_from)
    differences = [f"--{name}={value!r} there, {getattr(config.model_args(), name)!r} here"
                   for name, value in dataclasses.asdict(saved.model_args()).items()
                   if getattr(config.model_args(), name) != value]
    if differences:
        raise ConfigError(f"--init_from={config.init_from}: that run's model differs from this one's "
                          f"({'; '.join(differences)}); give this run the same model flags")
    model.load_state_dict(trained.state_dict())
    return state["position"]["step"]


def evaluate_checkpoint(train_dir: str, data_pattern: str, checkpoint_path: Optional[str] = None, *,
                        batch_size: Optional[int] = None, top_k: int = 20,
                        device: torch.device = torch.device("cpu"), num_readers: Optional[int] = None,
                        state: Optional[dict] = None) -> dict[str, float]:
    """Metrics of a checkpoint of `train_dir` over the files of `data_pattern`, plus its ``step``
    (`state`: the checkpoint, when the caller has loaded it already)."""
    config, model, state = load_trained_model(train_dir, checkpoint_path, device, state)
    if num_readers is not None:
        config = dataclasses.replace(config, num_readers=num_readers)
    loader = make_loader(data_pattern, config, training=False, batch_size=batch_size, dequantize=False)
    results = evaluate(model, loader, create_loss(config.label_loss), device, config.num_classes, top_k,
                       mixed_precision=config.mixed_precision)
    return {**results, "step": state["position"]["step"]}
