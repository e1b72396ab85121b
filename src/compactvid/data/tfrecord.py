"""TFRecord framing: read and write records with masked CRC32C checks, on any fsspec path.

A record is laid out as TensorFlow writes it::

    uint64 length (little endian) | uint32 masked_crc32c(length) | payload | uint32 masked_crc32c(payload)

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32).

Local files are memory-mapped: a record's payload is then a read-only memoryview of the file, so reading
copies nothing, allocates nothing per record, and skips unwanted records without touching them. (As with
any memory map, a file that is truncated by another program while it is being read ends the process with
SIGBUS; YouTube-8M files are written once.) Other filesystems are read as streams, payloads as bytes.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from typing import BinaryIO, Callable, Iterator, NamedTuple, Union

import fsspec
import crc32c
from fsspec.implementations.local import LocalFileSystem

from compactvid.errors import DataError

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


Payload = Union[bytes, memoryview]


def masked_crc32c(data: Payload) -> int:
    """TensorFlow's masked CRC32C of `data` (bytes or a contiguous memoryview, read in place).

    The `crc32c` package computes it with the CPU's CRC32C instructions and leaves a checked payload in
    the CPU cache for the decoding that follows; after google-crc32c, on the development machine, that
    decoding cost as much as a cold record's (`benchmarks/bench_crc.py`, docs/benchmarks.md)."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class Record(NamedTuple):
    """One record of a TFRecord file: its index in the file, its byte offset, and its payload.

    `payload`: bytes, or a read-only memoryview into the memory-mapped file. `payload_crc`: the masked
    CRC32C the file stores for the payload when it has not been checked yet (see `iter_records`'s
    `defer_payload_check`); `check` compares them.
    """

    path: str
    index: int
    offset: int
    payload: Payload
    payload_crc: int | None = None

    def where(self) -> str:
        """'path: record I (byte O)', the prefix of every error message about this record."""
        return _where(self.path, self.index, self.offset)

    def check(self) -> None:
        """Raise RecordError if the payload does not match its stored CRC (not checked yet)."""
        if self.payload_crc is not None and masked_crc32c(self.payload) != self.payload_crc:
            raise _payload_crc_error(self.path, self.index, self.offset, len(self.payload))


class RecordError(DataError):
    """The framing of a TFRecord file is broken at one record.

    `resumable` is True when the following records can still be read (only the payload was bad);
    False when the file cannot be followed past this point (broken length, truncated file).
    `index` is the index of the broken record in its file; `next_offset`, for a resumable error, the
    byte offset of the record after it.
    """

    def __init__(self, message: str, resumable: bool = False, index: int = -1, next_offset: int = -1):
        super().__init__(message)
        self.resumable = resumable
        self.index = index
        self.next_offset = next_offset


# The errors of a broken framing, the same for streams and memory-mapped files.
def _where(path: str, index: int, offset: int) -> str:
    return f"{path}: record {index} (byte {offset})"


def _truncated_header_error(path: str, index: int, offset: int, size: int) -> RecordError:
    return RecordError(f"{_where(path, index, offset)}: file truncated inside a record header ({size} of "
                       f"{_HEADER.size} bytes); re-download or re-write the file", resumable=False, index=index)


def _length_crc_error(path: str, index: int, offset: int) -> RecordError:
    return RecordError(f"{_where(path, index, offset)}: length CRC mismatch (the file is corrupt or not a "
                       f"TFRecord file)", resumable=False, index=index)


def _truncated_record_error(path: str, index: int, offset: int, length: int, missing: int) -> RecordError:
    return RecordError(f"{_where(path, index, offset)}: file truncated: the file ends {missing} bytes before the "
                       f"end of this record (of {length} bytes); re-download or re-write the file",
                       resumable=False, index=index)


def _payload_crc_error(path: str, index: int, offset: int, length: int) -> RecordError:
    return RecordError(f"{_where(path, index, offset)}: payload CRC mismatch (the record is corrupt)",
                       resumable=True, index=index, next_offset=offset + _HEADER.size + length + _FOOTER.size)


