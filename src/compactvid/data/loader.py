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
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from compactvid.config import Config
from compactvid.data.paths import expand_pattern
from compactvid.data.sampling import augmentation_halves, dequantize_normalize_, gather_sampled_frames, l2_normalize_
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


class _Batcher:
    """Fills the tensors of one batch example by example: the frames as each video arrives, labels,
    frame counts and ids when the batch is complete. `array` is `frames` as a numpy array (the same
    memory). Example i is of video ``videos[i]`` and samples ``lengths[i]`` of its real frames."""

    def __init__(self, batch_size: int, frame_shape: tuple[int, ...], dtype: type, num_classes: int,
                 pool: _BufferPool | None):
        self.size = batch_size
        self.frames = _empty((batch_size, *frame_shape), dtype, pool)
        self.array = self.frames.numpy()
        self.labels = _empty((batch_size, num_classes), np.float32, pool)
        self.videos: list[QuantizedVideo | Video] = []
        self.lengths: list[int] = []

    def room(self) -> int:
        """Examples that still fit."""
        return self.size - len(self.videos)

    def add(self, video: QuantizedVideo | Video, lengths: tuple[int, ...]) -> slice:
        """Take examples of `video` that sample `lengths` frames (as many as fit); returns their slots in
        `frames`, to fill."""
        start = len(self.videos)
        taken = lengths[:self.size - start]
        self.videos += [video] * len(taken)
        self.lengths += taken
        return slice(start, len(self.videos))

    def batch(self) -> dict[str, Any]:
        size = len(self.videos)
        label_lists = [video.labels for video in self.videos]
        labels = self.labels.zero_().numpy()
        labels[np.repeat(np.arange(size), [len(v) for v in label_lists]), np.concatenate(label_lists)] = 1.0
        return {"frames": self.frames[:size], "labels": self.labels[:size], "ids": [video.id for video in self.videos],
                "num_frames": torch.tensor(self.lengths, dtype=torch.int64)}


class _Uniforms:
    """Uniform draws in [0, 1) from `rng`, handed out ``[count, *shape]`` at a time but drawn 256 at a time:
    a call to the generator costs more than the numbers it returns."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...]):
        self.rng, self.shape = rng, shape
        self.block = np.empty((0, *shape))
        self.used = 0

    def take(self, count: int) -> np.ndarray:
        if self.used + count > len(self.block):
            self.block = np.concatenate([self.block[self.used:], self.rng.random((256, *self.shape))])
            self.used = 0
        self.used += count
        return self.block[self.used - count:self.used]


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
        self.augment = training and config.data_augmentation and config.frame_features
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
        # a video's sampled frames are gathered here, where the CPU cache holds them, then moved into the batch
        # in one copy: gathered frame by frame straight into the batch's memory (not in the cache) they cost
        # a fifth more (docs/benchmarks.md)
        staged = np.empty((2, *frame_shape), np.uint8)
        # float32 batches: the staged frames are dequantized and normalized in a staging buffer too (the 5
        # passes of those operations in the cache), then copied
        converted = np.empty(staged.shape, np.float32) if self.dequantize and self.frame_level else None
        batcher = _Batcher(self.batch_size, frame_shape, dtype, self.num_classes, pool)
        for number, record in records:
            try:
                record.check()  # the payload CRC
                video, lengths = self._sample(number, record, uniforms, staged)
            except DataError as error:
                if not self.skip_corrupt:
                    raise
                report.add_corrupt(error)
                continue
            report.records += 1
            if converted is not None:
                dequantize_normalize_(torch.from_numpy(converted[:len(lengths)]).copy_(
                    torch.from_numpy(staged[:len(lengths)])))
            source = staged if converted is None else converted
            first = 0
            while first < len(lengths):  # in one batch, or (at a batch's end) two
                slots = batcher.add(video, lengths[first:])
                done = first + slots.stop - slots.start
                if not self.frame_level:
                    batcher.frames[slots] = l2_normalize_(torch.from_numpy(video.features))
                else:
                    batcher.array[slots] = source[first:done]
                first = done
                if not batcher.room():
                    yield batcher.batch()
                    batcher = _Batcher(self.batch_size, frame_shape, dtype, self.num_classes, pool)
        if batcher.videos:
            yield batcher.batch()

    def _sample(self, number: int, record: Record, uniforms: _Uniforms, staged: np.ndarray
                ) -> tuple[QuantizedVideo | Video, tuple[int, ...]]:
        """The decoded record and, per example (two under data augmentation: its halves, else one), the
        number of its real frames the example samples from. For frame-level data, the examples' sampled
        frames are written to ``staged[:examples]`` (uint8 ``[examples, n_bagging, iterations, D]``)."""
        if not self.frame_level:
            return self.decoder.decode_video(record), (1,)
        video = self.decoder.decode_frames(record)
        starts, counts = augmentation_halves(video.num_frames) if self.augment else ((0,), (video.num_frames,))
        if self.training:
            draws = uniforms.take(len(counts))
        else:  # evaluation: the same frames whatever the number of ranks and workers
            draws = np.random.default_rng([self.seed, number, record.index]).random((len(counts), *uniforms.shape))
        if video.num_frames == 0:  # zero frames, as the original's padding gave
            staged[:len(counts)] = 0
        else:
            gather_sampled_frames(staged[:len(counts)], video.buffer, video.offsets, video.strides, video.sizes,
                                  video.num_frames, draws, starts, counts, self.iterations, self.random_frames)
        return video, counts


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
    in order, deterministic sampling, no augmentation. `batch_size` (videos per batch) defaults to
    ``config.batch_size``; under augmentation a batch holds two examples (rows) of each video.
    dequantize=False: frame-level batches hold uint8 frames, for `prepare_frames` on the device.
    See the module docstring for the batch layout and sharding.
    """
    files = expand_pattern(pattern)
    dataset = YT8MDataset(files, config, training=training, epoch=epoch, rank=rank, world_size=world_size,
                          batch_size=batch_size, dequantize=dequantize)
    workers = num_workers(config.num_readers)
    return VideoLoader(dataset, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
                       prefetch_factor=2 if workers else None, persistent_workers=False, collate_fn=_as_is)


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    """The DataLoader's collate function: the dataset's batches are already tensors (DataLoader's default
    would walk every id of every batch)."""
    return batch


def prepare_frames(frames: torch.Tensor) -> torch.Tensor:
    """The model's float32 frames from a batch's ``frames``: uint8 quantized frames (``dequantize=False``)
    are dequantized and L2-normalized per frame on their device, with the same operations as the loader;
    float frames are returned unchanged."""
    if frames.dtype != torch.uint8:
        return frames
    return dequantize_normalize_(frames.to(torch.float32))
