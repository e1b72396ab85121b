"""Validate YouTube-8M TFRecord files and summarize them.

Reads every record of the files matching PATTERN (comma-separated globs are a union; any fsspec path),
checks its CRCs and decodes it as training would (feature lists present, frame sizes as --feature_sizes,
equal frame counts, labels in range when --num_classes is given, the segment ratings of the 2019 release
when present, the whole protobuf message), and prints the number of records, frames per video, label
statistics, the rated segments (positive and negative (segment, class) pairs, classes) and the features
found. The first bad record
stops it with its file, record index and byte offset, unless --skip_corrupt_records.

Example:  compactvid inspect 'data/train*.tfrecord' --json
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tqdm import tqdm

from compactvid.commands.json_output import STDOUT, add_json_flag, write_json
from compactvid.config import Config
from compactvid.data import proto
from compactvid.data.paths import expand_pattern
from compactvid.data.segments import SegmentLabels
from compactvid.data.tfrecord import Record, iter_records
from compactvid.data.wire import has_feature_lists
from compactvid.data.yt8m import ReadReport, RecordDecoder, iter_decoded, iter_file_records
from compactvid.errors import DataError
from compactvid.flags import add_bool_flag

_TRAIN_FLAGS = {f.name: f for f in dataclasses.fields(Config)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", metavar="PATTERN", help="TFRecord files: glob(s), comma-separated for a union")
    add_json_flag(parser, "the summary", path=False)
    add_bool_flag(parser, "skip_corrupt_records", False,
                  "skip and count bad records instead of stopping at the first one")
    add_bool_flag(parser, "frame_features", None, "frame-level (SequenceExample) or video-level (Example) data; "
                  "default: detected from the first record")
    for name in ("feature_names", "feature_sizes"):  # the help and defaults of `compactvid train`
        parser.add_argument(f"--{name}", default=None, help=_TRAIN_FLAGS[name].metadata["help"])
    parser.add_argument("--num_classes", type=int, default=None,
                        help="check that labels are in [0, NUM_CLASSES) (default: not checked)")
    parser.add_argument("--max_frames", type=int, default=_TRAIN_FLAGS["max_frames"].default,
                        help=f"{_TRAIN_FLAGS['max_frames'].metadata['help']} (default: "
                             f"{_TRAIN_FLAGS['max_frames'].default})")


def _detect_frame_level(files: list[str]) -> bool:
    """True when the first readable record of the files is a SequenceExample (has feature lists)."""
    for path in files:
        for record in iter_records(path, on_error=lambda error: None):
            return has_feature_lists(record.payload)
    return True


def _features_found(record: Record, frame_level: bool) -> tuple[dict[str, int], list[str]]:
    """Feature names -> size (bytes per frame, or values) and the context keys of one record."""
    if frame_level:
        example = proto.SequenceExample.FromString(record.payload)
        sizes = {}
        for name, feature_list in example.feature_lists.feature_list.items():
            first = feature_list.feature[0] if len(feature_list.feature) else None
            sizes[name] = len(first.bytes_list.value[0]) if first is not None and first.bytes_list.value else 0
        return sizes, sorted(example.context.feature)
    example = proto.Example.FromString(record.payload)
    sizes, context = {}, []
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "float_list":
            sizes[name] = len(feature.float_list.value)
        else:
            context.append(name)
    return sizes, sorted(context)


class _SegmentCounts:
    """What the rated segments of the videos add up to (2019 release)."""

    def __init__(self) -> None:
        self.videos = self.segments = self.positives = self.negatives = 0
        self.classes: collections.Counter = collections.Counter()

    def add(self, labels: SegmentLabels) -> None:
        self.videos += 1
        self.segments += len(np.unique(labels.start_times))
        positives = int(np.count_nonzero(labels.scores > 0))
        self.positives += positives
        self.negatives += len(labels.scores) - positives
        self.classes.update(labels.classes.tolist())

    def summary(self) -> dict[str, Any] | None:
        """None when no video had segment ratings."""
        if not self.videos:
            return None
        return {"videos": self.videos, "rated_segments": self.segments, "positive_pairs": self.positives,
                "negative_pairs": self.negatives, "classes": len(self.classes),
                "class_range": [min(self.classes), max(self.classes)] if self.classes else None}


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0}
    array = np.asarray(values)
    return {"min": int(array.min()), "mean": round(float(array.mean()), 3), "max": int(array.max())}


def summarize_files(pattern: str, *, frame_level: bool | None = None, feature_names: str | None = None,
                    feature_sizes: str | None = None, num_classes: int | None = None,
                    max_frames: int = _TRAIN_FLAGS["max_frames"].default, skip_corrupt: bool = False,
                    progress: bool = False) -> dict[str, Any]:
    """Validate every record of the files of `pattern`; return the summary (see the module docstring).
    Features default as in `compactvid train` (`Config`), for the level found in the files."""
    files = expand_pattern(pattern)
    if frame_level is None:
        frame_level = _detect_frame_level(files)
    features = Config(frame_features=frame_level, feature_names=feature_names, feature_sizes=feature_sizes,
                      max_frames=max_frames)
    features.validate()
    decoder = RecordDecoder(features.feature_name_list, features.feature_size_list, max_frames, frame_level,
                            num_classes, segments=frame_level)
    message = proto.SequenceExample if frame_level else proto.Example
    found: dict[str, int] = {}
    context_keys: set[str] = set()

    def check(record: Record):
        try:  # the whole message, including the parts training does not read
            message.FromString(record.payload)
        except DecodeError as error:
            raise DataError(f"{record.where()}: not a tf.train.{message.__name__} ({error})") from None
        decoded = decoder.decode_frames(record) if frame_level else decoder.decode_video(record)
        if record.index == 0:
            sizes_found, keys = _features_found(record, frame_level)
            found.update(sizes_found)
            context_keys.update(keys)
        return decoded

    report = ReadReport()
    records = iter_file_records(files, skip_corrupt, report)
    frames, labels_per_video, label_counts = [], [], collections.Counter()
    segments = _SegmentCounts()
    for video in tqdm(iter_decoded(records, check, skip_corrupt, report), desc="records", unit="",
                      disable=not progress, leave=False):
        frames.append(video.total_frames if frame_level else 1)
        labels_per_video.append(len(video.labels))
        label_counts.update(video.labels.tolist())
        if frame_level and video.segments is not None:
            segments.add(video.segments)
    summary: dict[str, Any] = {
        "pattern": pattern, "files": len(files), "num_records": report.records,
        "frame_level": frame_level,
        "features": found, "context_keys": sorted(context_keys),
        "features_checked": dict(zip(decoder.feature_names, decoder.feature_sizes)),
    }
    if frame_level:
        summary["frames_per_video"] = _stats(frames)
        summary["videos_over_max_frames"] = int(sum(f > max_frames for f in frames))
    summary.update({
        "labels_per_video": _stats(labels_per_video),
        "videos_without_labels": int(sum(n == 0 for n in labels_per_video)),
        "distinct_labels": len(label_counts),
        "label_range": [min(label_counts), max(label_counts)] if label_counts else None,
        "most_frequent_labels": [[int(k), v] for k, v in label_counts.most_common(10)],
        "segments": segments.summary(),
        "corrupt_records_skipped": report.corrupt,
        "empty_files": report.empty_files,
    })
    return summary


def _print_table(summary: dict[str, Any]) -> None:
    level = "frame level (SequenceExample)" if summary["frame_level"] else "video level (Example)"
    features = ", ".join(f"{k} ({v})" for k, v in summary["features"].items()) or "none"
    rows = [("files", summary["files"]), ("records", summary["num_records"]), ("format", level),
            ("features found", features), ("context keys", ", ".join(summary["context_keys"]) or "none")]
    if summary["frame_level"]:
        f = summary["frames_per_video"]
        rows.append(("frames per video", f"min {f['min']}, mean {f['mean']}, max {f['max']} "
                                         f"({summary['videos_over_max_frames']} over max_frames)"))
    lab = summary["labels_per_video"]
    rows += [("labels per video", f"min {lab['min']}, mean {lab['mean']}, max {lab['max']} "
                                  f"({summary['videos_without_labels']} videos without labels)"),
             ("distinct labels", f"{summary['distinct_labels']}"
                                 + (f" (range {summary['label_range'][0]}..{summary['label_range'][1]})"
                                    if summary["label_range"] else "")),
             ("most frequent", ", ".join(f"{k}: {v}" for k, v in summary["most_frequent_labels"]) or "none")]
    if summary["segments"]:
        seg = summary["segments"]
        rows.append(("rated segments", f"{seg['rated_segments']} in {seg['videos']} videos: "
                                       f"{seg['positive_pairs']} positive and {seg['negative_pairs']} negative "
                                       f"(segment, class) pairs, {seg['classes']} classes"))
    if summary["corrupt_records_skipped"]:
        rows.append(("corrupt records skipped", summary["corrupt_records_skipped"]))
    if summary["empty_files"]:
        rows.append(("files without records", len(summary["empty_files"])))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def run(args: argparse.Namespace) -> int:
    summary = summarize_files(args.pattern, frame_level=args.frame_features, feature_names=args.feature_names,
                              feature_sizes=args.feature_sizes, num_classes=args.num_classes,
                              max_frames=args.max_frames, skip_corrupt=args.skip_corrupt_records,
                              progress=sys.stderr.isatty())
    if args.json:
        write_json(summary, args.json)
    if args.json != STDOUT:
        _print_table(summary)
    return 0
