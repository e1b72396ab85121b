"""The training and evaluation input pipeline: YouTube-8M files -> batches ready for the model.

``make_loader(pattern, config, training=True, epoch=e, rank=r, world_size=w)`` returns a DataLoader whose
batches are dicts:

- ``frames``: float32 ``[B, n_bagging, iterations, D]`` for frame-level data (sampled frames, dequantized,
  each frame L2-normalized over its full D), float32 ``[B, D]`` (L2-normalized) for video-level data;
- ``labels``: float32 ``[B, num_classes]`` multi-hot (all zero for files without labels);
- ``ids``: list of B video ids; ``num_frames``: int64 ``[B]``, the real frames the example's frames were
  sampled from (half the video's under data augmentation; 1 for video-level data).

Sharding: the records of one epoch are split between the DDP ranks and the DataLoader workers of each
rank (``world_size * workers`` readers); every record is read by exactly one reader. With at least as
many files as readers, reader k reads files k, k + readers, ... of the epoch's file order; with fewer
files, reader k reads records k, k + readers, ... of the concatenated files (and skips the other
payloads with a seek). Ranks may thus get a few records more or fewer than others.

Randomness (training): the file order depends on (seed, epoch) only, so that all readers agree on the
split; the record shuffle buffer and the frame sampling of a reader on (seed, epoch, rank, worker).
Evaluation reads files in sorted order without shuffling, and samples each video's frames from a seed
of (seed, file, record): the same frames whatever the number of ranks and workers.

The work per video is what the model needs: the record's bytes are kept, frame indices are drawn, and
only the sampled frames are copied, dequantized and normalized, straight into the batch tensor.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from compactvid.config import Config
from compactvid.data.paths import expand_pattern
from compactvid.data.sampling import (augmentation_halves, dequantize_normalize_, l2_normalize_,
                                      sample_frame_indices)
from compactvid.data.tfrecord import Record, iter_records
from compactvid.data.yt8m import QuantizedVideo, ReadReport, RecordDecoder, Video, iter_decoded
from compactvid.errors import DataError

log = logging.getLogger(__name__)


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized tensor for a batch. In a DataLoader worker it is allocated in shared memory, so
    that sending it to the main process copies nothing (as DataLoader's own collate does); in the main
    process through numpy, whose large allocations use transparent huge pages (fewer page faults)."""
    if get_worker_info() is not None:
        numel = int(np.prod(shape))
        storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)
        return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
    return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))


class _Batcher:
    """Fills the tensors of one batch example by example."""

    def __init__(self, batch_size: int, frame_shape: tuple[int, ...], num_classes: int):
        self.frames = _empty((batch_size, *frame_shape), torch.float32)
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
                 world_size: int = 1, batch_size: int | None = None):
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
        records = self._records(reader, readers, report)
        if self.shuffle_buffer > 1:
            records = self._shuffled(records, rng)

        def decode(item: tuple[int, Record]) -> tuple[int, Record, QuantizedVideo | Video]:
            number, record = item
            decoded = self.decoder.decode_frames(record) if self.frame_level else self.decoder.decode_video(record)
            return number, record, decoded

        if self.frame_level:
            frame_shape: tuple[int, ...] = (self.n_bagging, self.iterations, self.decoder.dim)
            scratch = np.empty((self.n_bagging * self.iterations, self.decoder.dim), dtype=np.uint8)
        else:
            frame_shape = (self.decoder.dim,)
        batcher = _Batcher(self.batch_size, frame_shape, self.num_classes)
        for number, record, video in iter_decoded(records, decode, self.skip_corrupt, report):
            if self.frame_level:
                video_rng = rng if self.training else np.random.default_rng([self.seed, number, record.index])
                for start, stop in (augmentation_halves(video.num_frames) if self.augment
                                    else [(0, video.num_frames)]):
                    slot = batcher.add(video.id, video.labels, stop - start)
                    self._fill_frames(slot, video, start, stop, video_rng, scratch)
                    if batcher.full():
                        yield batcher.batch()
                        batcher = _Batcher(self.batch_size, frame_shape, self.num_classes)
            else:
                slot = batcher.add(video.id, video.labels, 1)
                slot.copy_(torch.from_numpy(video.features))
                l2_normalize_(slot)
                if batcher.full():
                    yield batcher.batch()
                    batcher = _Batcher(self.batch_size, frame_shape, self.num_classes)
        if batcher.ids:
            yield batcher.batch()

    def _fill_frames(self, slot: torch.Tensor, video: QuantizedVideo, start: int, stop: int,
                     rng: np.random.Generator, scratch: np.ndarray) -> None:
        """Sample frames of video[start:stop] into `slot` ``[n_bagging, iterations, D]``: gather the
        quantized bytes, then dequantize and normalize them in place."""
        flat = slot.view(-1, slot.shape[-1])
        if stop <= start:
            flat.zero_()
            return
        indices = sample_frame_indices(rng, stop - start, self.iterations, self.n_bagging,
                                       self.random_frames).reshape(-1) + start
        column = 0
        for frames in video.frames:
            width = frames.shape[1]
            np.take(frames, indices, axis=0, out=scratch[:, column:column + width], mode="clip")
            column += width
        flat.copy_(torch.from_numpy(scratch))
        dequantize_normalize_(flat)


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
                world_size: int = 1, batch_size: int | None = None) -> VideoLoader:
    """A DataLoader over the files of `pattern` (comma-separated globs, any fsspec path) for one epoch.

    training=True: shuffled (file order and a record buffer), frames sampled per the config, data
    augmentation per ``--data_augmentation``. training=False: every record of this rank's share once,
    in order, deterministic sampling, no augmentation. `batch_size` defaults to ``config.batch_size``.
    See the module docstring for the batch layout and sharding.
    """
    files = expand_pattern(pattern)
    dataset = YT8MDataset(files, config, training=training, epoch=epoch, rank=rank, world_size=world_size,
                          batch_size=batch_size)
    workers = num_workers(config.num_readers)
    return VideoLoader(dataset, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
                       prefetch_factor=2 if workers else None, persistent_workers=False)
