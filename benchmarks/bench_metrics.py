"""Speed of compactvid.metrics against the original's per-video approach, on YouTube-8M-sized inputs.

The baseline re-implements the algorithm of google/youtube-8m's eval_util.py (which the seed used):
per-video argpartition into Python (class, score, label) triplets, one heap per class plus a global heap
fed pair by pair, PERR in a per-video loop, and at the end a Python sort per class and one of the global
pool. Both implementations get the same predictions (sigmoid scores that favour the true labels) and
their numbers are compared.

    python benchmarks/bench_metrics.py --json bench_metrics.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import statistics
import time

import numpy as np
import torch

from compactvid.metrics import EvaluationMetrics

METRIC_KEYS = ("gap", "map", "hit_at_1", "perr")


def original_style_metrics(predictions: np.ndarray, labels: np.ndarray, top_k: int, batch_size: int) -> dict:
    """The original's evaluation, batch by batch: Python triplets and heaps, per-video loops."""
    num_videos, num_classes = predictions.shape
    class_heaps: list[list] = [[] for _ in range(num_classes)]
    class_positives = [0.0] * num_classes
    global_heap: list = []
    hits = precisions = 0.0
    for start in range(0, num_videos, batch_size):
        scores, truth = predictions[start : start + batch_size], labels[start : start + batch_size]
        hits += float(np.sum(truth[np.arange(truth.shape[0]), np.argmax(scores, 1)]))
        for row in range(truth.shape[0]):
            n = int(np.sum(truth[row]))
            chosen = np.argpartition(scores[row], -n)[-n:]
            precisions += sum(float(truth[row][c]) for c in chosen if scores[row][c] > 0) / chosen.size
        k = min(top_k, num_classes)
        per_class_scores: list[list] = [[] for _ in range(num_classes)]
        per_class_labels: list[list] = [[] for _ in range(num_classes)]
        for row in range(truth.shape[0]):
            for c in np.argpartition(scores[row], -k)[-k:]:
                per_class_scores[c].append(scores[row][c])
                per_class_labels[c].append(truth[row][c])
        for c in range(num_classes):
            class_positives[c] += float(np.sum(truth[:, c]))
            for pair in zip(per_class_scores[c], per_class_labels[c]):
                heapq.heappush(class_heaps[c], pair)
                heapq.heappush(global_heap, pair)
    total_positives = sum(class_positives)
    class_aps = [_shuffled_sort_ap(heap, positives) for heap, positives in zip(class_heaps, class_positives)]
    return {
        "gap": _shuffled_sort_ap(global_heap, total_positives),
        "map": float(np.mean(class_aps)),
        "hit_at_1": hits / num_videos,
        "perr": precisions / num_videos,
    }


def _shuffled_sort_ap(pairs: list, num_positives: float) -> float:
    """Average precision as the original computes it: seeded shuffle, Python sort, loop."""
    if not pairs or num_positives == 0:
        return 0.0
    scores, truth = (np.array(column) for column in zip(*pairs))
    random.seed(0)
    shuffle = random.sample(range(len(scores)), len(scores))
    scores, truth = scores[shuffle], truth[shuffle]
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    found, ap = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if truth[i] > 0:
            found += 1
            ap += found / rank / num_positives
    return ap


def vectorized_metrics(predictions: torch.Tensor, labels: torch.Tensor, top_k: int, batch_size: int) -> dict:
    metrics = EvaluationMetrics(predictions.shape[1], top_k)
    for start in range(0, predictions.shape[0], batch_size):
        metrics.accumulate(predictions[start : start + batch_size], labels[start : start + batch_size], 0.0)
    return metrics.get()


def make_inputs(videos: int, classes: int, labels_per_video: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot labels (about `labels_per_video` each) and float32 sigmoid scores that favour them."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((videos, classes), dtype=np.float32) < labels_per_video / classes).astype(np.float32)
    logits = rng.standard_normal((videos, classes), dtype=np.float32) * 1.5 - 4.0 + 4.0 * labels
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32), labels


def time_runs(function, repeats: int) -> tuple[list[float], list[float], dict]:
    """Wall-clock and CPU (all threads of this process) seconds of each run, and the last result."""
    wall, cpu, result = [], [], {}
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=3862)
    parser.add_argument("--top_k", type=int, default=20)
    parser.add_argument("--labels_per_video", type=float, default=3.0)
    parser.add_argument("--batch_size", type=int, default=1024, help="the original eval.py's batch size")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the vectorized version")
    parser.add_argument("--baseline_repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="device of the vectorized version's inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()

    load_at_start = os.getloadavg()  # other work on the machine slows both implementations
    predictions, labels = make_inputs(args.videos, args.classes, args.labels_per_video, args.seed)
    device_predictions = torch.from_numpy(predictions).to(args.device)
    device_labels = torch.from_numpy(labels).to(args.device)
    vectorized_metrics(device_predictions[:64], device_labels[:64], args.top_k, 64)  # warm-up

    cases = [
        ("original per-video (baseline)", args.batch_size, args.baseline_repeats,
         lambda size: original_style_metrics(predictions, labels, args.top_k, size)),
        ("compactvid vectorized", args.batch_size, args.repeats,
         lambda size: vectorized_metrics(device_predictions, device_labels, args.top_k, size)),
        ("compactvid vectorized", args.videos, args.repeats,
         lambda size: vectorized_metrics(device_predictions, device_labels, args.top_k, size)),
    ]
    rows = []
    for name, size, repeats, run in cases:
        seconds, cpu_seconds, result = time_runs(lambda: run(size), repeats)
        rows.append({
            "implementation": name,
            "batch_size": size,
            "runs": repeats,
            "seconds_min": min(seconds),
            "seconds_median": statistics.median(seconds),
            "cpu_seconds_median": statistics.median(cpu_seconds),
            "metrics": {key: float(result[key]) for key in METRIC_KEYS},
        })
    baseline = rows[0]
    for row in rows:
        row["speedup_vs_baseline_median"] = baseline["seconds_median"] / row["seconds_median"]
        row["max_abs_difference_vs_baseline"] = max(
            abs(row["metrics"][key] - baseline["metrics"][key]) for key in METRIC_KEYS
        )

    report = {
        "benchmark": "metrics",
        "videos": args.videos,
        "classes": args.classes,
        "top_k": args.top_k,
        "labels_per_video": args.labels_per_video,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(args.device),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "load_average_at_start": load_at_start,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "rows": rows,
    }
    header = (
        f"{'implementation':32} {'batch':>6} {'min s':>8} {'median s':>9} {'cpu s':>7} {'speedup':>8} "
        f"{'max |diff|':>11}"
    )
    print(
        f"{args.videos} videos x {args.classes} classes, top_k={args.top_k}, device {report['device']}, "
        f"load average {load_at_start[0]:.1f}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['implementation']:32} {row['batch_size']:>6} {row['seconds_min']:>8.3f} "
            f"{row['seconds_median']:>9.3f} {row['cpu_seconds_median']:>7.3f} "
            f"{row['speedup_vs_baseline_median']:>7.1f}x "
            f"{row['max_abs_difference_vs_baseline']:>11.2e}"
        )
    print("metrics (baseline): " + ", ".join(f"{k}={baseline['metrics'][k]:.6f}" for k in METRIC_KEYS))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
