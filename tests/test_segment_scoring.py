"""Segment-level scoring (2019 challenge): mAP@N against a straightforward reference, the submission
file, `eval --segment_labels` (a submission or a run) and `inference --segment_labels`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compactvid.cli import main
from compactvid.data import iter_videos
from compactvid.data.synthetic import generate_videos, make_world, write_dataset
from compactvid.errors import DataError
from compactvid.metrics import RatedSegments, segment_map_at_n
from compactvid.segment_submission import SegmentRanking, read_submission, write_submission


def reference_map_at_n(lines: dict[int, list[str]], labels: dict[tuple[str, int], float], top_n: int) -> float:
    """google/youtube-8m's segment_eval_inference.py, written out plainly: per class, cap at top_n, keep
    the rated pairs, score them by rank, then AveragePrecisionCalculator.ap_at_n(n=None) with the class's
    positives; the mean over the classes with positives."""
    positives: dict[int, int] = {}
    for (_, label), score in labels.items():
        if score > 0:
            positives[label] = positives.get(label, 0) + 1
    aps = []
    for label in sorted(lines):
        if positives.get(label, 0) == 0:
            continue
        kept = [s for s in (lines[label][:top_n] if top_n else lines[label]) if (s, label) in labels]
        scores = [(len(kept) - i) / len(kept) for i in range(len(kept))]
        actuals = [labels[(s, label)] for s in kept]
        order = sorted(range(len(scores)), key=lambda k: scores[k], reverse=True)
        ap, found = 0.0, 0
        for rank, k in enumerate(order):
            if actuals[k] > 0:
                found += 1
                ap += found / (rank + 1) / positives[label]
        aps.append(ap)
    return float(np.mean(aps)) if aps else 0.0


@pytest.mark.parametrize("seed", range(6))
def test_map_at_n_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    segments = [f"v{v}:{5 * t}" for v in range(12) for t in range(6)]
    labels = {}
    for segment in rng.choice(segments, 40, replace=False):
        for label in rng.choice(6, rng.integers(1, 3), replace=False):
            labels[(str(segment), int(label))] = float(rng.integers(0, 2))
    rated = RatedSegments()
    for (segment, label), score in labels.items():
        video, _, start = segment.partition(":")
        rated.add(video, [int(start)], [label], [score])
    lines = {label: [str(s) for s in rng.permutation(segments)[:rng.integers(0, len(segments))]]
             for label in range(7)}  # class 6 is never rated: it does not count
    for top_n in (0, 1, 5, 30):
        score = segment_map_at_n(lines, rated, top_n)
        assert score.map_at_n == pytest.approx(reference_map_at_n(lines, labels, top_n), abs=1e-12)
        assert score.rated_segments == len(labels)
        assert score.num_classes == len({label for (_, label), s in labels.items() if s > 0})


def test_map_at_n_by_hand():
    rated = RatedSegments()
    rated.add("a", [0, 5, 10], [1, 1, 1], [1.0, 0.0, 1.0])
    rated.add("b", [0], [1], [1.0])
    # ranked: a:10 (+), x:0 (unrated, dropped), a:5 (-), a:0 (+); b:0 never listed: missed
    score = segment_map_at_n({1: ["a:10", "x:0", "a:5", "a:0"]}, rated)
    assert score.map_at_n == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert segment_map_at_n({1: ["a:10", "x:0", "a:5", "a:0"]}, rated, top_n=2).map_at_n == pytest.approx(1 / 3)


def test_ranking_keeps_the_best_segments_of_each_class():
    rng = np.random.default_rng(0)
    scores = rng.random((5000, 4)).astype(np.float32)
    scores[10:20, 2] = scores[30, 2] = 0.999  # ties: the earlier segment first
    ranking = SegmentRanking(np.array([0, 2]), max_pred=50)
    for first in range(0, 5000, 700):
        ranking.add([f"v{i}" for i in range(first, min(first + 700, 5000))], [0] * 700, scores[first:first + 700])
    ranked = ranking.ranked()
    for label in (0, 2):
        order = sorted(range(5000), key=lambda i: (-scores[i, label], i))[:50]
        assert ranked[label] == [f"v{i}:0" for i in order]


def test_submission_round_trip_and_errors(tmp_path):
    path = tmp_path / "submission.csv"
    with open(path, "w") as out:
        write_submission(out, {7: ["a:0", "b:5"], 3: ["c:10"]})
    assert path.read_text() == "Class,Segments\n3,c:10\n7,a:0 b:5\n"
    assert read_submission(str(path)) == {3: ["c:10"], 7: ["a:0", "b:5"]}
    for text, fragment in [("Class,Segments\nseven,a:0\n", "line 2 does not start with a class index"),
                           ("Class,Segments\n3,a:0 b\n", r"line 2: 'b' is not a segment"),
                           ("Class,Segments\n3,a:0\n3,b:0\n", "line 3: class 3 is listed twice"),
                           ("Class,Segments\n3,a:0 a:0\n", "line 2: segment a:0 is listed twice for class 3"),
                           ("Class,Segments\n", "no class line")]:
        path.write_text(text)
        with pytest.raises(DataError, match=fragment) as info:
            read_submission(str(path))
        assert str(info.value).startswith(f"{path}: ")


@pytest.fixture(scope="module")
def segment_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("segments")
    write_dataset(str(directory), 40, 6, seed=2, num_shards=1, progress=False, segments=True)
    return directory


def test_make_data_segments_are_truthful(segment_data):
    """A positive segment shows its class's concepts in at least 3 of its 5 frames, a negative in none."""
    vocabulary = [int(line) for line in (segment_data / "segment_label_ids.csv").read_text().split()[1:]]
    assert len(vocabulary) == 3
    shown = {video.id: video.frame_classes for video in generate_videos(make_world(6, 2), 40, 2)}
    positives = negatives = 0
    for split in ("validate", "test"):
        for video in iter_videos(str(segment_data / f"{split}*.tfrecord"), num_classes=6, max_frames=400):
            if video.segments is None:
                continue
            assert set(video.segments.classes.tolist()) <= set(vocabulary)
            assert (split == "test") == (video.labels.size == 0)
            for start, label, score in zip(*video.segments):
                frames = np.count_nonzero(shown[video.id][start:start + 5] == label)
                assert frames >= 3 if score else frames == 0
                positives += int(score)
                negatives += 1 - int(score)
    assert positives >= 5 and negatives >= 5
    assert all(v.segments is None for v in iter_videos(str(segment_data / "train*.tfrecord")))


