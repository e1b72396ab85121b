"""Scoring segment-level predictions (2019 challenge): a submission file, or a trained model's ranking,
against the rated segments of TFRecord files, with the challenge's mAP@N (`metrics.segment_map_at_n`).

What `compactvid eval --segment_labels` runs: `score_submission` scores an existing CSV, as the official
``segment_eval_inference.py`` does; `evaluate_segments_checkpoint` ranks every segment with a
checkpoint of a --train_dir first (as `compactvid inference --segment_labels` would write it).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch

from compactvid.config import Config
from compactvid.data.loader import make_loader
from compactvid.data.paths import expand_pattern
from compactvid.data.yt8m import ReadReport, RecordDecoder, iter_decoded, iter_file_records
from compactvid.errors import DataError
from compactvid.evaluate import load_trained_model
from compactvid.inference import rank_segments
from compactvid.metrics import RatedSegments, SegmentScore, segment_map_at_n
from compactvid.segment_submission import MAX_PREDICTIONS, read_submission


def read_rated_segments(pattern: str, num_classes: Optional[int] = None, skip_corrupt: bool = False) -> RatedSegments:
    """Every rated (segment, class) pair of the frame-level files of `pattern`. DataError when a record's
    ratings are malformed (`compactvid.data.segments`), or when no record has any."""
    decoder = RecordDecoder(num_classes=num_classes, segments=True)
    rated = RatedSegments()
    report = ReadReport()
    records = iter_file_records(expand_pattern(pattern), skip_corrupt, report)
    for video_id, labels in iter_decoded(records, decoder.decode_segment_labels, skip_corrupt, report):
        if labels is not None:
            rated.add(video_id, labels.start_times.tolist(), labels.classes.tolist(), labels.scores.tolist())
    if not len(rated):
        raise DataError(f"{pattern}: no rated segment in {report.records} records; segment scoring needs the "
                        f"2019 release's validate files (segment_start_times, segment_labels, segment_scores) or "
                        f"`compactvid make-data --segments`")
    return rated


def score_submission(submission_file: str, data_pattern: str, top_n: int = 0,
                     num_classes: Optional[int] = None) -> SegmentScore:
    """The mAP@N of a ``Class,Segments`` submission against the rated segments of `data_pattern`."""
    rated = read_rated_segments(data_pattern, num_classes)
    return segment_map_at_n(read_submission(submission_file), rated, top_n)


def evaluate_segments(model: torch.nn.Module, config: Config, data_pattern: str, *, top_n: int = 0,
                      max_pred: int = MAX_PREDICTIONS, batch_size: Optional[int] = None,
                      device: torch.device = torch.device("cpu")) -> SegmentScore:
    """The mAP@N of `model`'s ranking of every segment of `data_pattern` (read with `config`'s data
    flags), per class with a rated positive (the only classes that count), capped at `max_pred` segments
    per class as a submission is. The model is left in eval mode."""
    rated = read_rated_segments(data_pattern, config.num_classes)
    classes = np.array(sorted(label for label, count in rated.positives.items() if count > 0), dtype=np.int64)
    loader = make_loader(data_pattern, config, training=False, batch_size=batch_size, dequantize=False,
                         segments="all")
    ranking = rank_segments(model, loader, classes, max_pred, device, config.mixed_precision)
    return segment_map_at_n(ranking.ranked(), rated, top_n)


def evaluate_segments_checkpoint(train_dir: str, data_pattern: str, checkpoint_path: Optional[str] = None, *,
                                 batch_size: Optional[int] = None, top_n: int = 0,
                                 max_pred: int = MAX_PREDICTIONS, device: torch.device = torch.device("cpu"),
                                 num_readers: Optional[int] = None, state: Optional[dict] = None) -> dict:
    """`evaluate_segments` of a checkpoint of `train_dir` (default: the newest; `state`: that checkpoint, when
    the caller has loaded it already). Returns ``map_at_n``, ``num_classes``, ``rated_segments`` and the
    checkpoint's ``step``."""
    config, model, state = load_trained_model(train_dir, checkpoint_path, device, state)
    if num_readers is not None:
        config = dataclasses.replace(config, num_readers=num_readers)
    score = evaluate_segments(model, config, data_pattern, top_n=top_n, max_pred=max_pred, batch_size=batch_size,
                              device=device)
    return {**dataclasses.asdict(score), "step": state["position"]["step"]}
