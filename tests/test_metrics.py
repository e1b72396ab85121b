"""Tests of compactvid.metrics against a plain float64 implementation of the YouTube-8M definitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from compactvid.metrics import EvaluationMetrics, gap, hit_at_1, mean_ap, perr

KEYS = ("gap", "map", "hit_at_1", "perr", "loss")


def reference_metrics(predictions: np.ndarray, labels: np.ndarray, top_k: int) -> dict[str, float]:
    """The YouTube-8M metrics written out with loops, one definition at a time (no loss)."""
    scores = np.asarray(predictions, dtype=np.float64)
    truth = np.asarray(labels) > 0
    num_videos, num_classes = scores.shape
    k = min(top_k, num_classes)

    def ranked_classes(video: int) -> list[int]:
        return sorted(range(num_classes), key=lambda c: scores[video, c], reverse=True)

    def average_precision(ranked_is_label: list[bool], num_labels: int) -> float:
        if num_labels == 0:
            return 0.0
        found, total = 0, 0.0
        for rank, is_label in enumerate(ranked_is_label, start=1):
            if is_label:
                found += 1
                total += found / rank
        return total / num_labels

    pairs = []  # (score, class, is_label) of each video's top-k classes
    for video in range(num_videos):
        for c in ranked_classes(video)[:k]:
            pairs.append((scores[video, c], c, bool(truth[video, c])))
    pairs.sort(key=lambda pair: pair[0], reverse=True)
    global_ap = average_precision([p[2] for p in pairs], int(truth.sum()))
    class_aps = [
        average_precision([p[2] for p in pairs if p[1] == c], int(truth[:, c].sum())) for c in range(num_classes)
    ]

    hits, precisions = 0, 0.0
    for video in range(num_videos):
        order = ranked_classes(video)
        hits += int(truth[video, order[0]])
        n = int(truth[video].sum())
        if n:
            precisions += sum(1 for c in order[:n] if truth[video, c] and scores[video, c] > 0) / n
    return {
        "gap": global_ap,
        "map": sum(class_aps) / num_classes,
        "hit_at_1": hits / num_videos,
        "perr": precisions / num_videos,
    }


def tie_free_scores(rng: np.random.Generator, shape: tuple[int, int], dtype=np.float64) -> np.ndarray:
    """Scores in (0, 1), all distinct even in float32."""
    count = shape[0] * shape[1]
    scores = ((rng.permutation(count) + 1) / (count + 1)).reshape(shape).astype(dtype)
    assert np.unique(scores).size == count
    return scores


def random_labels(rng: np.random.Generator, shape: tuple[int, int], density: float) -> np.ndarray:
    return (rng.random(shape) < density).astype(np.float32)


def one_shot(predictions, labels, top_k: int = 20, loss: float = 0.0) -> dict[str, float]:
    metrics = EvaluationMetrics(predictions.shape[1], top_k)
    metrics.accumulate(predictions, labels, loss)
    return metrics.get()


def assert_metrics_close(actual: dict[str, float], expected: dict[str, float], tol: float = 1e-6) -> None:
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=tol), key


@pytest.mark.parametrize(
    ("videos", "classes", "top_k", "density", "dtype"),
    [
        (300, 100, 20, 0.03, np.float32),
        (200, 30, 5, 0.1, np.float64),
        (150, 7, 20, 0.3, np.float32),  # fewer classes than top_k
        (64, 500, 20, 0.004, np.float64),  # many classes without labels
        (1, 5, 3, 0.5, np.float32),
    ],
)
def test_metrics_equal_reference_on_tie_free_inputs(videos, classes, top_k, density, dtype):
    rng = np.random.default_rng(videos * classes)
    predictions = tie_free_scores(rng, (videos, classes), dtype)
    labels = random_labels(rng, (videos, classes), density)
    expected = reference_metrics(predictions, labels, top_k)

    assert_metrics_close(one_shot(predictions, labels, top_k), expected)
    assert gap(predictions, labels, top_k) == pytest.approx(expected["gap"], abs=1e-6)
    assert mean_ap(predictions, labels, top_k) == pytest.approx(expected["map"], abs=1e-6)
    assert hit_at_1(predictions, labels) == pytest.approx(expected["hit_at_1"], abs=1e-6)
    assert perr(predictions, labels) == pytest.approx(expected["perr"], abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    videos=st.integers(1, 25),
    classes=st.integers(1, 25),
    top_k=st.integers(1, 30),
    density=st.sampled_from([0.0, 0.05, 0.2, 0.6, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_metrics_equal_reference_on_small_random_inputs(videos, classes, top_k, density, seed):
    rng = np.random.default_rng(seed)
    predictions = tie_free_scores(rng, (videos, classes), np.float32)
    labels = random_labels(rng, (videos, classes), density)
    assert_metrics_close(one_shot(predictions, labels, top_k), reference_metrics(predictions, labels, top_k))


def test_hand_computed_example():
    predictions = np.array([[0.9, 0.5, 0.1], [0.2, 0.8, 0.6]])
    labels = np.array([[1, 0, 1], [0, 1, 0]])
    # Pool at k=2: 0.9 (+, class 0), 0.8 (+, class 1), 0.6 (-, class 2), 0.5 (-, class 1); 3 labels in all.
    result = one_shot(predictions, labels, top_k=2)
    assert result["gap"] == pytest.approx((1 / 1 + 2 / 2) / 3)
    # Class 0: AP 1; class 1: AP 1; class 2: its only label is outside video 0's top 2, AP 0.
    assert result["map"] == pytest.approx(2 / 3)
    assert result["hit_at_1"] == 1.0
    # Video 0 has 2 labels, top 2 = classes 0, 1 -> 1/2; video 1 has 1 label, top 1 = class 1 -> 1.
    assert result["perr"] == pytest.approx(0.75)


def test_no_positives_anywhere_gives_zero():
    rng = np.random.default_rng(0)
    predictions = tie_free_scores(rng, (20, 10))
    result = one_shot(predictions, np.zeros((20, 10)), loss=0.25)
    assert result == {"gap": 0.0, "map": 0.0, "hit_at_1": 0.0, "perr": 0.0, "loss": 0.25}


def test_videos_without_labels_count_in_every_average():
    predictions = np.array([[0.9, 0.1], [0.8, 0.2]])
    labelled = np.array([[1, 0]])
    both = one_shot(predictions, np.array([[1, 0], [0, 0]]), top_k=1)
    alone = one_shot(predictions[:1], labelled, top_k=1)
    assert both["hit_at_1"] == 0.5 and alone["hit_at_1"] == 1.0
    assert both["perr"] == 0.5 and alone["perr"] == 1.0
    # The unlabelled video's top pair (0.8, negative) ranks below the positive 0.9: GAP unchanged.
    assert both["gap"] == alone["gap"] == 1.0


def test_perr_ignores_labels_predicted_with_non_positive_scores():
    predictions = np.array([[0.0, -1.0]])
    labels = np.array([[1, 0]])
    assert hit_at_1(predictions, labels) == 1.0
    assert perr(predictions, labels) == 0.0


def test_ties_rank_negatives_first_whatever_the_video_order():
    predictions = np.array([[0.5, 0.1], [0.5, 0.1]], dtype=np.float32)
    labels = np.array([[0, 0], [1, 0]])
    # Pool at k=1: (0.5, -) and (0.5, +); the negative ranks first: AP = (1/2) / 1.
    assert gap(predictions, labels, top_k=1) == 0.5
    assert gap(predictions[::-1], labels[::-1], top_k=1) == 0.5
    assert gap(predictions.astype(np.float64), labels, top_k=1) == 0.5


def test_torch_and_numpy_inputs_of_any_label_dtype_agree():
    rng = np.random.default_rng(1)
    predictions = tie_free_scores(rng, (100, 40), np.float32)
    labels = random_labels(rng, (100, 40), 0.1)
    expected = one_shot(predictions, labels)
    assert one_shot(torch.from_numpy(predictions), torch.from_numpy(labels)) == expected
    assert one_shot(torch.from_numpy(predictions), torch.from_numpy(labels).bool()) == expected
    assert one_shot(predictions, labels.astype(np.int64)) == expected
    assert one_shot(predictions.astype(np.float64), labels) == expected


def test_half_precision_predictions_equal_their_float32_values():
    rng = np.random.default_rng(2)
    predictions = torch.rand(80, 30, generator=torch.Generator().manual_seed(2)).half()
    labels = torch.from_numpy(random_labels(rng, (80, 30), 0.1))
    assert one_shot(predictions, labels) == one_shot(predictions.float(), labels)


def test_streaming_batches_equal_one_shot_with_loss_weighted_per_video():
    rng = np.random.default_rng(3)
    predictions = tie_free_scores(rng, (230, 50), np.float32)
    labels = random_labels(rng, (230, 50), 0.05)
    bounds = [0, 64, 64, 128, 200, 230]  # includes an empty batch and a short last batch
    losses = [0.5, 9.0, 1.5, 2.0, 3.0]
    streaming = EvaluationMetrics(50)
    for (start, stop), loss in zip(zip(bounds, bounds[1:]), losses):
        batch = streaming.accumulate(predictions[start:stop], labels[start:stop], loss)
        if stop > start:
            assert batch["hit_at_1"] == pytest.approx(hit_at_1(predictions[start:stop], labels[start:stop]))
            assert batch["loss"] == loss
    result = streaming.get()
    expected = one_shot(predictions, labels)
    for key in ("gap", "map", "hit_at_1", "perr"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    assert streaming.num_videos == 230
    assert result["loss"] == pytest.approx((64 * 0.5 + 64 * 1.5 + 72 * 2.0 + 30 * 3.0) / 230)


def test_per_video_losses_are_averaged():
    metrics = EvaluationMetrics(3)
    metrics.accumulate(np.eye(3), np.eye(3), np.array([1.0, 2.0, 6.0]))
    metrics.accumulate(np.eye(3)[:1], np.eye(3)[:1], torch.tensor(5.0))
    assert metrics.get()["loss"] == pytest.approx((1 + 2 + 6 + 5) / 4)


def test_merge_of_shards_equals_one_pass_and_clear_forgets():
    rng = np.random.default_rng(4)
    predictions = tie_free_scores(rng, (300, 40), np.float32)
    labels = random_labels(rng, (300, 40), 0.08)
    shards = [EvaluationMetrics(40) for _ in range(3)]
    for index, shard in enumerate(shards):
        shard.accumulate(predictions[index::3], labels[index::3], float(index))
    merged = EvaluationMetrics(40)
    for shard in shards:
        merged.merge(shard)
    expected = one_shot(predictions, labels, loss=1.0)
    result = merged.get()
    for key in KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    merged.clear()
    assert merged.num_videos == 0
    with pytest.raises(ValueError, match="no videos"):
        merged.get()


def test_all_reduce_without_process_group_is_a_copy():
    metrics = EvaluationMetrics(3)
    metrics.accumulate(np.eye(3), np.eye(3), 1.0)
    reduced = metrics.all_reduce()
    assert reduced is not metrics and reduced.get() == metrics.get()


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="top_k"):
        EvaluationMetrics(10, top_k=0)
    with pytest.raises(ValueError, match="num_classes"):
        EvaluationMetrics(0)
    metrics = EvaluationMetrics(4)
    with pytest.raises(ValueError, match="5 classes"):
        metrics.accumulate(np.zeros((2, 5)), np.zeros((2, 5)), 0.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.accumulate(np.zeros((2, 4)), np.zeros((3, 4)), 0.0)
    with pytest.raises(ValueError, match="top_k=20"):
        metrics.merge(EvaluationMetrics(4, top_k=5))
    with pytest.raises(ValueError, match=r"\[videos, classes\]"):
        gap(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"\[videos, classes\]"):
        perr(np.zeros((3, 0)), np.zeros((3, 0)))


def _distributed_worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        predictions, labels = _shared_data()
        metrics = EvaluationMetrics(predictions.shape[1])
        # Uneven, interleaved shares, in several batches per process.
        share = np.arange(rank, predictions.shape[0], world_size)[: 150 if rank == 0 else None]
        for batch in np.array_split(share, 3):
            metrics.accumulate(torch.from_numpy(predictions[batch]), torch.from_numpy(labels[batch]), 0.5 + rank)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(metrics.all_reduce().get()))
    finally:
        dist.destroy_process_group()


def _shared_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return tie_free_scores(rng, (400, 60), np.float32), random_labels(rng, (400, 60), 0.05)


@pytest.mark.slow  # two fresh processes import torch
def test_two_gloo_processes_reduce_to_the_single_process_metrics(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    predictions, labels = _shared_data()
    rank0 = np.arange(0, 400, 2)[:150]
    rank1 = np.arange(1, 400, 2)
    used = np.concatenate([rank0, rank1])
    expected = one_shot(predictions[used], labels[used], loss=(150 * 0.5 + 200 * 1.5) / 350)
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for key in KEYS:
            assert result[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), (rank, key)