def test_eval_scores_a_submission_file(segment_data, tmp_path, capsys):
    rated = {}
    for video in iter_videos(str(segment_data / "validate*.tfrecord")):
        for start, label, score in zip(*video.segments or ((), (), ())):
            rated[(f"{video.id}:{start}", int(label))] = float(score)
    lines = {label: [s for (s, c), score in sorted(rated.items(), key=lambda kv: -kv[1]) if c == label]
             for label in {c for _, c in rated}}
    lines[next(iter(lines))].insert(0, "zzzz:0")  # unrated: dropped
    path = tmp_path / "submission.csv"
    with open(path, "w") as out:
        write_submission(out, lines)
    argv = ["eval", "--segment_labels", f"--submission_file={path}",
            f"--eval_data_pattern={segment_data}/validate*.tfrecord", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert list(result) == ["map_at_n", "num_classes", "rated_segments"]
    assert result["map_at_n"] == pytest.approx(reference_map_at_n(lines, rated, 0)) and result["map_at_n"] == 1.0
    assert result["rated_segments"] == len(rated) and "mAP@N 1.000000" in captured.err
    assert main([*argv[:-1], "--top_n=1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["map_at_n"] < 1.0
    assert main(["eval", "--segment_labels", f"--submission_file={path}",
                 f"--eval_data_pattern={segment_data}/train*.tfrecord"]) == 1
    assert "no rated segment in 28 records" in capsys.readouterr().err


SEGMENT_RUN_FLAGS = ["--num_classes=6", "--add_dbof", "--dbof_cluster_size=16", "--fc_hidden_size=16", "--iterations=5",
                     "--batch_size=8", "--num_readers=0", "--moe_num_mixtures=1", "--base_learning_rate=0.01",
                     "--batch_norm_decay=0.5"]


@pytest.mark.slow
def test_inference_writes_the_submission_that_eval_scores(segment_data, tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    assert main(["train", f"--train_dir={run}", f"--train_data_pattern={segment_data}/train*.tfrecord",
                 "--num_epochs=1", *SEGMENT_RUN_FLAGS]) == 0
    submission = tmp_path / "submission.csv"
    argv = ["inference", f"--train_dir={run}", f"--input_data_pattern={segment_data}/validate*.tfrecord",
            f"--output_file={submission}", "--segment_labels", "--segment_max_pred=30"]
    assert main(argv) == 1
    assert "--segment_labels needs --segment_label_ids_file" in capsys.readouterr().err
    assert main([*argv, f"--segment_label_ids_file={segment_data}/segment_label_ids.csv"]) == 0
    lines = submission.read_text().splitlines()
    vocabulary = (segment_data / "segment_label_ids.csv").read_text().split()[1:]
    assert lines[0] == "Class,Segments" and [line.split(",")[0] for line in lines[1:]] == vocabulary
    frames = {v.id: v.num_frames for v in iter_videos(str(segment_data / "validate*.tfrecord"), max_frames=400)}
    all_segments = {f"{v}:{t}" for v, n in frames.items() for t in range(0, n, 5)}
    for line in lines[1:]:
        segments = line.split(",")[1].split(" ")
        assert len(segments) == 30 and len(set(segments)) == 30 and set(segments) <= all_segments
    assert main(["eval", "--segment_labels", f"--submission_file={submission}",
                 f"--eval_data_pattern={segment_data}/validate*.tfrecord", "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["eval", "--segment_labels", f"--train_dir={run}", "--run_once", "--segment_max_pred=30",
                 f"--eval_data_pattern={segment_data}/validate*.tfrecord", "--json"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert from_run.pop("step") > 0 and from_run == from_file
