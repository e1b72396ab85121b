"""The compiled SequenceExample scanner agrees with the protobuf library wherever it answers."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compactvid.data import proto
from compactvid.data.tfrecord import iter_records
from compactvid.data.wire import ScannedRecord, frame_layout, has_feature_lists, scan_sequence_example
from test_yt8m import FIXTURES
from yt8m_records import frame_payload, random_video

NAMES, SIZES = ("rgb", "audio"), (8, 4)


def _scan(payload: bytes, names=NAMES, sizes=SIZES, num_classes: int | None = None) -> ScannedRecord | None:
    return scan_sequence_example(np.frombuffer(payload, np.uint8), frame_layout(tuple(names), tuple(sizes)),
                                 num_classes)


def _frames(payload: bytes, scanned: ScannedRecord, sizes=SIZES) -> list[np.ndarray]:
    """Each feature's frames, copied out of the payload where the scan located them."""
    buffer = np.frombuffer(payload, np.uint8)
    return [np.array([buffer[offset + r * stride:][:size] for r in range(count)], dtype=np.uint8).reshape(count, size)
            for offset, stride, count, size in zip(scanned.offsets, scanned.strides, scanned.counts, sizes)]


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


def _protobuf_id_and_labels(context: "proto.Features") -> tuple[str, list[int]] | None:
    """The id and labels as the decoder's protobuf path reads a valid context, else None."""
    features = context.feature
    key = "id" if "id" in features else "video_id" if "video_id" in features else None
    if key is None or features[key].WhichOneof("kind") != "bytes_list" or len(features[key].bytes_list.value) != 1:
        return None
    labels = features["labels"] if "labels" in features else None
    if labels is not None and labels.WhichOneof("kind") not in (None, "int64_list"):
        return None
    values = list(labels.int64_list.value) if labels is not None else []
    return features[key].bytes_list.value[0].decode("utf-8", errors="backslashreplace"), values


def _assert_agree(payload: bytes, names=NAMES, sizes=SIZES, must_answer: bool = False) -> None:
    scanned = _scan(payload, names, sizes)
    reference = _protobuf_frames(payload, names, sizes)
    if must_answer:
        assert scanned is not None and scanned.id is not None
    if scanned is None or reference is None:
        return
    context = proto.Features.FromString(payload[slice(*scanned.context)] if scanned.context else b"")
    assert context == reference[0]
    if scanned.id is not None:
        want = _protobuf_id_and_labels(context)
        assert want is not None and (scanned.id, scanned.labels.tolist()) == want
        assert all(label >= 0 for label in want[1])
    mine = _frames(payload, scanned, sizes)
    assert len(mine) == len(reference[1])
    for frames, theirs in zip(mine, reference[1]):
        assert np.array_equal(frames, theirs)


def test_tensorflow_records_take_the_fast_path():
    for record in iter_records(str(FIXTURES / "frame00.tfrecord")):
        _assert_agree(bytes(record.payload), ("rgb", "audio"), (1024, 128), must_answer=True)
        assert has_feature_lists(record.payload)
    for record in iter_records(str(FIXTURES / "video00.tfrecord")):
        assert not has_feature_lists(record.payload)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 12), st.sampled_from([1, 4, 127, 128, 300]), st.integers(0, 2 ** 31), st.booleans(),
       st.lists(st.integers(0, 2 ** 40), max_size=5), st.booleans())
def test_canonical_records_agree(num_frames, audio_size, seed, extras, labels, video_id):
    rng = np.random.default_rng(seed)
    frames = random_video(rng, num_frames, (8, audio_size))
    payload = frame_payload("v\u00e9", labels or None, frames, id_key="video_id" if video_id else "id",
                            extra_context={"segment_scores": [0.5]} if extras else None,
                            extra_lists={"zz": [b"x" * 3] * 2} if extras else None)
    _assert_agree(payload, NAMES, (8, audio_size), must_answer=True)


def _key(number: int, wire: int) -> bytes:
    return bytes([number << 3 | wire])


def _varint(value: int) -> bytes:
    value &= 2 ** 64 - 1  # negative int64: ten bytes, as protobuf writes them
    out = bytearray()
    while value >= 0x80:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return bytes(out + bytes([value]))


def _message(number: int, body: bytes) -> bytes:
    return _key(number, 2) + _varint(len(body)) + body


def _entry(key: bytes, feature: bytes) -> bytes:
    return _message(1, _message(1, key) + _message(2, feature))