def read_records(stream: BinaryIO, path: str, check_crc: bool = True, start_index: int = 0,
                 keep: Callable[[int], bool] | None = None, defer_payload_check: bool = False) -> Iterator[Record]:
    """Yield the records of an open binary stream; raise RecordError at the first broken one.

    Records are numbered from `start_index` (the index of the record at the stream's position).
    With `keep`, only records whose index passes it are read and checked; the payloads of the
    others are skipped with a seek (their length CRC is still checked, to trust the length).
    With `defer_payload_check`, payload CRCs are left to `Record.check`.
    After a resumable RecordError the generator is finished; call again with the stream as left
    (positioned after the bad record) and ``start_index`` = the bad record's index + 1 to continue.
    """
    index = start_index
    offset = stream.tell()
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            raise _truncated_header_error(path, index, offset, len(header))
        length, length_crc = _HEADER.unpack(header)
        if check_crc and masked_crc32c(header[:8]) != length_crc:
            raise _length_crc_error(path, index, offset)
        if keep is not None and not keep(index):
            stream.seek(length + _FOOTER.size, 1)
        else:
            payload = stream.read(length)  # read apart from the footer: slicing would copy the payload
            footer = stream.read(_FOOTER.size)
            if len(payload) < length or len(footer) < _FOOTER.size:
                raise _truncated_record_error(path, index, offset, length,
                                              length + _FOOTER.size - len(payload) - len(footer))
            yield _checked(path, index, offset, payload, _FOOTER.unpack(footer)[0], check_crc, defer_payload_check)
        index += 1
        offset += _HEADER.size + length + _FOOTER.size


def _checked(path: str, index: int, offset: int, payload: Payload, crc: int, check_crc: bool,
             defer_payload_check: bool) -> Record:
    """The record, its payload checked against `crc` now, or later by `Record.check`."""
    if not check_crc:
        return Record(path, index, offset, payload)
    if defer_payload_check:
        return Record(path, index, offset, payload, crc)
    if masked_crc32c(payload) != crc:
        raise _payload_crc_error(path, index, offset, len(payload))
    return Record(path, index, offset, payload)


def _read_mapped(data: mmap.mmap, path: str, check_crc: bool, start_offset: int, start_index: int,
                 keep: Callable[[int], bool] | None, defer_payload_check: bool) -> Iterator[Record]:
    """`read_records` over a memory-mapped file, from the record at `start_offset`: payloads are
    memoryviews of the map, and records that `keep` rejects are not touched past their header."""
    view = memoryview(data)
    size = len(data)
    index, offset = start_index, start_offset
    while offset < size:
        if size - offset < _HEADER.size:
            raise _truncated_header_error(path, index, offset, size - offset)
        length, length_crc = _HEADER.unpack_from(data, offset)
        if check_crc and masked_crc32c(data[offset:offset + 8]) != length_crc:
            raise _length_crc_error(path, index, offset)
        start = offset + _HEADER.size
        end = start + length + _FOOTER.size
        if keep is None or keep(index):
            if end > size:
                raise _truncated_record_error(path, index, offset, length, end - size)
            yield _checked(path, index, offset, view[start:start + length],
                           _FOOTER.unpack_from(data, start + length)[0], check_crc, defer_payload_check)
        index += 1
        offset = end


def _mapped(path: str) -> mmap.mmap | None:
    """A read-only memory map of `path` if it is a local, non-empty file; None for other filesystems
    (and for empty files, which cannot be mapped and have no records)."""
    fs, local_path = fsspec.core.url_to_fs(path)
    if not isinstance(fs, LocalFileSystem):
        return None
    with open(local_path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return None
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)


def iter_records(path: str, check_crc: bool = True, keep: Callable[[int], bool] | None = None,
                 on_error: Callable[[RecordError], None] | None = None,
                 defer_payload_check: bool = False) -> Iterator[Record]:
    """Yield the records of the TFRecord file at `path` (any fsspec URL), optionally only those `keep`s.

    A broken record raises RecordError; with `on_error`, it is passed to `on_error` instead and reading
    goes on after it (bad payload) or stops there (the rest of the file cannot be framed). A broken
    framing met while skipping a record that `keep` rejects ends the file silently: the reader that
    keeps that record reports it. A file that cannot be opened or read raises DataError.

    `defer_payload_check`: yield records whose payload CRC is not checked yet; the caller checks each
    with `Record.check` when it uses it (its RecordError is then the caller's to handle). A reader that
    holds records for a while (a shuffle buffer) thus reads each payload once, just before decoding it.
    """
    try:
        data = _mapped(path)
        with contextlib.ExitStack() as stack:
            stream = stack.enter_context(fsspec.open(path, "rb")) if data is None else None
            index = offset = 0
            while True:
                try:
                    if data is None:
                        yield from read_records(stream, path, check_crc, index, keep, defer_payload_check)
                    else:
                        yield from _read_mapped(data, path, check_crc, offset, index, keep, defer_payload_check)
                    return
                except RecordError as error:
                    if keep is not None and not keep(error.index):
                        return
                    if on_error is None:
                        raise
                    on_error(error)
                    if not error.resumable:
                        return
                    index, offset = error.index + 1, error.next_offset  # a stream is already there
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
