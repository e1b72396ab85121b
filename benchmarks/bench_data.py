"""Throughput of the training input pipeline: YouTube-8M frame-level files -> the batches the model gets.

Measured in the same run, on the same files, after one untimed pass (so the files are in the page cache):

- raw read: TFRecord framing and CRC checks only;
- bound: raw read plus writing each video's share of a uint8 batch (2 x 150 x 1152 bytes, copied from
  its record, into two alternating batch buffers of 80 videos as the loader's): the memory traffic any
  reader producing these batches must at least cause;
- baseline: what the original TensorFlow reader does per video (protobuf parse of the whole
  SequenceExample, one bytes object per frame joined per feature, all frames dequantized to float32
  and padded to 300 frames), without its batching and normalization, so the baseline is if anything
  flattered; "baseline_with_batching" also copies each padded video into a float32 batch, as the
  original's queue did before its model sampled frames;
- tensorflow (with `--tf_python PATH`, a Python that has TensorFlow): the original reader itself, tf.data
  with `parse_single_sequence_example`, decode, dequantize, pad to 300, on one thread
  (`tf_reader_baseline.py`, run in a subprocess that times its own passes, so TensorFlow's import is
  not counted); when given, it is the baseline of record, as the issue names it;
- compactvid: `make_loader` with the seed's settings (batch 80, iterations 15, n_bagging 10,
  data augmentation on), in one process and one thread, then with 2 DataLoader workers. The headline
  (`videos_per_sec`) is the uint8 batches the model receives (``dequantize=False``: `prepare_frames`
  dequantizes and normalizes them on the model's device); float32 batches are reported beside it.

Usage:
    python benchmarks/bench_data.py --make_data /tmp/bench_yt8m --num_videos 2000
    python benchmarks/bench_data.py --data_pattern '/tmp/bench_yt8m/*.tfrecord' --json bench_data.json \
        --tf_python /tmp/tfvenv/bin/python     # after: python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from compactvid.config import Config
from compactvid.data import proto
from compactvid.data.loader import make_loader
from compactvid.data.paths import expand_pattern
from compactvid.data.tfrecord import TFRecordWriter, iter_records
from compactvid.data.yt8m import dequantize


def make_data(directory: str, num_videos: int, files: int, seed: int) -> None:
    """Frame-level files of realistic size: 100-360 frames per video (some over 300), 1024 + 128 bytes
    per frame, 1-6 labels out of 3862."""
    rng = np.random.default_rng(seed)
    Path(directory).mkdir(parents=True, exist_ok=True)
    per_file = -(-num_videos // files)
    for f in range(files):
        with TFRecordWriter(f"{directory}/train{f:04d}.tfrecord") as writer:
            for v in range(f * per_file, min(num_videos, (f + 1) * per_file)):
                n = int(rng.integers(100, 361))
                frames = rng.integers(0, 256, (n, 1152), dtype=np.uint8)
                labels = rng.choice(3862, size=int(rng.integers(1, 7)), replace=False).tolist()
                example = proto.make_sequence_example(
                    {"id": f"v{v:06d}".encode(), "labels": labels},
                    {"rgb": [row[:1024].tobytes() for row in frames], "audio": [row[1024:].tobytes() for row in frames]})
                writer.write(example.SerializeToString())
    print(f"wrote {num_videos} videos in {files} files under {directory}")


def raw_read(files: list[str]) -> int:
    return sum(1 for path in files for _ in iter_records(path))


def bound(files: list[str], videos_per_batch: int = 80, frames: int = 300, dim: int = 1152) -> int:
    """Raw read, plus each video's bytes of a uint8 batch (`frames` x `dim`: two examples of 150 frames)
    copied from its record (shorter: its bytes are repeated) into batch buffers of the loader's size
    (`videos_per_batch` videos), two in turn, as the loader's pool has them while its consumer holds one
    batch and the next is filled."""
    buffers = [np.zeros((videos_per_batch, frames * dim), dtype=np.uint8) for _ in range(2)]
    count = 0
    for path in files:
        for record in iter_records(path):
            payload = np.frombuffer(record.payload, dtype=np.uint8)
            slot = buffers[count // videos_per_batch % 2][count % videos_per_batch]
            for start in range(0, len(slot), len(payload)):
                part = slot[start:start + len(payload)]
                part[:] = payload[:len(part)]
            count += 1
    return count


def baseline(files: list[str], batch_size: int = 0, max_frames: int = 300) -> int:
    """The original reader's work per video (see the module docstring); with `batch_size`, each padded
    video is also copied into a float32 batch ``[batch_size, 300, D]``, as the original's batching queue
    did before the model (which then sampled and normalized frames in its graph)."""
    count = 0
    batch = None
    for path in files:
        for record in iter_records(path):
            example = proto.SequenceExample.FromString(record.payload)
            values = example.context.feature["labels"].int64_list.value
            dense = np.zeros(3862, dtype=bool)
            dense[np.fromiter(values, dtype=np.int64, count=len(values))] = True
            matrices = []
            for name, size in (("rgb", 1024), ("audio", 128)):
                frames = example.feature_lists.feature_list[name].feature
                raw = np.frombuffer(b"".join(f.bytes_list.value[0] for f in frames), dtype=np.uint8).reshape(-1, size)
                padded = np.zeros((max_frames, size), dtype=np.float32)
                kept = raw[:max_frames]
                padded[:len(kept)] = dequantize(kept)
                matrices.append(padded)
            video = np.concatenate(matrices, axis=1)
            if batch_size:
                if count % batch_size == 0:
                    batch = np.empty((batch_size, *video.shape), dtype=np.float32)
                batch[count % batch_size] = video
            count += 1
    return count


def pipeline(pattern: str, readers: int, dequantize: bool) -> int:
    config = Config(batch_size=80, iterations=15, n_bagging=10, data_augmentation=True, num_readers=readers,
                    num_classes=3862)
    examples = 0
    for batch in make_loader(pattern, config, training=True, dequantize=dequantize):
        examples += len(batch["ids"])
    return examples // 2  # data augmentation: two examples per video (every benchmark video has >= 2 frames)


def tensorflow_reader(tf_python: str, pattern: str) -> tuple[int, float, float]:
    """(videos, seconds, CPU seconds) of the original TensorFlow reader's second pass over the files,
    timed inside its own process (the first pass warms TensorFlow's kernels)."""
    script = str(Path(__file__).with_name("tf_reader_baseline.py"))
    done = subprocess.run([tf_python, script, "--data_pattern", pattern, "--passes", "2"], check=True,
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["videos"], min(result["seconds"]), min(result["cpu_seconds"])


def measure(runs: dict, repeats: int) -> dict[str, dict[str, float]]:
    """Videos per second of each run, best of `repeats` passes, in wall-clock time and in this process's
    CPU time (less sensitive to other processes on a shared machine). The runs take turns, so that a
    change of load on the machine affects all of them alike."""
    wall = {name: float("inf") for name in runs}
    cpu = dict(wall)
    counts = {}
    for _ in range(repeats):
        for name, (function, arguments) in runs.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            counted = function(*arguments)
            seconds, cpu_seconds = time.perf_counter() - start_wall, time.process_time() - start_cpu
            if isinstance(counted, tuple):  # a subprocess that timed itself
                counted, seconds, cpu_seconds = counted
            counts[name] = counted
            wall[name] = min(wall[name], seconds)
            cpu[name] = min(cpu[name], cpu_seconds)
    return {name: {"videos": counts[name], "seconds": round(wall[name], 3),
                   "videos_per_sec": round(counts[name] / wall[name], 1), "cpu_seconds": round(cpu[name], 3),
                   "videos_per_cpu_sec": round(counts[name] / cpu[name], 1)} for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_pattern", help="frame-level TFRecord files to read")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--make_data", metavar="DIR", help="write benchmark files to DIR and exit")
    parser.add_argument("--num_videos", type=int, default=2000)
    parser.add_argument("--num_files", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each reader; the best is kept")
    parser.add_argument("--tf_python", help="a Python with TensorFlow: also time the original TF reader, "
                                            "then the baseline of record")
    args = parser.parse_args()
    if args.make_data:
        make_data(args.make_data, args.num_videos, args.num_files, args.seed)
        return
    if not args.data_pattern:
        parser.error("--data_pattern (or --make_data) is required")
    torch.set_num_threads(1)
    files = expand_pattern(args.data_pattern)
    raw_read(files)  # page cache
    runs = {
        "raw_read": (raw_read, (files,)),
        "bound": (bound, (files,)),
        "baseline": (baseline, (files,)),
        "baseline_with_batching": (baseline, (files, 80)),
        "compactvid_uint8": (pipeline, (args.data_pattern, 0, False)),
        "compactvid_float32": (pipeline, (args.data_pattern, 0, True)),
        "compactvid_uint8_2_workers": (pipeline, (args.data_pattern, 2, False)),
        "compactvid_float32_2_workers": (pipeline, (args.data_pattern, 2, True)),
    }
    if args.tf_python:
        runs = {"tensorflow": (tensorflow_reader, (args.tf_python, args.data_pattern)), **runs}
    results = measure(runs, args.repeats)
    base = results["tensorflow" if args.tf_python else "baseline"]
    size = sum(os.path.getsize(f) for f in files if "://" not in f)
    print(f"{len(files)} files, {base['videos']} videos, {size / 2**20:.0f} MiB; best of {args.repeats} passes")
    print(f"{'reader':<30} {'videos/s':>9} {'x base':>7} {'videos/cpu-s':>13} {'x base':>7}")
    for name, row in results.items():
        cpu = f"{row['videos_per_cpu_sec']:>13.1f} {row['videos_per_cpu_sec'] / base['videos_per_cpu_sec']:>7.2f}"
        if "workers" in name:  # the workers' CPU time is not this process's
            cpu = f"{'-':>13} {'-':>7}"
        print(f"{name:<30} {row['videos_per_sec']:>9.1f} {row['videos_per_sec'] / base['videos_per_sec']:>7.2f} {cpu}")

    def speedup(name: str, key: str = "videos_per_sec") -> float:
        return round(results[name][key] / base[key], 2)

    output = {
        "videos_per_sec": results["compactvid_uint8"]["videos_per_sec"],
        "videos_per_cpu_sec": results["compactvid_uint8"]["videos_per_cpu_sec"],
        "videos_per_sec_float32": results["compactvid_float32"]["videos_per_sec"],
        "videos_per_sec_2_workers": results["compactvid_uint8_2_workers"]["videos_per_sec"],
        "videos_per_sec_float32_2_workers": results["compactvid_float32_2_workers"]["videos_per_sec"],
        "raw_read_videos_per_sec": results["raw_read"]["videos_per_sec"],
        "bound_videos_per_sec": results["bound"]["videos_per_sec"],
        "baseline": "tensorflow" if args.tf_python else "baseline",
        "baseline_videos_per_sec": base["videos_per_sec"],
        "tensorflow_videos_per_sec": results["tensorflow"]["videos_per_sec"] if args.tf_python else None,
        "python_baseline_videos_per_sec": results["baseline"]["videos_per_sec"],
        "baseline_with_batching_videos_per_sec": results["baseline_with_batching"]["videos_per_sec"],
        "speedup_vs_baseline": speedup("compactvid_uint8"),
        "speedup_vs_baseline_cpu_time": speedup("compactvid_uint8", "videos_per_cpu_sec"),
        "speedup_vs_baseline_float32": speedup("compactvid_float32"),
        "speedup_vs_baseline_float32_cpu_time": speedup("compactvid_float32", "videos_per_cpu_sec"),
        "results": results,
        "settings": {"batch_size": 80, "iterations": 15, "n_bagging": 10, "data_augmentation": True,
                     "torch_threads": 1, "data_pattern": args.data_pattern, "files": len(files),
                     "megabytes": round(size / 2**20, 1), "repeats": args.repeats},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "load_average": [round(x, 2) for x in os.getloadavg()]},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
