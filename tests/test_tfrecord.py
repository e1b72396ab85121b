"""TFRecord framing: TensorFlow's bytes, CRC checks, selective reading, resuming after a bad record."""

from __future__ import annotations

from pathlib import Path

import pytest

from compactvid.data.tfrecord import RecordError, iter_records, masked_crc32c
from compactvid.errors import DataError
from test_yt8m import FIXTURES
from yt8m_records import write_file


def test_writer_reproduces_tensorflow_bytes(tmp_path):
    original = FIXTURES / "frame00.tfrecord"
    payloads = [record.payload for record in iter_records(str(original))]
    assert len(payloads) == 8
    assert Path(write_file(tmp_path / "copy.tfrecord", payloads)).read_bytes() == original.read_bytes()


def test_masked_crc32c_known_value():
    # the CRC32C check value of "123456789" is 0xE3069283; TensorFlow masks it
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records_file(tmp_path, count: int = 5) -> str:
    return write_file(tmp_path / "r.tfrecord", [f"payload {i}".encode() * (i + 1) for i in range(count)])


def test_keep_reads_only_the_selected_records(tmp_path):
    path = _records_file(tmp_path)
    records = list(iter_records(path, keep=lambda i: i % 2 == 1))
    assert [(r.index, r.payload) for r in records] == [(1, b"payload 1" * 2), (3, b"payload 3" * 4)]
    offsets = [r.offset for r in iter_records(path)]
    assert [r.offset for r in records] == [offsets[1], offsets[3]]


def test_bad_payload_is_skipped_and_reading_resumes(tmp_path):
    path = _records_file(tmp_path)
    offsets = [r.offset for r in iter_records(path)]
    data = bytearray(Path(path).read_bytes())
    data[offsets[2] + 12] ^= 1
    Path(path).write_bytes(bytes(data))
    with pytest.raises(RecordError, match=rf"record 2 \(byte {offsets[2]}\): payload CRC mismatch"):
        list(iter_records(path))
    errors: list[RecordError] = []
    assert [r.index for r in iter_records(path, on_error=errors.append)] == [0, 1, 3, 4]
    assert len(errors) == 1 and errors[0].resumable and errors[0].index == 2
    # a reader that does not keep the bad record does not check its payload
    assert [r.index for r in iter_records(path, keep=lambda i: i != 2)] == [0, 1, 3, 4]


def test_broken_length_ends_the_file(tmp_path):
    path = _records_file(tmp_path)
    offsets = [r.offset for r in iter_records(path)]
    data = bytearray(Path(path).read_bytes())
    data[offsets[3] + 1] ^= 1  # the length itself: its CRC no longer matches
    Path(path).write_bytes(bytes(data))
    errors: list[RecordError] = []
    assert [r.index for r in iter_records(path, on_error=errors.append)] == [0, 1, 2]
    assert not errors[0].resumable and "length CRC mismatch" in str(errors[0])
    # the reader that keeps record 3 reports it; the others stop there silently
    assert [r.index for r in iter_records(path, keep=lambda i: i in (0, 4))] == [0]


def test_truncated_files(tmp_path):
    path = _records_file(tmp_path, 2)
    data = Path(path).read_bytes()
    for cut, problem in [(len(data) - 2, "file truncated: the file ends 2 bytes before the end of this record"),
                         (len(data) - 25, "file truncated inside a record header")]:
        Path(path).write_bytes(data[:cut])
        with pytest.raises(RecordError, match=problem):
            list(iter_records(path))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(iter_records(str(tmp_path / "none.tfrecord")))
    with pytest.raises(DataError, match="directory"):
        list(iter_records(str(tmp_path)))
