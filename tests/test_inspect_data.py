"""`compactvid inspect`: summaries of the TensorFlow fixtures, and every bad input as a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compactvid.cli import main
from test_yt8m import BAD_INPUTS, FIXTURES, _bad_inputs, _second_record_offset
from yt8m_records import frame_payload, write_file


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["inspect", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_frame_level_fixture_summary(capsys):
    code, out, _ = _run(capsys, str(FIXTURES / "frame00.tfrecord"), "--json", "--num_classes=3862")
    summary = json.loads(out)
    assert code == 0
    assert summary["num_records"] == 8 and summary["frame_level"] is True
    assert summary["frames_per_video"] == {"min": 1, "mean": 144.75, "max": 350}
    assert summary["videos_over_max_frames"] == 2
    assert summary["features"] == {"rgb": 1024, "audio": 128}
    assert summary["label_range"] == [0, 3861] and summary["most_frequent_labels"][0] == [7, 2]
    code, out, _ = _run(capsys, str(FIXTURES / "frame00.tfrecord"))
    assert code == 0 and "frames per video  min 1, mean 144.75, max 350" in out


def test_video_level_is_detected(capsys):
    code, out, _ = _run(capsys, str(FIXTURES / "video00.tfrecord"), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["frame_level"] is False and summary["num_records"] == 6
    assert summary["features"] == {"mean_rgb": 1024, "mean_audio": 128}
    code, _, err = _run(capsys, str(FIXTURES / "video00.tfrecord"), "--frame_features")
    assert code == 1 and "use --frame_features=False" in err


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_with_one_line(tmp_path, capsys, case):
    path, fragment = _bad_inputs(tmp_path)[case]
    code, out, err = _run(capsys, path, "--feature_sizes=8,4", "--num_classes=10")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"compactvid inspect: error: {path}: record 1 (byte {_second_record_offset(path)}): ")
    code, out, err = _run(capsys, path, "--feature_sizes=8,4", "--num_classes=10", "--skip_corrupt_records", "--json")
    assert code == 0 and json.loads(out)["corrupt_records_skipped"] == 1


def test_no_file_and_empty_file(tmp_path, capsys):
    code, _, err = _run(capsys, f"{tmp_path}/none*,")
    assert code == 1 and err.count("\n") == 1 and f"'{tmp_path}/none*,'" in err
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    code, out, _ = _run(capsys, str(tmp_path / "empty.tfrecord"), "--json")
    assert code == 0 and json.loads(out)["num_records"] == 0


def test_malformed_unused_feature_list_is_reported(tmp_path, capsys):
    """inspect checks the whole message, including feature lists training does not read."""
    frames = [np.zeros((2, 8), np.uint8), np.zeros((2, 4), np.uint8)]
    payload = bytearray(frame_payload("x", [1], frames, extra_lists={"zz": [b"ab"]}))
    tail = payload.rindex(b"ab")
    payload[tail - 1] = 0x7F  # the length of the unused frame now runs past its message
    path = write_file(tmp_path / "x.tfrecord", [bytes(payload)])
    code, _, err = _run(capsys, path, "--feature_sizes=8,4")
    assert code == 1 and "record 0 (byte 0): not a tf.train.SequenceExample" in err


def test_fsspec_memory_path(capsys):
    frames = [np.zeros((3, 8), np.uint8), np.zeros((3, 4), np.uint8)]
    write_file("memory://inspect/train0.tfrecord", [frame_payload("m", [2], frames)] * 2)
    code, out, _ = _run(capsys, "memory://inspect/train*", "--feature_sizes=8,4", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["num_records"] == 2 and summary["frames_per_video"]["max"] == 3
