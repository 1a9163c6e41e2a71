"""TFRecord framing, the container of event files: written and read here only.

A record is the data's length (8 bytes, little-endian), the masked CRC-32C of
those 8 bytes, the data, and the masked CRC-32C of the data. CRC-32C comes
from ``google-crc32c`` (in C: TensorBoard's pure-Python one takes about 0.4 s
per MiB). Reading never stops at a damaged record: what is intact before and
after it is read, and each damage is reported, naming the file and the byte
offset.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator

import google_crc32c

from tbviz.io import fs

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
HEADER = struct.Struct("<QI")  # data length, masked CRC of the length's 8 bytes
FOOTER = struct.Struct("<I")  # masked CRC of the data


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli), rotated and offset."""
    return _masked(google_crc32c.value(data))


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(head: bytes, tail: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """The pieces of one record holding ``head + tail``, to be written one after the other.

    The data is given in two parts so that a large tail (the pictures) is
    checksummed and written without being copied into one buffer.
    """
    length = _LENGTH.pack(len(head) + len(tail))
    crc = google_crc32c.extend(google_crc32c.value(head), tail)
    return length + _CRC.pack(masked_crc32c(length)) + head, tail, _CRC.pack(_masked(crc))


def header_at(data, offset: int, size: int) -> int | None:
    """The data length of an intact record header at `offset` of `data` (`size` bytes), else None."""
    if size - offset < HEADER.size:
        return None
    length, length_crc = HEADER.unpack_from(data, offset)
    if length > size - offset - HEADER.size - FOOTER.size:
        return None
    if masked_crc32c(data[offset : offset + 8]) != length_crc:
        return None
    return length


def records(
    path: str, cursor: list[int], problems: list[str], tail: list[str]
) -> Iterator[tuple[int, bytes]]:
    """The intact records of one file (a local path or a URL) from byte ``cursor[0]``, as
    ``(offset, data)``.

    A record whose data fails its checksum is skipped and reading goes on
    after it; after a damaged header, reading resumes at the next intact
    header; both are reported in `problems`. A file that ends inside a record
    (truncated, or still being written) stops there, reported in `tail`.
    ``cursor[0]`` follows the reading: in the end, it is where to resume once
    the file has grown.
    """
    if fs.is_url(path):  # an object is read whole from the cursor on: one request
        start = cursor[0]
        whole = fs.read(path, start)
        yield from _scan(path, whole, start, start + len(whole), cursor, problems, tail)
        return
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size <= cursor[0]:
            return
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _scan(path, data, 0, size, cursor, problems, tail)


def _scan(
    path: str, data, base: int, size: int, cursor: list[int], problems: list[str], tail: list[str]
) -> Iterator[tuple[int, bytes]]:
    """`records` over `data`, which holds the file's bytes from offset `base` to `size`."""
    offset = cursor[0]
    while offset < size:
        cursor[0] = offset
        at = offset - base
        length = header_at(data, at, size - base)
        if length is None:
            if size - offset < HEADER.size + FOOTER.size or (
                HEADER.unpack_from(data, at)[1] == masked_crc32c(data[at : at + 8])
            ):
                tail.append(
                    f"{path}: ends inside a record at byte {offset} (truncated, or still "
                    f"being written); skipped its last {size - offset} bytes"
                )
                return
            resume = at + 1
            while resume < size - base and header_at(data, resume, size - base) is None:
                resume += 1
            problems.append(
                f"{path}: damaged record header at byte {offset}; skipped "
                f"{resume - at} bytes"
                + (" to the end of the file" if resume >= size - base else f" up to byte {resume + base}")
            )
            offset = resume + base
            continue
        begin = at + HEADER.size
        end = begin + length
        record = data[begin:end]
        (data_crc,) = FOOTER.unpack_from(data, end)
        if masked_crc32c(record) != data_crc:
            problems.append(
                f"{path}: corrupted record at byte {offset} (checksum mismatch); "
                f"skipped it ({length} bytes)"
            )
        else:
            yield offset, record
        offset = end + FOOTER.size + base
    cursor[0] = offset


def record_at(path: str, offset: int) -> bytes:
    """The data of the record at byte `offset` of `path`.

    Raises:
        OSError: the record is no longer there or no longer intact.
    """
    if fs.is_url(path):
        return _remote_records.get(path, offset)
    damaged = OSError(f"{path}: the record at byte {offset} is no longer there or damaged")
    with open(path, "rb") as file:
        file.seek(offset)
        header = file.read(HEADER.size)
        if len(header) < HEADER.size:
            raise damaged
        length, length_crc = HEADER.unpack(header)
        if masked_crc32c(header[:8]) != length_crc:
            raise damaged
        record = file.read(length + FOOTER.size)
    return _checked(record, length, damaged)


def _checked(record: bytes, length: int, damaged: OSError) -> bytes:
    """The data of a record read as `record` (data and footer), or `damaged` raised."""
    if len(record) < length + FOOTER.size:
        raise damaged
    data = record[:length]
    if masked_crc32c(data) != FOOTER.unpack_from(record, length)[0]:
        raise damaged
    return data


class _RecordCache:
    """Records read back from URLs, the most recently used first, `limit` bytes in all.

    The ACTIVATIONS tab asks for one picture at a time, and the pictures of all
    probe samples of a layer's epoch are one record: each is fetched once (two
    range requests), not once per sample. A record never changes where it is
    (event files are only ever appended to), so what is kept stays true.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._records: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, path: str, offset: int) -> bytes:
        key = (path, offset)
        with self._lock:
            if key in self._records:
                self._records.move_to_end(key)
                return self._records[key]
        data = _remote_record(path, offset)
        with self._lock:
            if key not in self._records and len(data) <= self._limit:
                self._records[key] = data
                self._size += len(data)
                while self._size > self._limit:
                    self._size -= len(self._records.popitem(last=False)[1])
        return data


_remote_records = _RecordCache(64 * 2**20)


def _remote_record(path: str, offset: int) -> bytes:
    damaged = OSError(f"{path}: the record at byte {offset} is no longer there or damaged")
    header = fs.read(path, offset, offset + HEADER.size)
    if len(header) < HEADER.size:
        raise damaged
    length, length_crc = HEADER.unpack(header)
    if masked_crc32c(header[:8]) != length_crc:
        raise damaged
    begin = offset + HEADER.size
    return _checked(fs.read(path, begin, begin + length + FOOTER.size), length, damaged)
