"""Segment-level labels of the 2019 YouTube-8M release: the human ratings of 5-second segments.

A frame-level record of the 2019 validate/test files carries, in its context, three lists of equal
length, one entry per rated (segment, class) pair: ``segment_start_times`` (int64, the segment's first
frame = second), ``segment_labels`` (int64, the class) and ``segment_scores`` (float, 1: the class is
present in the segment, 0: it is not). A segment is `SEGMENT_SIZE` frames; the same segment may be rated
for several classes. Only a few segments of a video are rated, and only for a few classes (those of the
segment vocabulary, `segment_label_ids.csv`), so a segment's unrated classes are unknown, not negative.

`read_segment_labels` checks the lists of one record and raises `DataError` with one line naming the
file, the record and the field. `read_segment_vocabulary` reads the vocabulary file.
"""

from __future__ import annotations

from typing import NamedTuple

import fsspec
import numpy as np

from compactvid.data.tfrecord import Record
from compactvid.errors import DataError

SEGMENT_SIZE = 5
SEGMENT_FIELDS = ("segment_start_times", "segment_labels", "segment_scores")
# the kind of Feature each field must hold
_KINDS = {"segment_start_times": "int64_list", "segment_labels": "int64_list", "segment_scores": "float_list"}
_KIND_NAMES = {"int64_list": "an int64 list", "float_list": "a float list", "bytes_list": "a bytes list"}


class SegmentLabels(NamedTuple):
    """The rated (segment, class) pairs of one video, in the record's order; R pairs.

    `start_times`: int64 ``[R]`` first frame of the segment; `classes`: int64 ``[R]``; `scores`:
    float32 ``[R]``, 1.0 (present) or 0.0 (absent).
    """

    start_times: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def by_segment(self) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """The rated segments in order of start time: (start times int64 ``[S]``, per segment the classes
        rated positive, per segment every class rated)."""
        starts, owner = np.unique(self.start_times, return_inverse=True)
        rated = [self.classes[owner == s] for s in range(len(starts))]
        positives = [self.classes[(owner == s) & (self.scores > 0)] for s in range(len(starts))]
        return starts, positives, rated


def read_segment_labels(record: Record, context, total_frames: int, num_classes: int | None,
                        video_id: str) -> SegmentLabels | None:
    """The segment ratings in `context` (a decoded `tf.train.Features`) of a video of `total_frames`
    frames; None when the record has none of the three fields. DataError when one field is missing, of
    the wrong kind, or the lists differ in length, a start time is negative or past the video's end, a
    class is outside ``[0, num_classes)`` (when given), a score is not 0 or 1, or a pair is rated twice."""
    features = context.feature
    fields = {name: features[name] for name in SEGMENT_FIELDS if name in features}
    if not fields:
        return None
    where = f"{record.where()}: video {video_id!r}"
    if len(fields) < len(SEGMENT_FIELDS):
        missing = ", ".join(name for name in SEGMENT_FIELDS if name not in fields)
        raise DataError(f"{where}: has {', '.join(fields)} but not {missing}; a rated segment needs all of "
                        f"{', '.join(SEGMENT_FIELDS)}")
    values = {}
    for name, feature in fields.items():
        kind = feature.WhichOneof("kind")
        if kind not in (None, _KINDS[name]):
            raise DataError(f"{where}: {name} is {_KIND_NAMES[kind]}, expected {_KIND_NAMES[_KINDS[name]]}")
        values[name] = list(getattr(feature, _KINDS[name]).value)
    lengths = [len(values[name]) for name in SEGMENT_FIELDS]
    if len(set(lengths)) > 1:
        raise DataError(f"{where}: {', '.join(SEGMENT_FIELDS)} have {', '.join(map(str, lengths))} values; they "
                        f"must have one each per rated (segment, class) pair")
    # a few values per video: Python's loops cost less here than numpy's calls (docs/benchmarks.md)
    starts, classes, scores = (values[name] for name in SEGMENT_FIELDS)
    if starts and (min(starts) < 0 or max(starts) >= total_frames):
        bad = next(t for t in starts if t < 0 or t >= total_frames)
        raise DataError(f"{where}: segment_start_times value {bad} is past the video's end ({total_frames} "
                        f"frames): a segment starts at a frame of the video")
    if classes and (min(classes) < 0 or (num_classes is not None and max(classes) >= num_classes)):
        bad = next(c for c in classes if c < 0 or (num_classes is not None and c >= num_classes))
        raise DataError(f"{where}: segment_labels value {bad} is outside the vocabulary [0, {num_classes}); "
                        f"check --num_classes (3862 for the 2018 and 2019 releases)")
    if any(score != 0.0 and score != 1.0 for score in scores):
        bad = next(score for score in scores if score != 0.0 and score != 1.0)
        raise DataError(f"{where}: segment_scores value {bad} is not 0 or 1 (absent or present)")
    seen: set[tuple[int, int]] = set()
    for pair in zip(starts, classes):
        if pair in seen:
            raise DataError(f"{where}: segment starting at {pair[0]} is rated twice for class {pair[1]} "
                            f"(segment_start_times / segment_labels); each pair must be rated once")
        seen.add(pair)
    return SegmentLabels(np.array(starts, dtype=np.int64), np.array(classes, dtype=np.int64),
                         np.array(scores, dtype=np.float32))


def read_segment_vocabulary(path: str, num_classes: int | None = None) -> np.ndarray:
    """The classes of a segment vocabulary file (``segment_label_ids.csv``: a header ``Index``, then one
    class index per line), sorted int64 ``[V]``. DataError naming the file and line when it is not one."""
    try:
        with fsspec.open(path, "r") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, IsADirectoryError) as error:
        raise DataError(f"{path}: cannot read the segment vocabulary ({error}); give --segment_label_ids_file "
                        f"the segment_label_ids.csv of the 2019 release or of `compactvid make-data --segments`"
                        ) from None
    classes = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or (number == 1 and not text.lstrip("-").isdigit()):  # the header
            continue
        if not text.isdigit() or (num_classes is not None and int(text) >= num_classes):
            within = f" in [0, {num_classes})" if num_classes is not None else ""
            raise DataError(f"{path}: line {number} ({text!r}) is not a class index{within}; the file holds a "
                            f"header, then one class index per line")
        classes.append(int(text))
    if not classes:
        raise DataError(f"{path}: no class index; the segment vocabulary holds one class index per line")
    if len(set(classes)) != len(classes):
        raise DataError(f"{path}: a class is listed twice; list each class of the segment vocabulary once")
    return np.array(sorted(classes), dtype=np.int64)
