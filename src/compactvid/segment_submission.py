"""The submission of the 2019 YouTube-8M segment challenge: per class, its segments ranked by score.

The CSV has the header ``Class,Segments`` and one line per class of the segment vocabulary:
``<class>,<video id>:<start> <video id>:<start> ...``, at most `--segment_max_pred` (100,000) segments,
best first. A segment is named by its video's id and its first frame (= second), as in google/youtube-8m's
``inference.py --segment_labels``. `SegmentRanking` keeps each class's best segments while scores arrive
batch by batch; `write_submission` and `read_submission` are the file.
"""

from __future__ import annotations

from typing import Mapping, Sequence, TextIO

import fsspec
import numpy as np

from compactvid.errors import DataError

HEADER = "Class,Segments"
MAX_PREDICTIONS = 100_000


def _ranking_keys(scores: np.ndarray, first_index: int) -> np.ndarray:
    """int64 keys ``[S, V]`` that order (score, segment) pairs: by float32 score, then the earlier segment
    (index ``first_index + row``) first among equal scores. Segment indices must stay below 2**32."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # int32 ordered like the floats
    indices = np.arange(first_index, first_index + scores.shape[0], dtype=np.int64)
    return (ordered.astype(np.int64) << 32) | (0xFFFFFFFF - indices)[:, None]


class SegmentRanking:
    """The `max_pred` best segments of each class of `classes` (int64 ``[V]``), from scored segments.

    Memory: the kept keys are ``[max_pred, V]`` int64 (800 MB for the challenge's 100,000 x 1000), plus
    the batches since the last pruning (at most as many again), plus one name per segment seen.
    """

    def __init__(self, classes: np.ndarray, max_pred: int = MAX_PREDICTIONS):
        if max_pred < 1:
            raise ValueError(f"max_pred must be positive, got {max_pred}")
        self.classes = np.asarray(classes, dtype=np.int64)
        self.max_pred = max_pred
        self.names: list[str] = []
        self._kept = np.empty((0, len(self.classes)), dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def add(self, video_ids: Sequence[str], starts: Sequence[int], scores: np.ndarray) -> None:
        """Add S segments: their videos' ids, start times and class scores (float ``[S, num_classes]``)."""
        first = len(self.names)
        self.names += [f"{video_id}:{int(start)}" for video_id, start in zip(video_ids, starts)]
        self._pending.append(_ranking_keys(np.asarray(scores)[:, self.classes], first))
        self._pending_rows += len(video_ids)
        if self._pending_rows >= max(self.max_pred, 4096):
            self._prune()

    def _prune(self) -> None:
        keys = np.concatenate([self._kept, *self._pending])
        if len(keys) > self.max_pred:
            keys = np.partition(keys, len(keys) - self.max_pred, axis=0)[-self.max_pred:]
        self._kept, self._pending, self._pending_rows = keys, [], 0

    def ranked(self) -> dict[int, list[str]]:
        """Per class, its best segments' names, best first."""
        self._prune()
        keys = np.sort(self._kept, axis=0)[::-1]  # best first, per class
        indices = 0xFFFFFFFF - (keys & 0xFFFFFFFF)
        return {int(label): [self.names[i] for i in indices[:, column].tolist()]
                for column, label in enumerate(self.classes)}


def write_submission(out: TextIO, ranked: Mapping[int, Sequence[str]]) -> None:
    """The header, then one line per class of `ranked` (ascending), its segments in the given order."""
    out.write(HEADER + "\n")
    for label in sorted(ranked):
        out.write(f"{label}," + " ".join(ranked[label]) + "\n")


def read_submission(path: str) -> dict[int, list[str]]:
    """The segments of each class of a submission file, best first. DataError naming the file and line
    for a line that is not ``<class>,<video id>:<start> ...``, a class listed twice or a segment listed
    twice for one class."""
    try:
        with fsspec.open(path, "r") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, IsADirectoryError) as error:
        raise DataError(f"{path}: cannot read the submission ({error}); give --submission_file the CSV that "
                        f"`compactvid inference --segment_labels` wrote") from None
    ranked: dict[int, list[str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (number == 1 and line.strip() == HEADER):
            continue
        label, comma, entries = line.partition(",")
        if not comma or not label.strip().isdigit():
            raise DataError(f"{path}: line {number} does not start with a class index and a comma "
                            f"({line[:40]!r}); a submission line is <class>,<video id>:<start> ...")
        segments = entries.split()
        bad = next((s for s in segments if not s.rpartition(":")[2].isdigit() or not s.rpartition(":")[0]), None)
        if bad is not None:
            raise DataError(f"{path}: line {number}: {bad!r} is not a segment <video id>:<start time>")
        if int(label) in ranked:
            raise DataError(f"{path}: line {number}: class {int(label)} is listed twice; one line per class")
        seen: set[str] = set()
        for segment in segments:
            if segment in seen:
                raise DataError(f"{path}: line {number}: segment {segment} is listed twice for class {int(label)}")
            seen.add(segment)
        ranked[int(label)] = segments
    if not ranked:
        raise DataError(f"{path}: no class line; a submission holds the header {HEADER} and one line per class")
    return ranked
