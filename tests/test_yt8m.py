"""YouTube-8M decoding: agreement with TensorFlow, both schemas, every bad input, skipping, fuzzing."""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import struct
import tempfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compactvid.data import ReadReport, iter_videos
from compactvid.data.tfrecord import masked_crc32c
from compactvid.data.yt8m import dequantize
from compactvid.errors import CompactVidError, DataError
from yt8m_records import frame_payload, random_video, video_payload, write_file

FIXTURES = Path(__file__).parent / "fixtures" / "yt8m_tf"


def test_frame_level_matches_tensorflow():
    expected = json.loads((FIXTURES / "expected.json").read_text())["frame_level"]
    arrays = np.load(FIXTURES / "expected.npz")
    videos = list(iter_videos(str(FIXTURES / "frame00.tfrecord"), num_classes=3862))
    assert [f"frame00.tfrecord|{v.id}" for v in videos] == list(expected)
    for video in videos:
        entry = expected[f"frame00.tfrecord|{video.id}"]
        assert sorted(video.labels.tolist()) == entry["labels"]
        assert video.num_frames == entry["num_frames"]
        want = arrays[entry["array"]]
        assert video.features.dtype == np.float32 and video.features.shape == want.shape
        assert np.array_equal(video.features, want)  # bit for bit


def test_video_level_matches_tensorflow():
    expected = json.loads((FIXTURES / "expected.json").read_text())["video_level"]
    arrays = np.load(FIXTURES / "expected.npz")
    videos = list(iter_videos(str(FIXTURES / "video00.tfrecord"), frame_level=False,
                              feature_names=("mean_rgb", "mean_audio"), num_classes=3862))
    assert [v.id for v in videos] == list(expected)
    for video in videos:
        assert sorted(video.labels.tolist()) == expected[video.id]["labels"]
        assert np.array_equal(video.features, arrays[expected[video.id]["array"]])


def test_dequantize_formula():
    q = np.arange(256, dtype=np.uint8)
    want = q.astype(np.float32) * np.float32(4 / 255) + np.float32(4 / 512 - 2)
    assert np.array_equal(dequantize(q), want)
    assert want[0] == np.float32(-2 + 4 / 512) and abs(want[-1] - (2 + 4 / 512)) < 1e-6


def test_round_trip_both_schemas_and_caps(tmp_path):
    rng = np.random.default_rng(1)
    frames_a, frames_b, frames_c = random_video(rng, 7), random_video(rng, 12), random_video(rng, 0)
    payloads = [
        frame_payload("a", [3, 1], frames_a,
                      extra_context={"segment_start_times": [0, 5], "segment_labels": [1, 2],
                                     "segment_scores": [0.0, 1.0], "other": [7]},
                      extra_lists={"other": [b"xyz"] * 7}),
        frame_payload("b", [0], frames_b, id_key="video_id"),  # 2017 schema
        frame_payload("c", None, frames_c),  # a test file: no labels, and no frames
    ]
    path = write_file(tmp_path / "t.tfrecord", payloads)
    videos = list(iter_videos(path, max_frames=10, num_classes=4))
    assert [v.id for v in videos] == ["a", "b", "c"]
    assert videos[0].labels.tolist() == [3, 1] and videos[2].labels.size == 0
    for video, frames in zip(videos, [frames_a, frames_b, frames_c]):
        want = dequantize(np.concatenate(frames, axis=1)[:10])
        assert np.array_equal(video.features, want)
    assert videos[1].num_frames == 10  # capped at max_frames


def test_round_trip_video_level(tmp_path):
    rgb, audio = np.linspace(-1, 1, 16, dtype=np.float32), np.arange(4, dtype=np.float32)
    path = write_file(tmp_path / "v.tfrecord", [video_payload("x", [2], {"mean_rgb": rgb, "mean_audio": audio}),
                                                video_payload("y", None, {"mean_rgb": rgb, "mean_audio": audio},
                                                              id_key="video_id")])
    videos = list(iter_videos(path, frame_level=False, feature_names=("mean_rgb", "mean_audio"),
                              feature_sizes=(16, 4)))
    assert [v.id for v in videos] == ["x", "y"]
    assert np.array_equal(videos[0].features, np.concatenate([rgb, audio]))
    assert videos[1].labels.size == 0


