"""YouTube-8M records: decoding, validation and dequantization, without TensorFlow.

Frame level: one `tf.train.SequenceExample` per video. Context: ``id`` (2018 release) or ``video_id``
(2017), ``labels`` (int64 list, absent in test files). Feature lists (e.g. ``rgb``, ``audio``): one
quantized byte vector per frame. Video level: one `tf.train.Example` per video with ``id``/``video_id``,
``labels`` and one float list per feature (e.g. ``mean_rgb``, ``mean_audio``). Other features and context
keys are ignored, except the segment ratings of the 2019 release (``segment_start_times``,
``segment_labels``, ``segment_scores``: `compactvid.data.segments`), read when asked for.

Every problem with a record raises `DataError` with one line ``FILE: record I (byte O): PROBLEM``. With
``skip_corrupt=True`` bad records are skipped, logged and counted in a `ReadReport` instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np
from google.protobuf.message import DecodeError

from compactvid.data import proto
from compactvid.data.paths import expand_pattern
from compactvid.data.segments import SegmentLabels, read_segment_labels
from compactvid.data.tfrecord import Record, iter_records
from compactvid.data.wire import frame_layout, scan_sequence_example
from compactvid.errors import DataError

log = logging.getLogger(__name__)

# The official quantization range, and its dequantization: q in 0..255 maps to
# q * (max - min)/255 + (max - min)/512 + min = q * 4/255 + 4/512 - 2. Computed in float32 with one rounding
# per operation, as TensorFlow's reader does, so the values agree bit for bit.
QUANTIZED_MIN, QUANTIZED_MAX = -2.0, 2.0
DEQUANTIZE_SCALE = np.float32((QUANTIZED_MAX - QUANTIZED_MIN) / 255.0)
DEQUANTIZE_BIAS = np.float32((QUANTIZED_MAX - QUANTIZED_MIN) / 512.0 + QUANTIZED_MIN)


def dequantize(quantized: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 values of uint8 quantized features (any shape), exactly as the official reader computes
    them; written into `out` (float32, same shape) when given."""
    if out is None:
        out = np.empty(quantized.shape, dtype=np.float32)
    np.copyto(out, quantized, casting="unsafe")
    out *= DEQUANTIZE_SCALE
    out += DEQUANTIZE_BIAS
    return out


@dataclass(frozen=True)
class Video:
    """One decoded video.

    `id`: the video id. `labels`: int64 class indices (empty when the file has none).
    `features`: float32, dequantized; ``[num_frames, sum(feature_sizes)]`` for frame-level data (at most
    max_frames frames), ``[sum(feature_sizes)]`` for video-level data; features concatenated in the order
    of feature_names. `segments`: the rated segments (2019 release), None when the record has none or
    they were not read.
    """

    id: str
    labels: np.ndarray
    features: np.ndarray
    segments: SegmentLabels | None = None

    @property
    def num_frames(self) -> int:
        """Frames in `features` (1 for video-level data)."""
        return 1 if self.features.ndim == 1 else self.features.shape[0]


class QuantizedVideo(NamedTuple):
    """A frame-level video before dequantization: what the training pipeline keeps per record.

    The frames stay where they are, in `buffer` (uint8 ``[length]``: the record's own bytes, or the
    frames as the protobuf library decoded them): frame r of feature f is
    ``buffer[offsets[f] + r * strides[f]:][:sizes[f]]`` (`offsets`, `strides`, `sizes`: int64 ``[F]``)
    for r < `num_frames`, the frames kept (at most max_frames); `total_frames`: frames in the record
    (all in `buffer`). `segments`: the rated segments, when read (else None).
    `sampling.gather_frames` copies sampled frames from there into a batch.
    """

    id: str
    labels: np.ndarray
    buffer: np.ndarray
    offsets: np.ndarray
    strides: np.ndarray
    sizes: np.ndarray
    num_frames: int
    total_frames: int
    segments: SegmentLabels | None = None

    @property
    def frames(self) -> tuple[np.ndarray, ...]:
        """Read-only uint8 views ``[num_frames, sizes[f]]`` of each feature's frames in `buffer`."""
        return tuple(np.lib.stride_tricks.as_strided(self.buffer[offset:], (self.num_frames, size), (stride, 1),
                                                     writeable=False)
                     for offset, stride, size in zip(self.offsets.tolist(), self.strides.tolist(), self.sizes.tolist()))

    def dequantized(self) -> np.ndarray:
        """float32 ``[num_frames, sum(sizes)]``: the frames dequantized, features side by side."""
        out = np.empty((self.num_frames, int(self.sizes.sum())), dtype=np.float32)
        column = 0
        for frames in self.frames:
            dequantize(frames, out[:, column:column + frames.shape[1]])
            column += frames.shape[1]
        return out


