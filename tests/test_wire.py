"""The zero-copy SequenceExample scanner agrees with the protobuf library wherever it answers."""

from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compactvid.data import proto
from compactvid.data.tfrecord import iter_records
from compactvid.data.wire import has_feature_lists, scan_sequence_example
from test_yt8m import FIXTURES
from yt8m_records import frame_payload, random_video

NAMES, SIZES = ("rgb", "audio"), (8, 4)


def _protobuf_frames(payload: bytes, names=NAMES, sizes=SIZES):
    """(context, frames) the protobuf library decodes, or None when it rejects the record or the layout."""
    try:
        example = proto.SequenceExample.FromString(payload)
    except DecodeError:
        return None
    frames = []
    for name, size in zip(names, sizes):
        if name not in example.feature_lists.feature_list:
            return None
        values = []
        for feature in example.feature_lists.feature_list[name].feature:
            if feature.WhichOneof("kind") != "bytes_list" or len(feature.bytes_list.value) != 1:
                return None
            values.append(feature.bytes_list.value[0])
        if any(len(v) != size for v in values):
            return None
        frames.append(np.frombuffer(b"".join(values), np.uint8).reshape(len(values), size))
    return example.context, frames


def _assert_agree(payload: bytes, names=NAMES, sizes=SIZES, must_answer: bool = False) -> None:
    scanned = scan_sequence_example(payload, names, sizes)
    reference = _protobuf_frames(payload, names, sizes)
    if must_answer:
        assert scanned is not None
    if scanned is None or reference is None:
        return
    context_range, frames = scanned
    context = proto.Features.FromString(payload[slice(*context_range)] if context_range else b"")
    assert context == reference[0]
    assert len(frames) == len(reference[1])
    for mine, theirs in zip(frames, reference[1]):
        assert np.array_equal(mine, theirs)


def test_tensorflow_records_take_the_fast_path():
    for record in iter_records(str(FIXTURES / "frame00.tfrecord")):
        _assert_agree(record.payload, ("rgb", "audio"), (1024, 128), must_answer=True)
        assert has_feature_lists(record.payload)
    for record in iter_records(str(FIXTURES / "video00.tfrecord")):
        assert not has_feature_lists(record.payload)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 12), st.sampled_from([1, 4, 127, 128, 300]), st.integers(0, 2 ** 31), st.booleans())
def test_canonical_records_agree(num_frames, audio_size, seed, extras):
    rng = np.random.default_rng(seed)
    frames = random_video(rng, num_frames, (8, audio_size))
    payload = frame_payload("v", [1, 2], frames,
                            extra_context={"segment_scores": [0.5]} if extras else None,
                            extra_lists={"zz": [b"x" * 3] * 2} if extras else None)
    _assert_agree(payload, NAMES, (8, audio_size), must_answer=True)


def test_irregular_layouts_fall_back():
    rng = np.random.default_rng(0)
    frames = random_video(rng, 3, SIZES)
    payload = frame_payload("v", [1], frames)
    # a message given twice is merged by protobuf: not read by the scanner
    assert scan_sequence_example(payload + payload, NAMES, SIZES) is None
    _assert_agree(payload + payload)
    two_values = proto.make_sequence_example({"id": b"v"}, {"rgb": [b"a" * 8] * 3, "audio": [b"b" * 4] * 3})
    two_values.feature_lists.feature_list["rgb"].feature[1].bytes_list.value.append(b"c" * 8)
    assert scan_sequence_example(two_values.SerializeToString(), NAMES, SIZES) is None
    wrong_size = frame_payload("v", [1], [frames[0][:, :7], frames[1]])
    assert scan_sequence_example(wrong_size, NAMES, SIZES) is None
    assert scan_sequence_example(frame_payload("v", [1], frames[:1], names=("rgb",)), NAMES, SIZES) is None


VALID = frame_payload("v", [3], random_video(np.random.default_rng(1), 4, SIZES), extra_lists={"zz": [b"q"] * 2})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, len(VALID)))
def test_mutated_records_agree_or_fall_back(changes, cut):
    data = bytearray(VALID)
    for offset, value in changes:
        data[offset] = value
    _assert_agree(bytes(data[:cut]))
    has_feature_lists(bytes(data[:cut]))  # never raises
