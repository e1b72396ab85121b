"""TFRecord framing: read and write records with masked CRC32C checks, on any fsspec path.

A record is laid out as TensorFlow writes it::

    uint64 length (little endian) | uint32 masked_crc32c(length) | payload | uint32 masked_crc32c(payload)

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import fsspec
import google_crc32c

from compactvid.errors import DataError

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def masked_crc32c(data: bytes) -> int:
    """TensorFlow's masked CRC32C of `data`."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


@dataclass(frozen=True)
class Record:
    """One record of a TFRecord file: its index in the file, its byte offset, and its payload."""

    path: str
    index: int
    offset: int
    payload: bytes

    def where(self) -> str:
        """'path: record I (byte O)', the prefix of every error message about this record."""
        return f"{self.path}: record {self.index} (byte {self.offset})"


class RecordError(DataError):
    """The framing of a TFRecord file is broken at one record.

    `resumable` is True when the following records can still be read (only the payload was bad);
    False when the file cannot be followed past this point (broken length, truncated file).
    `index` is the index of the broken record in its file.
    """

    def __init__(self, message: str, resumable: bool = False, index: int = -1):
        super().__init__(message)
        self.resumable = resumable
        self.index = index


def read_records(stream: BinaryIO, path: str, check_crc: bool = True, start_index: int = 0,
                 keep: Callable[[int], bool] | None = None) -> Iterator[Record]:
    """Yield the records of an open binary stream; raise RecordError at the first broken one.

    Records are numbered from `start_index` (the index of the record at the stream's position).
    With `keep`, only records whose index passes it are read and checked; the payloads of the
    others are skipped with a seek (their length CRC is still checked, to trust the length).
    After a resumable RecordError the generator is finished; call again with the stream as left
    (positioned after the bad record) and ``start_index`` = the bad record's index + 1 to continue.
    """
    index = start_index
    offset = stream.tell()
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            return
        where = f"{path}: record {index} (byte {offset})"
        if len(header) < _HEADER.size:
            raise RecordError(f"{where}: file truncated inside a record header "
                              f"({len(header)} of {_HEADER.size} bytes); re-download or re-write the file",
                              resumable=False, index=index)
        length, length_crc = _HEADER.unpack(header)
        if check_crc and masked_crc32c(header[:8]) != length_crc:
            raise RecordError(f"{where}: length CRC mismatch (the file is corrupt or not a TFRecord file)",
                              resumable=False, index=index)
        if keep is not None and not keep(index):
            stream.seek(length + _FOOTER.size, 1)
        else:
            payload = stream.read(length)  # read apart from the footer: slicing would copy the payload
            footer = stream.read(_FOOTER.size)
            if len(payload) < length or len(footer) < _FOOTER.size:
                missing = length + _FOOTER.size - len(payload) - len(footer)
                raise RecordError(f"{where}: file truncated: the file ends {missing} bytes before the end of "
                                  f"this record (of {length} bytes); re-download or re-write the file",
                                  resumable=False, index=index)
            if check_crc and masked_crc32c(payload) != _FOOTER.unpack(footer)[0]:
                raise RecordError(f"{where}: payload CRC mismatch (the record is corrupt)", resumable=True,
                                  index=index)
            yield Record(path, index, offset, payload)
        index += 1
        offset += _HEADER.size + length + _FOOTER.size


def iter_records(path: str, check_crc: bool = True, keep: Callable[[int], bool] | None = None,
                 on_error: Callable[[RecordError], None] | None = None) -> Iterator[Record]:
    """Yield the records of the TFRecord file at `path` (any fsspec URL), optionally only those `keep`s.

    A broken record raises RecordError; with `on_error`, it is passed to `on_error` instead and reading
    goes on after it (bad payload) or stops there (the rest of the file cannot be framed). A broken
    framing met while skipping a record that `keep` rejects ends the file silently: the reader that
    keeps that record reports it. A file that cannot be opened or read raises DataError.
    """
    try:
        with fsspec.open(path, "rb") as stream:
            start = 0
            while True:
                try:
                    yield from read_records(stream, path, check_crc, start, keep)
                    return
                except RecordError as error:
                    if keep is not None and not keep(error.index):
                        return
                    if on_error is None:
                        raise
                    on_error(error)
                    if not error.resumable:
                        return
                    start = error.index + 1
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a TFRecord file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error})") from None


class TFRecordWriter:
    """Write records to a TFRecord file (any fsspec URL), as `tf.io.TFRecordWriter` does.

    Use as a context manager: ``with TFRecordWriter(path) as w: w.write(payload)``.
    """

    def __init__(self, path: str):
        self.path = path
        self._file = fsspec.open(path, "wb").open()

    def write(self, payload: bytes) -> None:
        length = struct.pack("<Q", len(payload))
        self._file.write(length + struct.pack("<I", masked_crc32c(length)) + payload
                         + struct.pack("<I", masked_crc32c(payload)))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TFRecordWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