def _with_context(context: bytes) -> bytes:
    """A SequenceExample of 2 canonical frames per feature and the given serialized context."""
    example = proto.make_sequence_example({}, {"rgb": [b"a" * 8] * 2, "audio": [b"b" * 4] * 2})
    return _message(1, context) + _message(2, example.feature_lists.SerializeToString())


ID = _entry(b"id", _message(1, _message(1, b"vid")))


def test_context_labels_packed_unpacked_and_empty():
    unpacked = _entry(b"labels", _message(3, _key(1, 0) + _varint(7) + _key(1, 0) + _varint(300)))
    mixed = _entry(b"labels", _message(3, _message(1, _varint(1) + _varint(2)) + _key(1, 0) + _varint(3)))
    for context, labels in [(ID + unpacked, [7, 300]), (mixed + ID, [1, 2, 3]),
                            (ID + _entry(b"labels", b""), []), (ID, [])]:
        payload = _with_context(context)
        scanned = _scan(payload)
        assert (scanned.id, scanned.labels.tolist()) == ("vid", labels)
        _assert_agree(payload, must_answer=True)


def test_unusual_contexts_are_left_to_protobuf():
    """The frames are still located; the id and labels come from the protobuf path (id None)."""
    labels = _entry(b"labels", _message(3, _message(1, _varint(5))))
    contexts = [
        ID + ID,  # the id twice
        ID + labels + labels,  # the labels twice
        _entry(b"id", _message(1, _message(1, b"a") + _message(1, b"b"))),  # two id values
        _entry(b"id", _message(3, _message(1, _varint(5)))),  # an int64 id
        ID + _entry(b"labels", _message(1, _message(1, b"x"))),  # bytes labels
        ID + _entry(b"labels", _message(3, _message(1, _varint(-3)))),  # a negative label
        _entry(b"caf\xc3\xa9", _message(1, b"")) + ID,  # a non-ASCII key
        labels,  # no id at all
        ID + _key(2, 0) + _varint(1),  # an unknown field in Features
    ]
    for context in contexts:
        payload = _with_context(context)
        scanned = _scan(payload)
        assert scanned is not None and scanned.id is None and scanned.counts.tolist() == [2, 2]
        _assert_agree(payload)
    # labels out of range (given num_classes) are the protobuf path's to report too
    payload = _with_context(ID + labels)
    assert _scan(payload, num_classes=6).labels.tolist() == [5] and _scan(payload, num_classes=5).id is None


def test_id_before_video_id_and_other_context_keys_skipped():
    video_id = _entry(b"video_id", _message(1, _message(1, b"old")))
    other = _entry(b"segment_labels", _message(3, _message(1, _varint(1))))
    assert _scan(_with_context(video_id + other + ID)).id == "vid"
    assert _scan(_with_context(video_id + other)).id == "old"


def test_irregular_layouts_fall_back():
    rng = np.random.default_rng(0)
    frames = random_video(rng, 3, SIZES)
    payload = frame_payload("v", [1], frames)
    # a message given twice is merged by protobuf: not read by the scanner
    assert _scan(payload + payload) is None
    _assert_agree(payload + payload)
    two_values = proto.make_sequence_example({"id": b"v"}, {"rgb": [b"a" * 8] * 3, "audio": [b"b" * 4] * 3})
    two_values.feature_lists.feature_list["rgb"].feature[1].bytes_list.value.append(b"c" * 8)
    assert _scan(two_values.SerializeToString()) is None
    wrong_size = frame_payload("v", [1], [frames[0][:, :7], frames[1]])
    assert _scan(wrong_size) is None
    assert _scan(frame_payload("v", [1], frames[:1], names=("rgb",))) is None
    assert _scan(b"") is None and _scan(b"\x00") is None


VALID = frame_payload("v", [3, 2 ** 33], random_video(np.random.default_rng(1), 4, SIZES),
                      extra_lists={"zz": [b"q"] * 2})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, len(VALID)))
def test_mutated_records_agree_or_fall_back(changes, cut):
    data = bytearray(VALID)
    for offset, value in changes:
        data[offset] = value
    _assert_agree(bytes(data[:cut]))
    has_feature_lists(bytes(data[:cut]))  # never raises


def test_kernels_check_indices_under_test():
    """conftest compiles the kernels with bounds checks, so the fuzz tests above catch a read outside
    a record (here, a call that reads past its buffer on purpose)."""
    from compactvid.data.wire import _varint

    with pytest.raises(IndexError):
        _varint(np.zeros(1, np.uint8), 3, 10)
