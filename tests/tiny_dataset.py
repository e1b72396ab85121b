"""Tiny, learnable YouTube-8M-format files for the training, evaluation and inference tests.

Frame-level SequenceExamples with small features (rgb 16 and audio 8 bytes per frame): each class has
its own mean pattern, a video's frames are the mean of its classes' patterns plus noise, quantized to
bytes as the real data. Written with the package's own TFRecord and protobuf writers.
"""

from __future__ import annotations

import os

import numpy as np

from compactvid.data.proto import make_example, make_sequence_example
from compactvid.data.tfrecord import TFRecordWriter

RGB, AUDIO, CLASSES = 16, 8, 5

# Flags that fit these files and build a small, quick DBoF network.
TINY_FLAGS = ["--feature_names=rgb,audio", f"--feature_sizes={RGB},{AUDIO}", f"--num_classes={CLASSES}",
              "--add_dbof", "--dbof_cluster_size=8", "--fc_hidden_size=8", "--iterations=4",
              "--batch_size=4", "--num_readers=0", "--moe_num_mixtures=2", "--base_learning_rate=0.01"]


def write_tiny_dataset(directory: str, num_videos: int, *, num_files: int = 2, labels: bool = True,
                       seed: int = 0, prefix: str = "train", rgb: int = RGB, audio: int = AUDIO,
                       classes: int = CLASSES, video_level: bool = False) -> list[str]:
    """Write `num_videos` videos into `num_files` files `<prefix>NNNN.tfrecord`; returns their ids in order.

    The class patterns depend on `classes` and the sizes only, so files written with different seeds
    (train / validate / test) share them. `video_level`: Examples with mean_rgb and mean_audio instead."""
    patterns = np.random.default_rng(12345).uniform(-1.5, 1.5, size=(classes, rgb + audio))
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    ids = []
    for file, videos in enumerate(np.array_split(np.arange(num_videos), num_files)):
        with TFRecordWriter(os.path.join(directory, f"{prefix}{file:04d}.tfrecord")) as writer:
            for v in videos:
                video_classes = rng.choice(classes, size=rng.integers(1, 3), replace=False)
                frames = (patterns[video_classes].mean(axis=0)
                          + rng.normal(0, 0.3, size=(rng.integers(3, 12), rgb + audio)))
                quantized = np.clip(np.round((frames + 2) * 255 / 4), 0, 255).astype(np.uint8)
                video_id = f"{prefix}{v:05d}"
                context = {"id": video_id.encode()}
                if labels:
                    context["labels"] = sorted(int(c) for c in video_classes)
                if video_level:
                    mean = quantized.astype(np.float32).mean(axis=0) * 4 / 255 - 2
                    writer.write(make_example({**context, "mean_rgb": mean[:rgb].tolist(),
                                               "mean_audio": mean[rgb:].tolist()}).SerializeToString())
                    ids.append(video_id)
                    continue
                writer.write(make_sequence_example(
                    context, {"rgb": [f[:rgb].tobytes() for f in quantized],
                              "audio": [f[rgb:].tobytes() for f in quantized]}).SerializeToString())
                ids.append(video_id)
    return ids


def train_tiny_run(train_dir: str, data_dir: str, *extra: str) -> None:
    """Write tiny train/validate files into `data_dir` and train one epoch on them into `train_dir`."""
    from compactvid.cli import main

    write_tiny_dataset(data_dir, 30)
    write_tiny_dataset(data_dir, 10, prefix="validate", seed=1)
    status = main(["train", f"--train_dir={train_dir}", f"--train_data_pattern={data_dir}/train*.tfrecord",
                   f"--eval_data_pattern={data_dir}/validate*.tfrecord", "--num_epochs=1", *TINY_FLAGS, *extra])
    assert status == 0
