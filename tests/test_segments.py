"""Segment ratings (2019 release): agreement with TensorFlow, the fast path, every malformed case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compactvid.cli import main
from compactvid.data import iter_videos
from compactvid.data.segments import read_segment_vocabulary
from compactvid.data.tfrecord import iter_records
from compactvid.data.wire import frame_layout, scan_sequence_example
from compactvid.data.yt8m import dequantize
from compactvid.errors import DataError
from test_yt8m import _one_video_file, _second_record_offset
from yt8m_records import frame_payload, random_video

SEGMENT_FIXTURES = Path(__file__).parent / "fixtures" / "yt8m_tf_segments"


def test_segment_fields_match_tensorflow():
    expected = json.loads((SEGMENT_FIXTURES / "expected.json").read_text())
    arrays = np.load(SEGMENT_FIXTURES / "expected.npz")
    videos = list(iter_videos(str(SEGMENT_FIXTURES / "frame00.tfrecord"), num_classes=3862))
    assert [v.id for v in videos] == list(expected)
    for video in videos:
        want = expected[video.id]
        assert video.labels.tolist() == want["labels"] and video.num_frames == want["num_frames"]
        if not want["segment_start_times"]:
            assert video.segments is None
            continue
        assert video.segments.start_times.tolist() == want["segment_start_times"]
        assert video.segments.classes.tolist() == want["segment_labels"]
        assert video.segments.scores.tolist() == want["segment_scores"]
        for start in set(want["segment_start_times"]):
            assert np.array_equal(video.features[start:start + 5], dequantize(arrays[f"{video.id}::{start}"]))
    starts, positives, rated = videos[0].segments.by_segment()
    assert starts.tolist() == [0, 15, 25, 30]
    assert [p.tolist() for p in positives] == [[3], [], [3861], [17]]
    assert [r.tolist() for r in rated] == [[3, 17], [3], [3861], [17]]


def test_segment_records_take_the_compiled_path():
    """The scanner reads id and labels of a record with segment fields without the protobuf library."""
    layout = frame_layout(("rgb", "audio"), (1024, 128))
    for record in iter_records(str(SEGMENT_FIXTURES / "frame00.tfrecord")):
        scanned = scan_sequence_example(np.frombuffer(record.payload, np.uint8), layout, 3862)
        assert scanned is not None and scanned.id is not None


def _segments(starts, classes, scores) -> dict:
    return {"segment_start_times": starts, "segment_labels": classes, "segment_scores": scores}


MALFORMED = {
    "lengths_differ": (_segments([0, 5], [1, 2], [1.0]),
                       "segment_start_times, segment_labels, segment_scores have 2, 2, 1 values"),
    "start_past_end": (_segments([0, 5], [1, 2], [1.0, 0.0]),
                       r"segment_start_times value 5 is past the video's end \(3 frames\)"),
    "label_outside_vocabulary": (_segments([0], [10], [1.0]),
                                 r"segment_labels value 10 is outside the vocabulary \[0, 10\)"),
    "negative_start": (_segments([-5], [1], [1.0]), "segment_start_times value -5 is past"),
    "missing_field": ({"segment_start_times": [0], "segment_labels": [1]}, "but not segment_scores"),
    "wrong_kind": (_segments([0], [1.0], [1.0]), "segment_labels is a float list, expected an int64 list"),
    "score_not_binary": (_segments([0], [1], [0.5]), "segment_scores value 0.5 is not 0 or 1"),
    "pair_twice": (_segments([0, 0], [1, 1], [1.0, 0.0]), "segment starting at 0 is rated twice for class 1"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_segments_are_one_line_errors(tmp_path, capsys, case):
    context, fragment = MALFORMED[case]
    frames = random_video(np.random.default_rng(5), 3, (8, 4))
    path = _one_video_file(tmp_path, frame_payload("x", [1], frames, extra_context=context))
    where = f"{path}: record 1 (byte {_second_record_offset(path)}): video 'x': "
    with pytest.raises(DataError, match=fragment) as info:
        list(iter_videos(path, feature_sizes=(8, 4), num_classes=10))
    assert str(info.value).startswith(where) and "\n" not in str(info.value)
    assert main(["inspect", path, "--feature_sizes=8,4", "--num_classes=10"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and where in err


def test_inspect_reports_rated_segments(capsys):
    assert main(["inspect", str(SEGMENT_FIXTURES / "frame00.tfrecord"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["segments"] == {"videos": 3, "rated_segments": 8, "positive_pairs": 5, "negative_pairs": 4,
                                   "classes": 6, "class_range": [0, 3861]}
    assert main(["inspect", str(SEGMENT_FIXTURES / "frame00.tfrecord")]) == 0
    assert "rated segments    8 in 3 videos: 5 positive and 4 negative (segment, class) pairs, 6 classes" in (
        capsys.readouterr().out)


def test_segment_vocabulary_file(tmp_path):
    path = tmp_path / "segment_label_ids.csv"
    path.write_text("Index\n7\n3\n")
    assert read_segment_vocabulary(str(path), num_classes=10).tolist() == [3, 7]
    path.write_text("Index\n3\nthree\n")
    with pytest.raises(DataError, match=r"line 3 \('three'\) is not a class index"):
        read_segment_vocabulary(str(path))
    path.write_text("Index\n3\n12\n")
    with pytest.raises(DataError, match=r"line 3 \('12'\) is not a class index in \[0, 10\)"):
        read_segment_vocabulary(str(path), num_classes=10)
    with pytest.raises(DataError, match="cannot read the segment vocabulary"):
        read_segment_vocabulary(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize("mode", ["rated", "all"])
def test_loader_yields_segment_examples(mode):
    from compactvid.config import Config
    from compactvid.data.loader import make_loader

    expected = json.loads((SEGMENT_FIXTURES / "expected.json").read_text())
    arrays = np.load(SEGMENT_FIXTURES / "expected.npz")
    videos = {v.id: v for v in iter_videos(str(SEGMENT_FIXTURES / "frame00.tfrecord"))}
    config = Config(num_classes=3862, batch_size=3, num_readers=0, iterations=6, n_bagging=2)
    examples = []
    for batch in make_loader(str(SEGMENT_FIXTURES / "frame00.tfrecord"), config, training=mode == "rated",
                             segments=mode, dequantize=False):
        assert batch["frames"].shape[1:] == (2, 6, 1152) and len(batch["ids"]) <= 3
        weights = batch.get("label_weights")
        assert (weights is not None) == (mode == "rated")
        for i, (video_id, start) in enumerate(zip(batch["ids"], batch["segment_starts"].tolist())):
            total = videos[video_id].num_frames
            frames = batch["frames"][i].reshape(-1, 1152).numpy()
            if mode == "rated":  # every sampled frame is one of the segment's frames
                rows = arrays[f"{video_id}::{start}"]
                assert all(any(np.array_equal(f, r) for r in rows) for f in frames)
            assert batch["num_frames"][i] == min(5, total - start)
            if mode == "rated":
                want = expected[video_id]
                pairs = [(c, s) for t, c, s in zip(want["segment_start_times"], want["segment_labels"],
                                                   want["segment_scores"]) if t == start]
                assert sorted(np.flatnonzero(weights[i]).tolist()) == sorted(c for c, _ in pairs)
                assert sorted(np.flatnonzero(batch["labels"][i]).tolist()) == sorted(c for c, s in pairs if s)
            examples.append((video_id, start))
    if mode == "rated":
        assert sorted(examples) == sorted({(v, t) for v, want in expected.items()
                                           for t in want["segment_start_times"]})
    else:
        assert examples == [(v, t) for v, want in expected.items() for t in range(0, want["num_frames"], 5)]
