"""The training and evaluation input pipeline: YouTube-8M files -> batches ready for the model.

``make_loader(pattern, config, training=True, epoch=e, rank=r, world_size=w)`` returns a DataLoader whose
batches are dicts:

- ``frames``: float32 ``[B, n_bagging, iterations, D]`` for frame-level data (sampled frames, dequantized,
  each frame L2-normalized over its full D), float32 ``[B, D]`` (L2-normalized) for video-level data;
- ``labels``: float32 ``[B, num_classes]`` multi-hot (all zero for files without labels);
- ``ids``: list of B video ids; ``num_frames``: int64 ``[B]``, the real frames the example's frames were
  sampled from (half the video's under data augmentation; 1 for video-level data).

Segment examples (2019 release, frame-level data; ``segments=``): an example is a 5-frame segment of a
video (`compactvid.data.segments`), and its ``iterations`` frames are sampled from those 5 (fewer at a
video's end). ``segments="rated"``: one example per rated segment, ``labels`` its classes rated present
and ``label_weights`` float32 ``[B, num_classes]`` 1 for its rated classes (present or absent), 0 for
the others, whose presence is unknown; videos without ratings make no example. ``segments="all"``: every
segment of every video (starts 0, 5, 10, ...; what a submission ranks), labels all zero. Both add
``segment_starts``: int64 ``[B]``, the segment's first frame; every frame of the record is used, not
only the first `max_frames`.

With ``dequantize=False``, frame-level ``frames`` are the sampled quantized bytes, uint8
``[B, n_bagging, iterations, D]``, and `prepare_frames` (on any device, e.g. after moving the batch to
the GPU) turns them into exactly the float32 frames above: 4x fewer bytes to build, move and copy.

Sharding: the records of one epoch are split between the DDP ranks and the DataLoader workers of each
rank (``world_size * workers`` readers); every record is read by exactly one reader. With at least as
many files as readers, reader k reads files k, k + readers, ... of the epoch's file order; with fewer
files, reader k reads records k, k + readers, ... of the concatenated files (and skips the other
payloads unread). Ranks may thus get a few records more or fewer than others.

Randomness (training): the file order depends on (seed, epoch) only, so that all readers agree on the
split; the shuffle buffer and the frame sampling of a reader on (seed, epoch, rank, worker).
Evaluation reads files in sorted order without shuffling, and samples each video's frames from a seed
of (seed, file, record): the same frames whatever the number of ranks and workers.

The work per video is what the model needs, and each byte of a record is read from memory once.
Local files are memory-mapped, and the shuffle buffer holds records (views of the file), not data. A
record leaves the buffer unread: its payload CRC is checked then, which brings it into the CPU cache;
compiled code (numba) then locates its frames, id and labels in place (`compactvid.data.wire`), samples
the frame indices and gathers the sampled frames into a small staging buffer, which stays in the cache
(`compactvid.data.sampling`); one copy moves them into the batch tensor. With float32 batches they are
dequantized and normalized on the way. In the main process, batch tensors are reused once the
consumer has let go of them, which spares the page faults of fresh memory. What Python does per video
is a few dozen calls; most of the time goes to the memory traffic of reading the record and writing the
batch (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from compactvid.config import Config
from compactvid.data.paths import expand_pattern
from compactvid.data.sampling import augmentation_halves, dequantize_normalize_, gather_sampled_frames, l2_normalize_
from compactvid.data.segments import SEGMENT_SIZE
from compactvid.data.tfrecord import Record, iter_records
from compactvid.data.yt8m import QuantizedVideo, ReadReport, RecordDecoder, Video
from compactvid.errors import DataError

log = logging.getLogger(__name__)


class _BufferPool:
    """Batch buffers for the main process, reused once the consumer has released them.

    A fresh 50 MB batch costs more in page faults (the kernel zeroing new pages) than filling it.
    A buffer is a numpy array; the tensors handed out (and every view of them) keep a reference to it
    through their storage, so when its reference count is back to the pool's own, nobody can see it
    any more and it is safe to overwrite. Buffers still in use are never touched: a consumer that keeps
    every batch just gets fresh ones.
    """

    def __init__(self, size: int = 8):
        self.size = size
        self.arrays: list[np.ndarray] = []

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
        for array in self.arrays:
            # 3 references: the pool's list, the loop variable, getrefcount's argument
            if array.shape == shape and array.dtype == dtype and sys.getrefcount(array) == 3:
                return torch.from_numpy(array)
        array = np.empty(shape, dtype=dtype)
        self.arrays = [array] + self.arrays[:self.size - 1]
        return torch.from_numpy(array)


def _empty(shape: tuple[int, ...], dtype: np.dtype, pool: _BufferPool | None) -> torch.Tensor:
    """An uninitialized tensor for a batch. In a DataLoader worker it is allocated in shared memory, so
    that sending it to the main process copies nothing (as DataLoader's own collate does); in the main
    process it comes from `pool` (when given), else from numpy, whose large allocations use transparent
    huge pages (fewer page faults)."""
    if get_worker_info() is not None:
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * np.dtype(dtype).itemsize)
        return torch.empty(0, dtype=torch.from_numpy(np.empty(0, dtype)).dtype).set_(storage, 0, shape)
    if pool is not None:
        return pool.empty(shape, np.dtype(dtype))
    return torch.from_numpy(np.empty(shape, dtype=dtype))


class _Examples(NamedTuple):
    """The E examples a record makes: example e samples the real frames ``[starts[e], starts[e] +
    counts[e])`` of the video; its classes are ``labels[e]`` (int64), and for segment examples the rated
    ones ``rated[e]`` (None: every class counts)."""

    starts: Sequence[int]
    counts: Sequence[int]
    labels: Sequence[np.ndarray]
    rated: Sequence[np.ndarray] | None = None


def _multi_hot(out: torch.Tensor, classes: Sequence[np.ndarray]) -> torch.Tensor:
    """`out` (float32 ``[>= len(classes), C]``) zeroed, with row i 1 at `classes[i]`; its first rows."""
    array = out.zero_().numpy()
    array[np.repeat(np.arange(len(classes)), [len(c) for c in classes]), np.concatenate(classes)] = 1.0
    return out[:len(classes)]


class _Batcher:
    """Fills the tensors of one batch example by example: the frames as each video arrives, labels,
    frame counts and ids when the batch is complete. `array` is `frames` as a numpy array (the same
    memory). Example i is of video ``videos[i]``; `segments`: the batch holds segment examples ("rated" or
    "all", as `make_loader`'s)."""

    def __init__(self, batch_size: int, frame_shape: tuple[int, ...], dtype: type, num_classes: int,
                 pool: _BufferPool | None, segments: str | None = None):
        self.size = batch_size
        self.frames = _empty((batch_size, *frame_shape), dtype, pool)
        self.array = self.frames.numpy()
        self.labels = _empty((batch_size, num_classes), np.float32, pool)
        self.weights = _empty((batch_size, num_classes), np.float32, pool) if segments == "rated" else None
        self.segments = segments
        self.videos: list[QuantizedVideo | Video] = []
        self.starts: list[int] = []
        self.lengths: list[int] = []
        self.classes: list[np.ndarray] = []
        self.rated: list[np.ndarray] = []

    def room(self) -> int:
        """Examples that still fit."""
        return self.size - len(self.videos)

    def add(self, video: QuantizedVideo | Video, examples: _Examples, first: int) -> slice:
        """Take the examples of `video` from number `first` on (as many as fit); returns their slots in
        `frames`, to fill."""
        start = len(self.videos)
        end = min(len(examples.counts), first + self.size - start)
        self.videos += [video] * (end - first)
        self.starts += examples.starts[first:end]
        self.lengths += examples.counts[first:end]
        self.classes += examples.labels[first:end]
        if examples.rated is not None:
            self.rated += examples.rated[first:end]
        return slice(start, len(self.videos))

    def batch(self) -> dict[str, Any]:
        size = len(self.videos)
        batch = {"frames": self.frames[:size], "labels": _multi_hot(self.labels, self.classes),
                 "ids": [video.id for video in self.videos], "num_frames": torch.tensor(self.lengths, dtype=torch.int64)}
        if self.segments:
            batch["segment_starts"] = torch.tensor(self.starts, dtype=torch.int64)
            if self.weights is not None:
                batch["label_weights"] = _multi_hot(self.weights, self.rated)
        return batch


class _Staging:
    """Where the sampled frames of one record's examples are gathered (uint8), and, for float32 batches,
    dequantized and normalized (float32), then copied into the batch: ``[examples, *frame_shape]``, grown
    when a record makes more examples (segments).

    Gathered here, where the CPU cache holds them, and moved into the batch in one copy: gathered frame
    by frame straight into the batch's memory (not in the cache) they cost a fifth more; dequantized and
    normalized here too, the 5 passes of those operations stay in the cache (docs/benchmarks.md).
    """

    def __init__(self, frame_shape: tuple[int, ...], convert: bool):
        self.frame_shape, self.convert = frame_shape, convert
        self._allocate(2)

    def _allocate(self, count: int) -> None:
        self.gathered = np.empty((count, *self.frame_shape), np.uint8)
        self.converted = np.empty(self.gathered.shape, np.float32) if self.convert else None

    def gathered_for(self, count: int) -> np.ndarray:
        """The uint8 staging buffer of `count` examples."""
        if count > len(self.gathered):
            self._allocate(count)
        return self.gathered[:count]


class _Uniforms:
    """Uniform draws in [0, 1) from `rng`, handed out ``[count, *shape]`` at a time but drawn 256 at a time:
    a call to the generator costs more than the numbers it returns."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...]):
        self.rng, self.shape = rng, shape
        self.block = np.empty((0, *shape))
        self.used = 0

    def take(self, count: int) -> np.ndarray:
        if self.used + count > len(self.block):
            self.block = np.concatenate([self.block[self.used:], self.rng.random((max(256, count), *self.shape))])
            self.used = 0
        self.used += count
        return self.block[self.used - count:self.used]


class YT8MDataset(IterableDataset):
    """Batches of one epoch's share of the records for this rank and DataLoader worker (see the module
    docstring). Yields batch dicts, then one ``{"report": ReadReport}``; a DataError is yielded as
    ``{"error": message}`` so that its one-line message reaches the main process unchanged."""

    def __init__(self, files: list[str], config: Config, *, training: bool, epoch: int = 0, rank: int = 0,
                 world_size: int = 1, batch_size: int | None = None, dequantize: bool = True,
                 segments: str | None = None):
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in [0, world_size={world_size})")
        if segments not in (None, "rated", "all"):
            raise ValueError(f"segments={segments!r}: use None, 'rated' or 'all'")
        if segments and not config.frame_features:
            raise DataError("segment examples need frame-level data (--frame_features=True): the segment "
                            "ratings of the 2019 release are in its frame-level files")
        config.validate()
        self.segments = segments
        self.files = sorted(files)
        self.training, self.epoch, self.rank, self.world_size = training, epoch, rank, world_size
        self.augment = training and config.data_augmentation and config.frame_features and not segments
        # --batch_size counts videos, as the seed's: under augmentation a batch holds two examples of each.
        self.batch_size = (batch_size or config.batch_size) * (2 if self.augment else 1)
        self.seed = config.seed
        self.frame_level = config.frame_features
        self.iterations, self.n_bagging = config.iterations, config.n_bagging
        self.random_frames = config.sample_random_frames
        self.shuffle_buffer = config.shuffle_buffer_size if training else 0
        self.skip_corrupt = config.skip_corrupt_records
        self.num_classes = config.num_classes
        self.dequantize = dequantize or not config.frame_features
        self.decoder = RecordDecoder(config.feature_name_list, config.feature_size_list, config.max_frames,
                                     config.frame_features, config.num_classes, segments=segments == "rated")

    def set_epoch(self, epoch: int) -> None:
        """Use the file order, shuffling and sampling of `epoch` on the next pass."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader, readers = self.rank * workers + worker, self.world_size * workers
        report = ReadReport()
        try:
            yield from self._batches(reader, readers, worker, report)
        except DataError as error:
            yield {"error": str(error)}
            return
        yield {"report": report}

    # --- records ---------------------------------------------------------------------------------------
    def _file_order(self) -> list[str]:
        if not self.training:
            return self.files
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.files))
        return [self.files[i] for i in order]

    def _records(self, reader: int, readers: int, report: ReadReport) -> Iterator[tuple[int, Record]]:
        """(file number in sorted order, record) of this reader's share, in file order; payload CRCs are
        left to the consumer (`Record.check`)."""
        number = {path: i for i, path in enumerate(self.files)}
        on_error = report.add_corrupt if self.skip_corrupt else None
        order = self._file_order()
        if len(order) >= readers:
            for path in order[reader::readers]:
                report.files += 1
                empty = True
                for record in iter_records(path, on_error=on_error, defer_payload_check=True):
                    empty = False
                    yield number[path], record
                if empty:
                    report.empty_files.append(path)
                    log.warning("%s: no records (an empty file is valid, but is it the file you meant?)", path)
            return
        first = 0  # index of the current file's first record in the concatenation of all files
        for path in order:
            report.files += reader == 0
            seen = 0

            def keep(index: int) -> bool:
                nonlocal seen
                seen = max(seen, index + 1)
                return (first + index) % readers == reader

            for record in iter_records(path, keep=keep, on_error=on_error, defer_payload_check=True):
                yield number[path], record
            if seen == 0 and reader == 0:
                report.empty_files.append(path)
                log.warning("%s: no records (an empty file is valid, but is it the file you meant?)", path)
            first += seen

    def _shuffled(self, items: Iterator, rng: np.random.Generator) -> Iterator:
        """`items` through a shuffle buffer of `shuffle_buffer` entries."""
        buffer: list = []
        slots: Iterator[int] = iter(())
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            slot = next(slots, None)
            if slot is None:  # drawn 1024 at a time: a call to the generator costs as much as 1000 numbers
                slots = iter(rng.integers(len(buffer), size=1024).tolist())
                slot = next(slots)
            buffer[slot], item = item, buffer[slot]
            yield item
        for slot in rng.permutation(len(buffer)):
            yield buffer[slot]

    # --- examples and batches --------------------------------------------------------------------------
    def _batches(self, reader: int, readers: int, worker: int, report: ReadReport) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        records = self._records(reader, readers, report)
        if self.shuffle_buffer > 1:
            records = self._shuffled(records, rng)
        frame_shape = (self.n_bagging, self.iterations, self.decoder.dim) if self.frame_level else (self.decoder.dim,)
        dtype = np.float32 if self.dequantize else np.uint8
        pool = _BufferPool() if get_worker_info() is None else None
        uniforms = _Uniforms(rng, (self.n_bagging, self.iterations if self.random_frames else 1))
        staging = _Staging(frame_shape, convert=self.dequantize and self.frame_level)
        batcher = _Batcher(self.batch_size, frame_shape, dtype, self.num_classes, pool, self.segments)
        for number, record in records:
            try:
                record.check()  # the payload CRC
                video, examples = self._sample(number, record, uniforms, staging)
            except DataError as error:
                if not self.skip_corrupt:
                    raise
                report.add_corrupt(error)
                continue
            report.records += 1
            count = len(examples.counts)
            source = staging.gathered
            if staging.converted is not None:
                source = staging.converted
                has_frames = None if all(examples.counts) else torch.tensor(examples.counts).view(-1, 1, 1, 1) > 0
                converted = torch.from_numpy(source[:count]).copy_(torch.from_numpy(staging.gathered[:count]))
                dequantize_normalize_(converted, has_frames)
            first = 0
            while first < count:  # in one batch, or (at a batch's end, or for a video's segments) several
                slots = batcher.add(video, examples, first)
                done = first + slots.stop - slots.start
                if not self.frame_level:
                    batcher.frames[slots] = l2_normalize_(torch.from_numpy(video.features))
                else:
                    batcher.array[slots] = source[first:done]
                first = done
                if not batcher.room():
                    yield batcher.batch()
                    batcher = _Batcher(self.batch_size, frame_shape, dtype, self.num_classes, pool, self.segments)
        if batcher.videos:
            yield batcher.batch()

    def _sample(self, number: int, record: Record, uniforms: _Uniforms, staging: _Staging
                ) -> tuple[QuantizedVideo | Video, _Examples]:
        """The decoded record and its examples. For frame-level data, the examples' sampled frames are
        written to ``staging.gathered[:examples]`` (uint8 ``[examples, n_bagging, iterations, D]``)."""
        if not self.frame_level:
            video = self.decoder.decode_video(record)
            return video, _Examples((0,), (1,), (video.labels,))
        video = self.decoder.decode_frames(record)
        examples = self._examples(video)
        count = len(examples.counts)
        if self.training:
            draws = uniforms.take(count)
        else:  # evaluation: the same frames whatever the number of ranks and workers
            draws = np.random.default_rng([self.seed, number, record.index]).random((count, *uniforms.shape))
        staged = staging.gathered_for(count)
        # segments may lie beyond the first max_frames frames: they sample from all the record's frames
        frames = video.total_frames if self.segments else video.num_frames
        if frames == 0:  # no frame to sample; whatever these bytes, `l2_normalize_` gives such examples zeros
            staged[:] = 0
        elif count:
            gather_sampled_frames(staged, video.buffer, video.offsets, video.strides, video.sizes, frames, draws,
                                  np.asarray(examples.starts, np.int64), np.asarray(examples.counts, np.int64),
                                  self.iterations, self.random_frames)
        return video, examples

    def _examples(self, video: QuantizedVideo) -> _Examples:
        """The examples of a frame-level video: the video (or its halves), or its segments."""
        if self.segments is None:
            starts, counts = augmentation_halves(video.num_frames) if self.augment else ((0,), (video.num_frames,))
            return _Examples(starts, counts, (video.labels,) * len(counts))
        if self.segments == "all":
            starts = np.arange(0, video.total_frames, SEGMENT_SIZE)
            return _Examples(starts.tolist(), np.minimum(SEGMENT_SIZE, video.total_frames - starts).tolist(),
                             (np.zeros(0, np.int64),) * len(starts))
        if video.segments is None:  # a video nobody rated
            return _Examples((), (), ())
        starts, positives, rated = video.segments.by_segment()
        return _Examples(starts.tolist(), np.minimum(SEGMENT_SIZE, video.total_frames - starts).tolist(), positives,
                         rated)


