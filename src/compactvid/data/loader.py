"""The training and evaluation input pipeline: YouTube-8M files -> batches ready for the model.

``make_loader(pattern, config, training=True, epoch=e, rank=r, world_size=w)`` returns a DataLoader whose
batches are dicts:

- ``frames``: float32 ``[B, n_bagging, iterations, D]`` for frame-level data (sampled frames, dequantized,
  each frame L2-normalized over its full D), float32 ``[B, D]`` (L2-normalized) for video-level data;
- ``labels``: float32 ``[B, num_classes]`` multi-hot (all zero for files without labels);
- ``ids``: list of B video ids; ``num_frames``: int64 ``[B]``, the real frames the example's frames were
  sampled from (half the video's under data augmentation; 1 for video-level data).

With ``dequantize=False``, frame-level ``frames`` are the sampled quantized bytes, uint8
``[B, n_bagging, iterations, D]``, and `prepare_frames` (on any device, e.g. after moving the batch to
the GPU) turns them into exactly the float32 frames above: 4x fewer bytes to build, move and copy.

Sharding: the records of one epoch are split between the DDP ranks and the DataLoader workers of each
rank (``world_size * workers`` readers); every record is read by exactly one reader. With at least as
many files as readers, reader k reads files k, k + readers, ... of the epoch's file order; with fewer
files, reader k reads records k, k + readers, ... of the concatenated files (and skips the other
payloads with a seek). Ranks may thus get a few records more or fewer than others.

Randomness (training): the file order depends on (seed, epoch) only, so that all readers agree on the
split; the shuffle buffer and the frame sampling of a reader on (seed, epoch, rank, worker).
Evaluation reads files in sorted order without shuffling, and samples each video's frames from a seed
of (seed, file, record): the same frames whatever the number of ranks and workers.

The work per video is what the model needs. Each record is checked and its frames located without
copying (`compactvid.data.wire`); frame indices are drawn at once, while the record is in the CPU
cache, and only the distinct sampled frames are kept (as bytes: the shuffle buffer holds these, not
records). When a batch is built, those frames are dequantized and normalized (each once, however
often it was sampled) and gathered into the batch tensor. In the main process, batch tensors are
reused once the consumer has let go of them, which spares the page faults of fresh memory.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from compactvid.config import Config
from compactvid.data.paths import expand_pattern
from compactvid.data.sampling import (augmentation_halves, dequantize_normalize_, l2_normalize_,
                                      sample_frame_indices)
from compactvid.data.tfrecord import Record, iter_records
from compactvid.data.yt8m import QuantizedVideo, ReadReport, RecordDecoder, iter_decoded
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

    def __init__(self, size: int = 4):
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


class _Batcher:
    """Fills the tensors of one batch example by example."""

    def __init__(self, batch_size: int, frame_shape: tuple[int, ...], dtype: type, num_classes: int,
                 pool: _BufferPool | None):
        self.frames = _empty((batch_size, *frame_shape), dtype, pool)
        self.labels = np.zeros((batch_size, num_classes), dtype=np.float32)
        self.num_frames = np.zeros(batch_size, dtype=np.int64)
        self.ids: list[str] = []

    def add(self, video_id: str, labels: np.ndarray, num_frames: int) -> torch.Tensor:
        """Record an example's id, labels and frame count; returns its slot in `frames` to fill."""
        slot = len(self.ids)
        self.ids.append(video_id)
        self.labels[slot, labels] = 1.0
        self.num_frames[slot] = num_frames
        return self.frames[slot]

    def full(self) -> bool:
        return len(self.ids) == self.frames.shape[0]

    def batch(self) -> dict[str, Any]:
        size = len(self.ids)
        return {"frames": self.frames[:size], "labels": torch.from_numpy(self.labels[:size]),
                "ids": self.ids, "num_frames": torch.from_numpy(self.num_frames[:size])}


