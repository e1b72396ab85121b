"""TFRecord framing: TensorFlow's bytes, CRC checks, selective reading, resuming after a bad record, on
memory-mapped local files and on fsspec streams alike, and payload checks deferred to the consumer."""

from __future__ import annotations

import itertools

import fsspec
import pytest

from compactvid.data.tfrecord import RecordError, iter_records, masked_crc32c
from compactvid.errors import DataError
from test_yt8m import FIXTURES
from yt8m_records import write_file

_MEMORY = itertools.count()


@pytest.fixture(params=["local", "memory"])
def where(request, tmp_path) -> str:
    """A directory for test files: local (read memory-mapped) or fsspec memory:// (read as a stream)."""
    return str(tmp_path) if request.param == "local" else f"memory://tfrecord{next(_MEMORY)}"


def _read_bytes(path: str) -> bytes:
    with fsspec.open(path, "rb") as file:
        return file.read()


def _write_bytes(path: str, data: bytes) -> None:
    with fsspec.open(path, "wb") as file:
        file.write(data)


def test_writer_reproduces_tensorflow_bytes(where):
    original = FIXTURES / "frame00.tfrecord"
    payloads = [record.payload for record in iter_records(str(original))]
    assert len(payloads) == 8
    copy = write_file(f"{where}/copy.tfrecord", payloads)
    assert _read_bytes(copy) == original.read_bytes()
    assert [bytes(r.payload) for r in iter_records(copy)] == [bytes(p) for p in payloads]


def test_local_payloads_are_read_only_views_of_the_file(tmp_path):
    path = _records_file(str(tmp_path))
    for record in iter_records(path):
        assert isinstance(record.payload, memoryview) and record.payload.readonly
        assert record.payload == _read_bytes(path)[record.offset + 12:record.offset + 12 + len(record.payload)]


def test_masked_crc32c_known_value():
    # the CRC32C check value of "123456789" is 0xE3069283; TensorFlow masks it
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(memoryview(b"0123456789")[1:]) == masked_crc32c(b"123456789")


def _records_file(where: str, count: int = 5) -> str:
    return write_file(f"{where}/r.tfrecord", [f"payload {i}".encode() * (i + 1) for i in range(count)])


def test_keep_reads_only_the_selected_records(where):
    path = _records_file(where)
    records = list(iter_records(path, keep=lambda i: i % 2 == 1))
    assert [(r.index, r.payload) for r in records] == [(1, b"payload 1" * 2), (3, b"payload 3" * 4)]
    offsets = [r.offset for r in iter_records(path)]
    assert [r.offset for r in records] == [offsets[1], offsets[3]]


def _corrupt(path: str, offset: int) -> None:
    data = bytearray(_read_bytes(path))
    data[offset] ^= 1
    _write_bytes(path, bytes(data))


def test_bad_payload_is_skipped_and_reading_resumes(where):
    path = _records_file(where)
    offsets = [r.offset for r in iter_records(path)]
    _corrupt(path, offsets[2] + 12)
    with pytest.raises(RecordError, match=rf"record 2 \(byte {offsets[2]}\): payload CRC mismatch"):
        list(iter_records(path))
    errors: list[RecordError] = []
    assert [r.index for r in iter_records(path, on_error=errors.append)] == [0, 1, 3, 4]
    assert len(errors) == 1 and errors[0].resumable and errors[0].index == 2
    assert errors[0].next_offset == offsets[3]
    # a reader that does not keep the bad record does not check its payload
    assert [r.index for r in iter_records(path, keep=lambda i: i != 2)] == [0, 1, 3, 4]


def test_deferred_payload_check(where):
    path = _records_file(where)
    offsets = [r.offset for r in iter_records(path)]
    _corrupt(path, offsets[2] + 13)
    records = list(iter_records(path, defer_payload_check=True))
    assert [r.index for r in records] == [0, 1, 2, 3, 4]  # the framing is intact: every record comes
    for record in records[:2] + records[3:]:
        record.check()
    with pytest.raises(RecordError, match=rf"record 2 \(byte {offsets[2]}\): payload CRC mismatch") as info:
        records[2].check()
    assert info.value.resumable and info.value.next_offset == offsets[3]
    # records checked while reading carry nothing left to check
    assert all(r.payload_crc is None for r in iter_records(path, on_error=lambda error: None))


def test_broken_length_ends_the_file(where):
    path = _records_file(where)
    offsets = [r.offset for r in iter_records(path)]
    _corrupt(path, offsets[3] + 1)  # the length itself: its CRC no longer matches
    errors: list[RecordError] = []
    assert [r.index for r in iter_records(path, on_error=errors.append)] == [0, 1, 2]
    assert not errors[0].resumable and "length CRC mismatch" in str(errors[0])
    # the reader that keeps record 3 reports it; the others stop there silently
    assert [r.index for r in iter_records(path, keep=lambda i: i in (0, 4))] == [0]


def test_truncated_files(where):
    path = _records_file(where, 2)
    data = _read_bytes(path)
    for cut, problem in [(len(data) - 2, "file truncated: the file ends 2 bytes before the end of this record"),
                         (len(data) - 25, "file truncated inside a record header")]:
        _write_bytes(path, data[:cut])
        with pytest.raises(RecordError, match=problem):
            list(iter_records(path))


def test_empty_file_has_no_records(where):
    _write_bytes(f"{where}/empty.tfrecord", b"")
    assert list(iter_records(f"{where}/empty.tfrecord")) == []


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(iter_records(str(tmp_path / "none.tfrecord")))
    with pytest.raises(DataError, match="directory"):
        list(iter_records(str(tmp_path)))