@dataclass
class ReadReport:
    """What a pass over files met: records read, corrupt records skipped, files without records."""

    files: int = 0
    records: int = 0
    corrupt: int = 0
    corrupt_examples: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)

    def add_corrupt(self, error: DataError) -> None:
        """Count a skipped record; log it (the first 10 in full, then a count)."""
        self.corrupt += 1
        if len(self.corrupt_examples) < 10:
            self.corrupt_examples.append(str(error))
            log.warning("skipping corrupt record: %s", error)

    def merge(self, other: "ReadReport") -> None:
        self.files += other.files
        self.records += other.records
        self.corrupt += other.corrupt
        self.corrupt_examples.extend(other.corrupt_examples[:max(0, 10 - len(self.corrupt_examples))])
        self.empty_files.extend(other.empty_files)

    def summary(self) -> str:
        """One line for the end of a pass, e.g. after --skip_corrupt_records."""
        text = f"{self.records} records read from {self.files} files"
        if self.corrupt:
            text += f"; {self.corrupt} corrupt records skipped (first: {self.corrupt_examples[0]})"
        if self.empty_files:
            text += f"; {len(self.empty_files)} files without records"
        return text


class RecordDecoder:
    """Decodes the records of YouTube-8M files with one set of settings.

    `feature_names` / `feature_sizes`: features to read, concatenated in this order. `max_frames`: frames
    kept per frame-level video. `num_classes`: when given, labels outside ``[0, num_classes)`` are errors.
    `segments`: also read (and check) the segment ratings of frame-level records.
    """

    def __init__(self, feature_names: Sequence[str] = ("rgb", "audio"), feature_sizes: Sequence[int] = (1024, 128),
                 max_frames: int = 300, frame_level: bool = True, num_classes: int | None = None,
                 segments: bool = False):
        names, sizes = list(feature_names), [int(s) for s in feature_sizes]
        if not names or len(names) != len(sizes):
            raise DataError(f"feature_names {names} and feature_sizes {sizes} must be non-empty and of the same "
                            f"length (--feature_names / --feature_sizes)")
        if any(s <= 0 for s in sizes) or max_frames <= 0:
            raise DataError(f"feature_sizes {sizes} and max_frames {max_frames} must be positive")
        self.feature_names, self.feature_sizes = names, sizes
        self.sizes = np.array(sizes, dtype=np.int64)
        self.sizes.flags.writeable = False  # shared by every video decoded
        self.layout = frame_layout(tuple(names), tuple(sizes))
        self.max_frames, self.frame_level, self.num_classes = max_frames, frame_level, num_classes
        self.segments = segments

    @property
    def dim(self) -> int:
        """Width of the concatenated features."""
        return sum(self.feature_sizes)

    # --- frame level ---------------------------------------------------------------------------------
    def decode_frames(self, record: Record) -> QuantizedVideo:
        """The quantized frames, id and labels of a frame-level record (and its segment ratings, when the
        decoder reads them); DataError if it is not valid."""
        payload = record.payload
        buffer = np.frombuffer(payload, dtype=np.uint8)
        scanned = scan_sequence_example(buffer, self.layout, self.num_classes)
        if scanned is not None:
            offsets, strides, counts = scanned.offsets, scanned.strides, scanned.counts.tolist()
        else:
            context, buffer, offsets, counts = self._decode_frames_with_protobuf(record)
            strides = self.sizes  # frames side by side
        if len(set(counts)) > 1:
            detail = ", ".join(f"{n}: {c}" for n, c in zip(self.feature_names, counts))
            raise DataError(f"{record.where()}: the feature lists have different numbers of frames ({detail})")
        if scanned is not None and (scanned.id is None or self.segments):
            # the protobuf library decides what an unusual context means, and words its errors; it also
            # reads the segment ratings (a few hundred bytes: docs/benchmarks.md measures the cost)
            context = self._parse_context(record, scanned.context)
        if scanned is None or scanned.id is None:
            video_id, labels = self._id_and_labels(record, context, "context")
        else:
            video_id, labels = scanned.id, scanned.labels
        segments = (read_segment_labels(record, context, counts[0], self.num_classes, video_id)
                    if self.segments else None)
        return QuantizedVideo(video_id, labels, buffer, offsets, strides, self.sizes, min(counts[0], self.max_frames),
                              counts[0], segments)

    @staticmethod
    def _parse_context(record: Record, context: tuple[int, int] | None) -> "proto.Features":
        """The context `Features` at byte range `context` of the record (None: absent, so empty)."""
        try:
            return proto.Features.FromString(record.payload[slice(*context)] if context else b"")
        except DecodeError as error:
            raise DataError(f"{record.where()}: not a tf.train.SequenceExample: its context cannot be "
                            f"decoded ({error})") from None

    def _decode_frames_with_protobuf(self, record: Record
                                     ) -> tuple["proto.Features", np.ndarray, np.ndarray, list[int]]:
        """The general path: any valid encoding, and the precise error for an invalid one. Returns the
        context, every frame of every feature in one buffer (feature after feature, frames side by
        side), the offset of each feature's first frame in it, and the frame counts."""
        example = _parse(record, proto.SequenceExample, "frame-level")
        lists = example.feature_lists.feature_list
        values, counts = [], []
        for name, size in zip(self.feature_names, self.feature_sizes):
            if name not in lists:
                found = ", ".join(sorted(lists)) or "none"
                hint = ("; this looks like video-level data: use --frame_features=False"
                        if not lists and any(n in example.context.feature for n in ("mean_rgb", "mean_audio"))
                        else "; check --feature_names")
                raise DataError(f"{record.where()}: missing feature list {name!r} (feature lists found: "
                                f"{found}){hint}")
            for index, feature in enumerate(lists[name].feature):
                if feature.WhichOneof("kind") != "bytes_list" or len(feature.bytes_list.value) != 1:
                    raise DataError(f"{record.where()}: frame {index} of feature list {name!r} is not one "
                                    f"bytes value (a quantized frame)")
                value = feature.bytes_list.value[0]
                if len(value) != size:
                    raise DataError(f"{record.where()}: frame {index} of feature list {name!r} has {len(value)} "
                                    f"bytes where --feature_sizes says {size} for {name}; check --feature_sizes")
                values.append(value)
            counts.append(len(lists[name].feature))
        offsets = np.cumsum([0] + [count * size for count, size in zip(counts, self.feature_sizes)])[:-1]
        return example.context, np.frombuffer(b"".join(values), dtype=np.uint8), offsets, counts

    def decode_segment_labels(self, record: Record) -> tuple[str, SegmentLabels | None]:
        """The id and segment ratings of a frame-level record, whatever its features (frames are counted,
        not read: what scoring a submission needs); DataError if they are not valid."""
        example = _parse(record, proto.SequenceExample, "frame-level")
        frames = max((len(values.feature) for values in example.feature_lists.feature_list.values()), default=0)
        video_id, _ = self._id_and_labels(record, example.context, "context")
        return video_id, read_segment_labels(record, example.context, frames, self.num_classes, video_id)

    # --- video level ---------------------------------------------------------------------------------
    def decode_video(self, record: Record) -> Video:
        """A video-level record (features float32 ``[sum(sizes)]``); DataError if it is not valid."""
        example = _parse(record, proto.Example, "video-level")
        features = example.features.feature
        out = np.empty(self.dim, dtype=np.float32)
        column = 0
        for name, size in zip(self.feature_names, self.feature_sizes):
            if name not in features:
                found = ", ".join(sorted(features)) or "none"
                hint = ("; this looks like frame-level data: use --frame_features=True"
                        if name.startswith("mean_") and len(features) <= 3 else "; check --feature_names")
                raise DataError(f"{record.where()}: missing feature {name!r} (features found: {found}){hint}")
            feature = features[name]
            values = feature.float_list.value
            if feature.WhichOneof("kind") != "float_list" or len(values) != size:
                kind = feature.WhichOneof("kind") or "empty"
                count = len(getattr(feature, kind).value) if kind != "empty" else 0
                raise DataError(f"{record.where()}: feature {name!r} has {count} values of kind {kind}, expected "
                                f"{size} floats; check --feature_sizes")
            out[column:column + size] = values
            column += size
        video_id, labels = self._id_and_labels(record, example.features, "features")
        return Video(video_id, labels, out)

    # --- both ----------------------------------------------------------------------------------------
    def _id_and_labels(self, record: Record, context: "proto.Features", where: str) -> tuple[str, np.ndarray]:
        features = context.feature
        key = "id" if "id" in features else "video_id" if "video_id" in features else None
        if key is None:
            raise DataError(f"{record.where()}: no 'id' (2018 release) or 'video_id' (2017) in its {where}; "
                            f"is this a YouTube-8M file?")
        ids = features[key]
        if ids.WhichOneof("kind") != "bytes_list" or len(ids.bytes_list.value) != 1:
            raise DataError(f"{record.where()}: {key!r} is not one bytes value")
        video_id = ids.bytes_list.value[0].decode("utf-8", errors="backslashreplace")
        if "labels" not in features:
            return video_id, np.zeros(0, dtype=np.int64)
        labels_feature = features["labels"]
        if labels_feature.WhichOneof("kind") not in (None, "int64_list"):
            raise DataError(f"{record.where()}: 'labels' is a {labels_feature.WhichOneof('kind')}, expected an "
                            f"int64 list")
        values = labels_feature.int64_list.value
        # a few labels per video: Python's min and max cost less than numpy's reductions
        if values and min(values) < 0:
            raise DataError(f"{record.where()}: label {min(values)} of video {video_id!r} is negative: labels are "
                            f"class indices, which must be >= 0; the file is not valid YouTube-8M data "
                            f"(rewrite its labels or leave it out)")
        if values and self.num_classes is not None and max(values) >= self.num_classes:
            bad = next(v for v in values if v >= self.num_classes)
            raise DataError(f"{record.where()}: label {bad} of video {video_id!r} is out of range "
                            f"[0, {self.num_classes}); check --num_classes (3862 for the 2018 release, "
                            f"4716 for 2017)")
        return video_id, np.fromiter(values, dtype=np.int64, count=len(values))

    def decode(self, record: Record) -> Video:
        """A `Video` (dequantized features) from a record of either level."""
        if not self.frame_level:
            return self.decode_video(record)
        video = self.decode_frames(record)
        return Video(video.id, video.labels, video.dequantized(), video.segments)