class YT8MDataset(IterableDataset):
    """Batches of one epoch's share of the records for this rank and DataLoader worker (see the module
    docstring). Yields batch dicts, then one ``{"report": ReadReport}``; a DataError is yielded as
    ``{"error": message}`` so that its one-line message reaches the main process unchanged."""

    def __init__(self, files: list[str], config: Config, *, training: bool, epoch: int = 0, rank: int = 0,
                 world_size: int = 1, batch_size: int | None = None, dequantize: bool = True):
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in [0, world_size={world_size})")
        config.validate()
        self.files = sorted(files)
        self.training, self.epoch, self.rank, self.world_size = training, epoch, rank, world_size
        self.batch_size = batch_size or config.batch_size
        self.seed = config.seed
        self.frame_level = config.frame_features
        self.iterations, self.n_bagging = config.iterations, config.n_bagging
        self.random_frames = config.sample_random_frames
        self.augment = training and config.data_augmentation and config.frame_features
        self.shuffle_buffer = config.shuffle_buffer_size if training else 0
        self.skip_corrupt = config.skip_corrupt_records
        self.num_classes = config.num_classes
        self.dequantize = dequantize or not config.frame_features
        self.decoder = RecordDecoder(config.feature_name_list, config.feature_size_list, config.max_frames,
                                     config.frame_features, config.num_classes)

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
        """(file number in sorted order, record) of this reader's share, in file order."""
        number = {path: i for i, path in enumerate(self.files)}
        on_error = report.add_corrupt if self.skip_corrupt else None
        order = self._file_order()
        if len(order) >= readers:
            for path in order[reader::readers]:
                report.files += 1
                empty = True
                for record in iter_records(path, on_error=on_error):
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

            for record in iter_records(path, keep=keep, on_error=on_error):
                yield number[path], record
            if seen == 0 and reader == 0:
                report.empty_files.append(path)
                log.warning("%s: no records (an empty file is valid, but is it the file you meant?)", path)
            first += seen

    def _shuffled(self, items: Iterator, rng: np.random.Generator) -> Iterator:
        """`items` through a shuffle buffer of `shuffle_buffer` entries."""
        buffer: list = []
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            slot = int(rng.integers(len(buffer)))
            buffer[slot], item = item, buffer[slot]
            yield item
        for slot in rng.permutation(len(buffer)):
            yield buffer[slot]

    # --- examples and batches --------------------------------------------------------------------------
    def _batches(self, reader: int, readers: int, worker: int, report: ReadReport) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])

        def prepare(item: tuple[int, Record]) -> _Video:
            number, record = item
            if not self.frame_level:
                video = self.decoder.decode_video(record)
                return _Video(video.id, video.labels, video.features, [np.zeros(0, np.int64)], [1])
            # sampled now, while the record is in the CPU cache: later (after the shuffle buffer) it is not
            video_rng = rng if self.training else np.random.default_rng([self.seed, number, record.index])
            return _Video.sample(self.decoder.decode_frames(record), video_rng, self.iterations, self.n_bagging,
                                 self.random_frames, self.augment)

        videos = iter_decoded(self._records(reader, readers, report), prepare, self.skip_corrupt, report)
        if self.shuffle_buffer > 1:
            videos = self._shuffled(videos, rng)
        frame_shape = ((self.n_bagging, self.iterations, self.decoder.dim) if self.frame_level
                       else (self.decoder.dim,))
        dtype = np.float32 if self.dequantize else np.uint8
        pool = _BufferPool() if get_worker_info() is None else None

        def new_batcher() -> _Batcher:
            return _Batcher(self.batch_size, frame_shape, dtype, self.num_classes, pool)

        batcher = new_batcher()
        scratch = torch.empty(min(self.decoder.max_frames, 2 * self.n_bagging * self.iterations), self.decoder.dim)
        for video in videos:
            frames = torch.from_numpy(video.frames)
            if not self.frame_level:
                l2_normalize_(frames)
            elif self.dequantize:
                frames = dequantize_normalize_(scratch[:len(frames)].copy_(frames))
            for rows, count in zip(video.rows, video.counts):
                slot = batcher.add(video.id, video.labels, count)
                if not self.frame_level:
                    slot.copy_(frames)
                elif count == 0:
                    slot.zero_()
                else:
                    torch.index_select(frames, 0, torch.from_numpy(rows), out=slot.view(-1, self.decoder.dim))
                if batcher.full():
                    yield batcher.batch()
                    batcher = new_batcher()
        if batcher.ids:
            yield batcher.batch()


