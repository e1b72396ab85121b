"""Predictions of a trained model in the Kaggle format of the YouTube-8M challenge.

The CSV has the header ``VideoId,LabelConfidencePairs`` and one row per video:
``<id>,<label> <score> <label> <score> ...`` with the top-k classes by descending score, labels as
integers and scores with ``%g``, as the original's inference.py. Rows are written batch by batch, so
memory does not grow with the number of videos. Test files (no labels) work. The rows come from a model
in memory or from an exported artifact (`compactvid.export`), through the same writer.

`rank_segments` scores every 5-frame segment instead, for the segment challenge's submission
(`compactvid.segment_submission`).
"""

from __future__ import annotations

from typing import Callable, Iterable, TextIO

import numpy as np
import torch
from torch import nn

from compactvid.data.loader import prepare_frames
from compactvid.device import autocast
from compactvid.segment_submission import MAX_PREDICTIONS, SegmentRanking

HEADER = "VideoId,LabelConfidencePairs\n"


def format_rows(video_ids: Iterable[str], predictions: torch.Tensor, top_k: int) -> list[str]:
    """CSV rows for a batch: `predictions` [batch, classes] -> one row per video, top-k descending."""
    scores, labels = torch.topk(predictions.float().cpu(), min(top_k, predictions.shape[1]), dim=1)
    return [f"{video_id}," + " ".join("%i %g" % pair for pair in zip(row_labels, row_scores)) + "\n"
            for video_id, row_labels, row_scores in zip(video_ids, labels.tolist(), scores.tolist())]


def write_rows(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | np.ndarray], loader: Iterable[dict],
               out: TextIO, top_k: int = 20) -> int:
    """Write the header and one row per video of `loader` to `out`; `predict` maps a batch's ``frames`` and
    ``num_frames`` (as the loader gives them) to probabilities ``[batch, classes]``. Returns the number of
    videos."""
    out.write(HEADER)
    videos = 0
    for batch in loader:
        predictions = torch.as_tensor(predict(batch["frames"], batch["num_frames"]))
        out.writelines(format_rows(batch["ids"], predictions, top_k))
        videos += len(batch["ids"])
    return videos


def write_predictions(model: nn.Module, loader: Iterable[dict], out: TextIO, top_k: int = 20,
                      device: torch.device = torch.device("cpu"), mixed_precision: bool = False) -> int:
    """`write_rows` with a model in eval mode on `device`. Returns the number of videos."""
    model.eval()

    def predict(frames: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
        with autocast(device, mixed_precision):
            return model(prepare_frames(frames.to(device, non_blocking=True), num_frames))

    with torch.inference_mode():
        return write_rows(predict, loader, out, top_k)


def rank_segments(model: nn.Module, loader: Iterable[dict], classes: np.ndarray,
                  max_pred: int = MAX_PREDICTIONS, device: torch.device = torch.device("cpu"),
                  mixed_precision: bool = False) -> SegmentRanking:
    """Score every segment of `loader` (a ``segments="all"`` loader) with `model`; the best `max_pred`
    segments of each class of `classes` (int64 ``[V]``), as a `SegmentRanking`."""
    model.eval()
    ranking = SegmentRanking(classes, max_pred)
    with torch.inference_mode():
        for batch in loader:
            with autocast(device, mixed_precision):
                frames = prepare_frames(batch["frames"].to(device, non_blocking=True), batch["num_frames"])
                predictions = model(frames)
            ranking.add(batch["ids"], batch["segment_starts"].tolist(), predictions.float().cpu().numpy())
    return ranking