def iter_file_records(paths: Iterable[str], skip_corrupt: bool = False,
                      report: ReadReport | None = None) -> Iterator[Record]:
    """Every record of the files, in order; framing errors raise DataError, or are counted in
    `report` and skipped with `skip_corrupt`. A file without records is logged as a warning."""
    report = report if report is not None else ReadReport()
    on_error = report.add_corrupt if skip_corrupt else None
    for path in paths:
        report.files += 1
        count = 0
        for record in iter_records(path, on_error=on_error):
            count += 1
            yield record
        if count == 0:
            report.empty_files.append(path)
            log.warning("%s: no records (an empty file is valid, but is it the file you meant?)", path)


def iter_decoded(records: Iterable[Record], decode, skip_corrupt: bool = False,
                 report: ReadReport | None = None) -> Iterator:
    """``decode(record)`` for each record; undecodable records raise DataError, or are counted in
    `report` and skipped with `skip_corrupt`."""
    for record in records:
        try:
            item = decode(record)
        except DataError as error:
            if not skip_corrupt:
                raise
            if report is not None:
                report.add_corrupt(error)
            continue
        if report is not None:
            report.records += 1
        yield item


def iter_videos(pattern: str, *, feature_names: Sequence[str] = ("rgb", "audio"),
                feature_sizes: Sequence[int] = (1024, 128), max_frames: int = 300, frame_level: bool = True,
                num_classes: int | None = None, skip_corrupt: bool = False,
                report: ReadReport | None = None, segments: bool = True) -> Iterator[Video]:
    """Yield every video of the files matching `pattern`, in file order then record order.

    `pattern`: glob(s) on any fsspec filesystem; comma-separated globs are a union. Each `Video` has
    `id`, `labels` (int64, empty when the file has none) and `features` (float32, dequantized:
    ``[num_frames, sum(feature_sizes)]`` capped at `max_frames` for frame-level data,
    ``[sum(feature_sizes)]`` for video-level). Labels are checked against ``[0, num_classes)`` only when
    `num_classes` is given. Frame-level videos carry their segment ratings (`Video.segments`, 2019
    release) unless `segments` is False. Any bad record raises DataError naming the file, record and
    problem; with `skip_corrupt` bad records are skipped instead, counted in `report` (and a summary is
    logged at the end).
    """
    decoder = RecordDecoder(feature_names, feature_sizes, max_frames, frame_level, num_classes, segments)
    report = report if report is not None else ReadReport()
    files = expand_pattern(pattern)
    yield from iter_decoded(iter_file_records(files, skip_corrupt, report), decoder.decode, skip_corrupt, report)
    if report.corrupt:
        log.warning("%s", report.summary())


def _parse(record: Record, message: type, level: str):
    """`record`'s payload as a `message` (tf.train.Example or SequenceExample); DataError if it is not one."""
    try:
        return message.FromString(record.payload)
    except DecodeError as error:
        raise DataError(f"{record.where()}: not a tf.train.{message.DESCRIPTOR.name} (protobuf decoding failed: "
                        f"{error}); is this a YouTube-8M {level} file?") from None