def test_fsspec_memory_and_comma_union(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("train1.tfrecord", "validate1.tfrecord"):
        with fsspec.open(f"memory://yt8m/{name}", "wb") as f:
            f.write(Path(write_file(tmp_path / name, [frame_payload(name, [1], random_video(rng, 2))])).read_bytes())
    ids = [v.id for v in iter_videos("memory://yt8m/train*.tfrecord, memory://yt8m/validate*")]
    assert ids == ["train1.tfrecord", "validate1.tfrecord"]
    with pytest.raises(DataError, match=r"'memory://yt8m/nothing\*,  ,'"):
        list(iter_videos("memory://yt8m/nothing*,  ,"))
    with pytest.raises(DataError, match="the pattern ',' names no file"):
        list(iter_videos(","))


def _one_video_file(tmp_path, payload: bytes, name: str = "bad.tfrecord") -> str:
    good = frame_payload("good", [1], random_video(np.random.default_rng(3), 2, (8, 4)))
    return write_file(tmp_path / name, [good, payload, good])


def _flip(path: str, offset: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x5A
    Path(path).write_bytes(bytes(data))


def _second_record_offset(path: str) -> int:
    length = struct.unpack("<Q", Path(path).read_bytes()[:8])[0]
    return 12 + length + 4


def _bad_inputs(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (file, expected message fragment) for each bad input; the bad record is record 1."""
    rng = np.random.default_rng(4)
    ok = random_video(rng, 3, (8, 4))
    cases = {}
    path = _one_video_file(tmp_path, frame_payload("x", [1], ok), "payload_crc.tfrecord")
    _flip(path, _second_record_offset(path) + 12 + 5)
    cases["payload_crc"] = (path, "payload CRC mismatch")
    path = _one_video_file(tmp_path, frame_payload("x", [1], ok), "length_crc.tfrecord")
    _flip(path, _second_record_offset(path) + 9)
    cases["length_crc"] = (path, "length CRC mismatch")
    path = _one_video_file(tmp_path, frame_payload("x", [1], ok), "truncated.tfrecord")
    Path(path).write_bytes(Path(path).read_bytes()[:_second_record_offset(path) + 30])
    cases["truncated"] = (path, "truncated")
    cases["not_a_sequence_example"] = (_one_video_file(tmp_path, b"\xff\xff\xff", "garbage.tfrecord"),
                                       "not a tf.train.SequenceExample")
    cases["missing_feature_list"] = (
        _one_video_file(tmp_path, frame_payload("x", [1], ok[:1], names=("rgb",)), "missing.tfrecord"),
        "missing feature list 'audio'")
    cases["bad_frame_size"] = (
        _one_video_file(tmp_path, frame_payload("x", [1], [ok[0][:, :7], ok[1]]), "size.tfrecord"),
        "frame 0 of feature list 'rgb' has 7 bytes where --feature_sizes says 8 for rgb")
    cases["frame_twice_the_size"] = (
        _one_video_file(tmp_path, frame_payload("x", [1], [np.tile(ok[0], 2), ok[1]]), "double.tfrecord"),
        "frame 0 of feature list 'rgb' has 16 bytes where --feature_sizes says 8 for rgb; check --feature_sizes$")
    cases["frame_counts_differ"] = (
        _one_video_file(tmp_path, frame_payload("x", [1], [ok[0], ok[1][:2]]), "counts.tfrecord"),
        r"different numbers of frames \(rgb: 3, audio: 2\)")
    cases["label_out_of_range"] = (
        _one_video_file(tmp_path, frame_payload("x", [1, 10], ok), "label.tfrecord"),
        r"label 10 of video 'x' is out of range \[0, 10\); check --num_classes")
    cases["negative_label"] = (
        _one_video_file(tmp_path, frame_payload("x", [1, -3], ok), "negative.tfrecord"),
        r"label -3 of video 'x' is negative: labels are class indices, which must be >= 0; (?!.*num_classes)")
    return cases


BAD_INPUTS = ["payload_crc", "length_crc", "truncated", "not_a_sequence_example", "missing_feature_list",
              "bad_frame_size", "frame_twice_the_size", "frame_counts_differ", "label_out_of_range", "negative_label"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises_one_line_data_error(tmp_path, case):
    path, fragment = _bad_inputs(tmp_path)[case]
    with pytest.raises(DataError, match=fragment) as info:
        list(iter_videos(path, feature_sizes=(8, 4), num_classes=10))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: record 1 (byte {_second_record_offset(path)}): ")


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_skip_corrupt_records_counts_them(tmp_path, case, caplog):
    path, _ = _bad_inputs(tmp_path)[case]
    report = ReadReport()
    with caplog.at_level(logging.WARNING):
        videos = list(iter_videos(path, feature_sizes=(8, 4), num_classes=10, skip_corrupt=True, report=report))
    # a broken length or a truncation loses the rest of the file: the third record is not readable
    assert len(videos) == (1 if case in ("length_crc", "truncated") else 2)
    assert report.corrupt == 1 and report.records == len(videos)
    assert "1 corrupt records skipped" in caplog.text


def test_no_file_matching_and_empty_file(tmp_path, caplog):
    with pytest.raises(DataError, match="no file matches"):
        list(iter_videos(str(tmp_path / "none*.tfrecord")))
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert list(iter_videos(str(empty))) == []
    assert "no records" in caplog.text


def _valid_file_bytes() -> bytes:
    rng = np.random.default_rng(5)
    write_file("memory://fuzz/valid.tfrecord",
               [frame_payload(f"v{i}", [i], random_video(rng, i + 1, (8, 4))) for i in range(3)])
    with fsspec.open("memory://fuzz/valid.tfrecord", "rb") as f:
        return f.read()


VALID = _valid_file_bytes()


LOCAL = tempfile.mkdtemp(prefix="compactvid-fuzz-")  # hypothesis runs many examples per test: not tmp_path
atexit.register(shutil.rmtree, LOCAL, ignore_errors=True)


def _read_all(data: bytes, frame_level: bool = True, local: bool = False) -> None:
    """Read `data` as a file: local files are memory-mapped, memory:// ones read as a stream."""
    path = f"{LOCAL}/input.tfrecord" if local else "memory://fuzz/input.tfrecord"
    with fsspec.open(path, "wb") as f:
        f.write(data)
    try:
        for _ in iter_videos(path, feature_sizes=(8, 4), frame_level=frame_level, feature_names=("rgb", "audio"),
                             num_classes=10):
            pass
    except CompactVidError:
        pass  # the only exception type allowed to escape


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.booleans(), st.booleans())
def test_fuzz_random_bytes(data, frame_level, local):
    _read_all(data, frame_level, local)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=8),
       st.integers(0, len(VALID)), st.booleans())
def test_fuzz_mutated_file(flips, cut, local):
    data = bytearray(VALID)
    for offset, mask in flips:
        data[offset] ^= mask
    _read_all(bytes(data[:cut]), local=local)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.booleans(), st.booleans())
def test_fuzz_payloads_with_valid_framing(payload, frame_level, local):
    """Random payloads inside correct CRCs reach the protobuf and YouTube-8M checks."""
    length = struct.pack("<Q", len(payload))
    _read_all(length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload)),
              frame_level, local)
