"""Small YouTube-8M-format records for the data tests, written with the package's own writers."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from compactvid.data import proto
from compactvid.data.tfrecord import TFRecordWriter


def frame_payload(video_id: str, labels: Sequence[int] | None, frames: Sequence[np.ndarray], *,
                  names: Sequence[str] = ("rgb", "audio"), id_key: str = "id", extra_context: dict | None = None,
                  extra_lists: dict | None = None) -> bytes:
    """A serialized SequenceExample; `frames[i]` is uint8 ``[num_frames, size_i]`` for feature names[i]."""
    context = {id_key: video_id.encode()}
    if labels is not None:
        context["labels"] = list(labels)
    context.update(extra_context or {})
    lists = {name: [row.tobytes() for row in values] for name, values in zip(names, frames)}
    lists.update(extra_lists or {})
    return proto.make_sequence_example(context, lists).SerializeToString()


def random_video(rng: np.random.Generator, num_frames: int, sizes: Sequence[int] = (1024, 128)) -> list[np.ndarray]:
    return [rng.integers(0, 256, (num_frames, size), dtype=np.uint8) for size in sizes]


def video_payload(video_id: str, labels: Sequence[int] | None, features: dict[str, np.ndarray],
                  id_key: str = "id") -> bytes:
    """A serialized video-level Example."""
    values: dict = {id_key: video_id.encode(), **{k: np.asarray(v, dtype=np.float32) for k, v in features.items()}}
    if labels is not None:
        values["labels"] = list(labels)
    return proto.make_example(values).SerializeToString()


def write_file(path: str, payloads: Sequence[bytes]) -> str:
    with TFRecordWriter(str(path)) as writer:
        for payload in payloads:
            writer.write(payload)
    return str(path)


def write_frame_files(directory, counts: Sequence[int], *, frames: int | Sequence[int] = 3, seed: int = 0,
                      sizes: Sequence[int] = (8, 4), num_classes: int = 10, labels: bool = True) -> list[str]:
    """Files with counts[i] small videos each (ids f{i}-r{j}); returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, count in enumerate(counts):
        payloads = []
        for j in range(count):
            n = frames if isinstance(frames, int) else frames[(i + j) % len(frames)]
            video_labels = rng.choice(num_classes, size=2, replace=False).tolist() if labels else None
            payloads.append(frame_payload(f"f{i}-r{j}", video_labels, random_video(rng, n, sizes)))
        paths.append(write_file(f"{directory}/part{i:02d}.tfrecord", payloads))
    return paths
