"""The original TensorFlow reader's work on YouTube-8M frame-level files, timed on one core.

Run with a Python that has TensorFlow (it is not a dependency of compactvid), e.g. from
`bench_data.py --tf_python PATH`, which compares it with compactvid's loader on the same files in the
same run. What it does per video is what the seed's YT8MFrameFeatureReader did (readers.py): parse the
SequenceExample (`id`, `labels`, `rgb`, `audio`), decode the bytes, dequantize, cap and pad every video to
300 frames of float32, labels to a dense multi-hot vector, batches of --batch_size videos (its queue's
shuffle_batch_join; here tf.data's batch, without the shuffling) on one thread.

usage: python tf_reader_baseline.py --data_pattern PATTERN [--passes 3] [--num_classes 3862] [--batch_size 80]
prints one JSON object: {"videos": N, "seconds": [...], "cpu_seconds": [...], "videos_per_sec": best}
"""

import argparse
import glob
import json
import time

import tensorflow as tf


def frames(sequence, name: str, size: int, max_frames: int) -> tf.Tensor:
    """[max_frames, size] float32: the feature's frames decoded, dequantized, capped and zero-padded."""
    decoded = tf.reshape(tf.cast(tf.io.decode_raw(sequence[name], tf.uint8), tf.float32), [-1, size])
    decoded = decoded[:max_frames] * (4.0 / 255.0) + (4.0 / 512.0 - 2.0)
    return tf.pad(decoded, [[0, max_frames - tf.shape(decoded)[0]], [0, 0]])


def make_dataset(files: list[str], num_classes: int, batch_size: int, max_frames: int = 300) -> tf.data.Dataset:
    context = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    sequence = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string),
                "audio": tf.io.FixedLenSequenceFeature([], tf.string)}

    def parse(serialized):
        ctx, seq = tf.io.parse_single_sequence_example(serialized, context_features=context,
                                                       sequence_features=sequence)
        labels = tf.sparse.to_dense(ctx["labels"])
        multi_hot = tf.scatter_nd(labels[:, None], tf.ones_like(labels, tf.bool), [num_classes])
        video = tf.concat([frames(seq, "rgb", 1024, max_frames), frames(seq, "audio", 128, max_frames)], 1)
        num_frames = tf.minimum(tf.shape(seq["rgb"])[0], max_frames)
        return ctx["id"], video, multi_hot, num_frames

    return tf.data.TFRecordDataset(files).map(parse).batch(batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_pattern", required=True)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--num_classes", type=int, default=3862)
    parser.add_argument("--batch_size", type=int, default=80, help="videos per batch, as the seed's 80")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    files = sorted(f for p in args.data_pattern.split(",") for f in glob.glob(p))
    dataset = make_dataset(files, args.num_classes, args.batch_size).with_options(options)
    seconds, cpu_seconds, videos = [], [], 0
    for _ in range(args.passes):
        wall, cpu = time.perf_counter(), time.process_time()
        videos = sum(int(ids.shape[0]) for ids, *_ in dataset)
        seconds.append(time.perf_counter() - wall)
        cpu_seconds.append(time.process_time() - cpu)
    print(json.dumps({"videos": videos, "seconds": seconds, "cpu_seconds": cpu_seconds,
                      "videos_per_sec": videos / min(seconds), "videos_per_cpu_sec": videos / min(cpu_seconds)}))


if __name__ == "__main__":
    main()
