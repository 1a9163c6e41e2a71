"""Reads tbviz summaries back from event files, without TensorFlow.

Used by ``tbviz export`` and by the tests. A truncated or corrupted event file
yields every record that is still intact -- before *and after* a damaged
record -- and each damage is reported, naming the file and the byte offset,
through `ReadResult.problems` instead of an exception.

Records are framed and checksummed here (TFRecord: a length, its masked
CRC-32C, the data, its masked CRC-32C; CRC-32C by ``google-crc32c``) rather
than with TensorBoard's loader, which imports TensorFlow and silently stops
at the first damaged record.
Events then go through TensorBoard's read-time compatibility layers
(``data_compat``, ``dataclass_compat``), as in TensorBoard itself, so logs
written by older writers (TF1-style summaries, metadata only on a tag's first
event) read the same.
"""

from __future__ import annotations

import glob
import mmap
import os
import struct
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import google_crc32c
import numpy as np
from google.protobuf.message import DecodeError
from tensorboard import data_compat, dataclass_compat
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from tbviz import metadata


@dataclass
class ImageStep:
    """One logged step of one image tag: the PNG of each probe sample."""

    step: int
    wall_time: float
    width: int
    height: int
    pngs: list[bytes]


@dataclass
class ReadResult:
    """Everything tbviz wrote in one run directory, by tag."""

    images: dict[str, list[ImageStep]] = field(default_factory=lambda: defaultdict(list))
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    histograms: dict[str, list[tuple[int, np.ndarray]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    problems: list[str] = field(default_factory=list)

    def tags(self) -> set[str]:
        return set(self.images) | set(self.scalars) | set(self.histograms)


def event_files(run_dir: str) -> list[str]:
    """The event files of one run directory, oldest first."""
    return sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))


def read_run(run_dir: str) -> ReadResult:
    """Reads every tbviz summary in `run_dir` (e.g. ``<log_dir>/activations``).

    Steps of a tag appear in file order; a step logged twice (a resumed run)
    keeps its latest value.
    """
    result = ReadResult()
    initial_metadata: dict = {}  # per run, as TensorBoard keeps it (dataclass_compat)
    plugins: dict[str, str] = {}  # tag -> plugin name of its first event that had one
    for path in event_files(run_dir):
        try:
            for event in _load_events(path, initial_metadata, result.problems):
                for value in event.summary.value:
                    _add(result, event, value, plugins)
        except Exception as error:  # noqa: BLE001 -- a damaged file must not stop the rest
            result.problems.append(f"{path}: stopped reading ({type(error).__name__}: {error})")
    for series in (result.images, result.scalars, result.histograms):
        for tag, items in series.items():
            latest = {_step(item): item for item in items}
            series[tag] = [latest[s] for s in sorted(latest)]
    return result


def _step(item) -> int:
    return item.step if isinstance(item, ImageStep) else item[0]


def _add(result: ReadResult, event, value, plugins: dict[str, str]) -> None:
    parsed = metadata.parse_tag(value.tag)
    if parsed is None:
        return
    kind, _ = parsed
    # Writers may keep a tag's metadata for its first event only (TF1's FileWriter).
    plugin = value.metadata.plugin_data.plugin_name or plugins.get(value.tag, "")
    if plugin:
        plugins.setdefault(value.tag, plugin)
    if kind == metadata.IMAGE and plugin == "images":
        strings = list(value.tensor.string_val)
        result.images[value.tag].append(
            ImageStep(
                step=event.step,
                wall_time=event.wall_time,
                width=int(strings[0]),
                height=int(strings[1]),
                pngs=strings[2:],
            )
        )
    elif kind in metadata.SCALAR_KINDS and plugin == "scalars":
        result.scalars[value.tag].append(
            (event.step, float(tensor_util.make_ndarray(value.tensor)))
        )
    elif kind == metadata.DISTRIBUTION and plugin == "histograms":
        result.histograms[value.tag].append((event.step, tensor_util.make_ndarray(value.tensor)))


def decode_png(png: bytes) -> np.ndarray:
    """Decodes a PNG to an ``(H, W, 3)`` uint8 array."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli), rotated and offset."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_HEADER = struct.Struct("<QI")  # data length, masked CRC of the length's 8 bytes
_FOOTER = struct.Struct("<I")  # masked CRC of the data


def _header_at(data, offset: int, size: int) -> int | None:
    """The data length of an intact record header at `offset`, else None."""
    if size - offset < _HEADER.size:
        return None
    length, length_crc = _HEADER.unpack_from(data, offset)
    if length > size - offset - _HEADER.size - _FOOTER.size:
        return None
    if _masked_crc32c(data[offset : offset + 8]) != length_crc:
        return None
    return length


def iter_records(path: str, problems: list[str]) -> Iterator[bytes]:
    """Yields the intact records of one TFRecord file; appends to `problems` what was skipped.

    A record whose data fails its checksum is skipped and reading goes on
    after it; after a damaged header, reading resumes at the next intact
    header; a file that ends inside a record (truncated, or still being
    written) stops there.
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            offset = 0
            while offset < size:
                length = _header_at(data, offset, size)
                if length is None:
                    if size - offset < _HEADER.size + _FOOTER.size or (
                        _HEADER.unpack_from(data, offset)[1]
                        == _masked_crc32c(data[offset : offset + 8])
                    ):
                        problems.append(
                            f"{path}: ends inside a record at byte {offset} (truncated, or still "
                            f"being written); skipped its last {size - offset} bytes"
                        )
                        return
                    resume = offset + 1
                    while resume < size and _header_at(data, resume, size) is None:
                        resume += 1
                    problems.append(
                        f"{path}: damaged record header at byte {offset}; skipped "
                        f"{resume - offset} bytes"
                        + (" to the end of the file" if resume >= size else f" up to byte {resume}")
                    )
                    offset = resume
                    continue
                start = offset + _HEADER.size
                end = start + length
                record = data[start:end]
                (data_crc,) = _FOOTER.unpack_from(data, end)
                if _masked_crc32c(record) != data_crc:
                    problems.append(
                        f"{path}: corrupted record at byte {offset} (checksum mismatch); "
                        f"skipped it ({length} bytes)"
                    )
                else:
                    yield record
                offset = end + _FOOTER.size


def _load_events(path: str, initial_metadata: dict, problems: list[str]) -> Iterator:
    for index, record in enumerate(iter_records(path, problems)):
        try:
            event = event_pb2.Event.FromString(record)
        except DecodeError as error:
            problems.append(f"{path}: record {index} is not an event ({error}); skipped it")
            continue
        yield from dataclass_compat.migrate_event(
            data_compat.migrate_event(event), initial_metadata
        )
