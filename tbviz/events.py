"""Reads tbviz summaries back from event files, without TensorFlow.

Used by ``tbviz export``, the Activations dashboard (`tbviz.plugin`) and the
tests. A truncated or corrupted event file
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

`RunReader` reads a run directory once and afterwards only what was appended
to its event files (a run still being written); it can leave the PNGs on
disk and keep where each logged step's record is, for `read_pictures` to
fetch: a big log then costs a small index in memory, not its pictures.
"""

from __future__ import annotations

import glob
import mmap
import os
import struct
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import google_crc32c
import numpy as np
from google.protobuf.message import DecodeError
from tensorboard import data_compat, dataclass_compat
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from tbviz import metadata


@dataclass
class ImageStep:
    """One logged step of one image tag: the PNG of each probe sample.

    `pngs` is empty when the run was read with ``pictures=False``; `count` is
    then the number of PNGs in the record at `location` (event file, byte
    offset), which `read_pictures` reads back.
    """

    step: int
    wall_time: float
    width: int
    height: int
    pngs: list[bytes]
    count: int = 0
    location: tuple[str, int] | None = None


@dataclass
class ReadResult:
    """Everything tbviz wrote in one run directory, by tag."""

    images: dict[str, list[ImageStep]] = field(default_factory=lambda: defaultdict(list))
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    histograms: dict[str, list[tuple[int, np.ndarray]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    problems: list[str] = field(default_factory=list)
    descriptions: dict[str, str] = field(default_factory=dict)  # tag -> its first description

    def tags(self) -> set[str]:
        return set(self.images) | set(self.scalars) | set(self.histograms)


def event_files(run_dir: str) -> list[str]:
    """The event files of one run directory, oldest first.

    Names are ``events.out.tfevents.<seconds>.<host>.<pid>.<counter>...``:
    numbers compare as numbers, so a process's 10th file of one second
    (counter 10) comes after its 9th, not before.
    """

    def order(path: str) -> list[tuple[int, int, str]]:
        parts = os.path.basename(path).split(".")
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts]

    return sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")), key=order)


def read_run(run_dir: str) -> ReadResult:
    """Reads every tbviz summary in `run_dir` (e.g. ``<log_dir>/activations``).

    Steps of a tag appear in file order; a step logged twice (a resumed run)
    keeps its latest value.
    """
    reader = RunReader(run_dir)
    reader.update()
    return reader.result()


class RunReader:
    """Reads one run directory, then, on each `update`, only what is new in it.

    New event files and bytes appended to known ones are read; a file that
    shrank, vanished or sorts before one already read makes the next `update`
    read the run again from the start. A record cut short at the end of a file
    (still being written) is read once it is complete. Not thread-safe: the
    caller serialises `update` and `result`.

    Args:
        run_dir: the run directory.
        pictures: keep the PNGs in memory; with False, `ImageStep.pngs` is
            empty and `read_pictures` reads them when needed. Defaults to `True`.
        kinds: read only these tag kinds (`tbviz.metadata.KINDS`); None for
            all. Defaults to `None`.
    """

    def __init__(
        self, run_dir: str, *, pictures: bool = True, kinds: Iterable[str] | None = None
    ) -> None:
        self.run_dir = run_dir
        self._pictures = pictures
        self._kinds = None if kinds is None else frozenset(kinds)
        self._reset()

    def _reset(self) -> None:
        self._raw = ReadResult()  # every item in file order, duplicates included
        self._files: dict[str, tuple[int, float, int]] = {}  # path -> (size, mtime, read up to)
        self._tails: dict[str, str] = {}  # path -> its incomplete last record, for now
        self._initial_metadata: dict = {}  # per run, as TensorBoard keeps it (dataclass_compat)
        self._plugins: dict[str, str] = {}  # tag -> plugin name of its first event that had one
        self._result: ReadResult | None = None

    def update(self) -> bool:
        """Reads what is new on disk; returns whether anything was."""
        paths = event_files(self.run_dir)
        stats = {}
        for path in paths:
            try:
                info = os.stat(path)
            except OSError:
                continue
            stats[path] = (info.st_size, info.st_mtime)
        known = list(self._files)
        if any(
            path not in stats or stats[path][0] < self._files[path][0] for path in known
        ) or (known and any(path < known[-1] for path in stats if path not in self._files)):
            self._reset()
        changed = False
        for path, (size, mtime) in stats.items():
            old_size, old_mtime, start = self._files.get(path, (-1, 0.0, 0))
            if (size, mtime) == (old_size, old_mtime):
                continue
            changed = True
            self._tails.pop(path, None)
            tail: list[str] = []
            cursor = [start]
            try:
                for event, offset in _load_events(
                    path, cursor, self._initial_metadata, self._raw.problems, tail
                ):
                    for value in event.summary.value:
                        _add(
                            self._raw, event, value, self._plugins, (path, offset),
                            self._pictures, self._kinds,
                        )  # fmt: skip
            except Exception as error:  # noqa: BLE001 -- a damaged file must not stop the rest
                self._raw.problems.append(
                    f"{path}: stopped reading ({type(error).__name__}: {error})"
                )
                cursor[0] = size
            if tail:
                self._tails[path] = tail[0]
            self._files[path] = (size, mtime, cursor[0])
        if changed:
            self._result = None
        return changed

    def result(self) -> ReadResult:
        """What was read so far: each tag's steps in order, a step logged twice at its latest."""
        if self._result is None:
            result = ReadResult(
                problems=[*self._raw.problems, *self._tails.values()],
                descriptions=dict(self._raw.descriptions),
            )
            for tag, images in self._raw.images.items():
                result.images[tag] = _latest(images)
            for tag, scalars in self._raw.scalars.items():
                result.scalars[tag] = _latest(scalars)
            for tag, histograms in self._raw.histograms.items():
                result.histograms[tag] = _latest(histograms)
            self._result = result
        return self._result


def read_pictures(step: ImageStep, tag: str) -> list[bytes]:
    """The PNGs of `step` (an image step of `tag`), read back from its event file if need be.

    Raises:
        OSError: the record is no longer there or no longer intact.
    """
    if step.pngs or step.location is None:
        return step.pngs
    path, offset = step.location
    damaged = OSError(f"{path}: the record at byte {offset} is no longer there or damaged")
    with open(path, "rb") as file:
        file.seek(offset)
        header = file.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise damaged
        length, length_crc = _HEADER.unpack(header)
        if _masked_crc32c(header[:8]) != length_crc:
            raise damaged
        record = file.read(length + _FOOTER.size)
    if len(record) < length + _FOOTER.size:
        raise damaged
    data = record[:length]
    if _masked_crc32c(data) != _FOOTER.unpack_from(record, length)[0]:
        raise damaged
    try:
        event = data_compat.migrate_event(event_pb2.Event.FromString(data))
    except DecodeError:
        raise damaged from None
    for value in event.summary.value:
        if value.tag == tag:
            return list(value.tensor.string_val)[2:]
    raise damaged


_Item = TypeVar("_Item", ImageStep, tuple[int, float], tuple[int, np.ndarray])


def _latest(items: list[_Item]) -> list[_Item]:
    """`items` in step order, a step logged more than once at its last value."""
    latest = {_step(item): item for item in items}
    return [latest[s] for s in sorted(latest)]


def _step(item) -> int:
    return item.step if isinstance(item, ImageStep) else item[0]


def _add(
    result: ReadResult,
    event,
    value,
    plugins: dict[str, str],
    location: tuple[str, int] | None = None,
    pictures: bool = True,
    kinds: frozenset[str] | None = None,
) -> None:
    parsed = metadata.parse_tag(value.tag)
    if parsed is None:
        return
    kind, _ = parsed
    # Writers may keep a tag's metadata for its first event only (TF1's FileWriter).
    plugin = value.metadata.plugin_data.plugin_name or plugins.get(value.tag, "")
    if plugin:
        plugins.setdefault(value.tag, plugin)
    if kinds is not None and kind not in kinds:
        return
    if value.metadata.summary_description and value.tag not in result.descriptions:
        result.descriptions[value.tag] = value.metadata.summary_description
    if kind == metadata.IMAGE and plugin == "images":
        strings = value.tensor.string_val
        result.images[value.tag].append(
            ImageStep(
                step=event.step,
                wall_time=event.wall_time,
                width=int(strings[0]),
                height=int(strings[1]),
                pngs=list(strings[2:]) if pictures else [],
                count=len(strings) - 2,
                location=location,
            )
        )
    elif kind in (*metadata.SCALAR_KINDS, metadata.CHANGE) and plugin == "scalars":
        result.scalars[value.tag].append((event.step, _scalar(value.tensor)))
    elif kind == metadata.DISTRIBUTION and plugin == "histograms":
        result.histograms[value.tag].append((event.step, tensor_util.make_ndarray(value.tensor)))


def _scalar(tensor) -> float:
    # A scalar written as one float or double value (as tf.summary and tbviz write them) is
    # read directly: make_ndarray costs most of the time of reading a big log.
    if len(tensor.float_val) == 1 and not tensor.tensor_content:
        return float(tensor.float_val[0])
    if len(tensor.double_val) == 1 and not tensor.tensor_content:
        return float(tensor.double_val[0])
    return float(tensor_util.make_ndarray(tensor))


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
    for _, record in _records(path, [0], problems, problems):
        yield record


def _records(
    path: str, cursor: list[int], problems: list[str], tail: list[str]
) -> Iterator[tuple[int, bytes]]:
    """`iter_records` from byte ``cursor[0]``, as ``(offset, record)``.

    ``cursor[0]`` follows the reading: in the end, it is where to resume once
    the file has grown. An incomplete last record is reported in `tail`.
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size <= cursor[0]:
            return
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            offset = cursor[0]
            while offset < size:
                cursor[0] = offset
                length = _header_at(data, offset, size)
                if length is None:
                    if size - offset < _HEADER.size + _FOOTER.size or (
                        _HEADER.unpack_from(data, offset)[1]
                        == _masked_crc32c(data[offset : offset + 8])
                    ):
                        tail.append(
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
                begin = offset + _HEADER.size
                end = begin + length
                record = data[begin:end]
                (data_crc,) = _FOOTER.unpack_from(data, end)
                if _masked_crc32c(record) != data_crc:
                    problems.append(
                        f"{path}: corrupted record at byte {offset} (checksum mismatch); "
                        f"skipped it ({length} bytes)"
                    )
                else:
                    yield offset, record
                offset = end + _FOOTER.size
            cursor[0] = offset


def _load_events(
    path: str, cursor: list[int], initial_metadata: dict, problems: list[str], tail: list[str]
) -> Iterator[tuple[Any, int]]:
    """The events of `path` from byte ``cursor[0]`` (see `_records`), with their record's offset."""
    for offset, record in _records(path, cursor, problems, tail):
        try:
            event = event_pb2.Event.FromString(record)
        except DecodeError as error:
            problems.append(
                f"{path}: record at byte {offset} is not an event ({error}); skipped it"
            )
            continue
        for migrated in dataclass_compat.migrate_event(
            data_compat.migrate_event(event), initial_metadata
        ):
            yield migrated, offset