class VideoLoader(DataLoader):
    """A DataLoader of `YT8MDataset` batches that raises a reader's DataError in the calling process with
    its one-line message, and after each complete pass holds the pass's `ReadReport` in `report` (and logs
    it when corrupt records were skipped)."""

    report: ReadReport

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        self.report = ReadReport()
        for item in super().__iter__():
            if "error" in item:
                raise DataError(item["error"])
            if "report" in item:
                self.report.merge(item["report"])
                continue
            yield item
        if self.report.corrupt:
            log.warning("%s", self.report.summary())


def num_workers(num_readers: int, local_processes: int = 1) -> int:
    """`--num_readers` as DataLoader workers: capped, with a note, at this process's part of the CPUs it may
    use (shared by the `local_processes` training processes of this machine); 0 reads in this process.
    The seed's 100 reader threads fit TensorFlow, not DataLoader worker processes."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cap = max(1, cpus // local_processes)
    if num_readers > cap:
        log.info("--num_readers=%d: using %d DataLoader workers per process (%d CPUs, %d process(es))",
                 num_readers, cap, cpus, local_processes)
        return cap
    return max(num_readers, 0)


def make_loader(pattern: str, config: Config, *, training: bool, epoch: int = 0, rank: int = 0,
                world_size: int = 1, local_processes: int = 1, batch_size: int | None = None,
                dequantize: bool = True, segments: str | None = None) -> VideoLoader:
    """A DataLoader over the files of `pattern` (comma-separated globs, any fsspec path) for one epoch.

    training=True: shuffled (file order and a record buffer), frames sampled per the config, data
    augmentation per ``--data_augmentation``. training=False: every record of this rank's share once,
    in order, deterministic sampling, no augmentation. `batch_size` (videos per batch) defaults to
    ``config.batch_size``; under augmentation a batch holds two examples (rows) of each video.
    `local_processes`: the processes of this machine that read at the same time (--num_readers per process).
    dequantize=False: frame-level batches hold uint8 frames, for `prepare_frames` on the device.
    segments="rated" / "all": segment examples (a batch of `batch_size` segments). See the module
    docstring for the batch layout and sharding.
    """
    files = expand_pattern(pattern)
    dataset = YT8MDataset(files, config, training=training, epoch=epoch, rank=rank, world_size=world_size,
                          batch_size=batch_size, dequantize=dequantize, segments=segments)
    workers = num_workers(config.num_readers, local_processes)
    return VideoLoader(dataset, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
                       prefetch_factor=2 if workers else None, persistent_workers=False, collate_fn=_as_is)


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    """The DataLoader's collate function: the dataset's batches are already tensors (DataLoader's default
    would walk every id of every batch)."""
    return batch


def prepare_frames(frames: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
    """The model's float32 frames from a batch's ``frames`` and ``num_frames``: uint8 quantized frames
    (``dequantize=False``) are dequantized and L2-normalized per frame on their device, with the same
    operations as the loader (the examples of a video without frames get zeros); float frames are
    returned unchanged."""
    if frames.dtype != torch.uint8:
        return frames
    has_frames = (num_frames.to(frames.device, non_blocking=True) > 0).view(-1, *[1] * (frames.dim() - 1))
    return dequantize_normalize_(frames.to(torch.float32), has_frames)