@dataclass
class _Video:
    """A video ready for batching: its examples' sampled frames.

    Frame level: `frames` uint8 ``[distinct, D]``, the distinct frames the examples sampled (features side
    by side, a copy: the record's bytes can go); `rows[e]` int64 ``[n_bagging * iterations]``, example
    e's frames as rows of `frames`; `counts[e]`, the real frames example e sampled from. Video level:
    `frames` float32 ``[D]``, one example.
    """

    id: str
    labels: np.ndarray
    frames: np.ndarray
    rows: list[np.ndarray]
    counts: list[int]

    @classmethod
    def sample(cls, video: QuantizedVideo, rng: np.random.Generator, iterations: int, n_bagging: int,
               random_frames: bool, augment: bool) -> "_Video":
        ranges = augmentation_halves(video.num_frames) if augment else [(0, video.num_frames)]
        indices = [sample_frame_indices(rng, stop - start, iterations, n_bagging, random_frames).reshape(-1) + start
                   for start, stop in ranges]
        sampled = np.zeros(video.num_frames, dtype=bool)
        if video.num_frames:  # a video without frames samples nothing: its examples are zeros
            for example in indices:
                sampled[example] = True
        distinct = np.flatnonzero(sampled)
        row_of_frame = np.cumsum(sampled) - 1
        frames = np.empty((len(distinct), sum(f.shape[1] for f in video.frames)), dtype=np.uint8)
        column = 0
        for feature in video.frames:
            frames[:, column:column + feature.shape[1]] = feature[distinct]
            column += feature.shape[1]
        rows = [row_of_frame[example] if video.num_frames else example for example in indices]
        return cls(video.id, video.labels, frames, rows, [stop - start for start, stop in ranges])


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


def num_workers(num_readers: int) -> int:
    """`--num_readers` as DataLoader workers: capped at the CPUs this process may use, with a note."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_readers > cpus:
        log.info("--num_readers=%d: using %d DataLoader workers (the CPUs available)", num_readers, cpus)
        return cpus
    return max(num_readers, 0)


def make_loader(pattern: str, config: Config, *, training: bool, epoch: int = 0, rank: int = 0,
                world_size: int = 1, batch_size: int | None = None, dequantize: bool = True) -> VideoLoader:
    """A DataLoader over the files of `pattern` (comma-separated globs, any fsspec path) for one epoch.

    training=True: shuffled (file order and a record buffer), frames sampled per the config, data
    augmentation per ``--data_augmentation``. training=False: every record of this rank's share once,
    in order, deterministic sampling, no augmentation. `batch_size` defaults to ``config.batch_size``.
    dequantize=False: frame-level batches hold uint8 frames, for `prepare_frames` on the device.
    See the module docstring for the batch layout and sharding.
    """
    files = expand_pattern(pattern)
    dataset = YT8MDataset(files, config, training=training, epoch=epoch, rank=rank, world_size=world_size,
                          batch_size=batch_size, dequantize=dequantize)
    workers = num_workers(config.num_readers)
    return VideoLoader(dataset, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
                       prefetch_factor=2 if workers else None, persistent_workers=False)


def prepare_frames(frames: torch.Tensor) -> torch.Tensor:
    """The model's float32 frames from a batch's ``frames``: uint8 quantized frames (``dequantize=False``)
    are dequantized and L2-normalized per frame on their device, with the same operations as the loader;
    float frames are returned unchanged."""
    if frames.dtype != torch.uint8:
        return frames
    return dequantize_normalize_(frames.to(torch.float32))
