"""Reads tbviz summaries back from event files, without TensorFlow.

Used by ``tbviz export``, the Activations dashboard (`tbviz.plugin`) and the
tests. A truncated or corrupted event file
yields every record that is still intact -- before *and after* a damaged
record -- and each damage is reported, naming the file and the byte offset,
through `ReadResult.problems` instead of an exception.

Records are read by `tbviz.io.records` rather than with TensorBoard's
loader, which imports TensorFlow and silently stops at the first damaged
record.
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
import os
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard import data_compat, dataclass_compat
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from tbviz.io import fs, records, tags


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


@dataclass(frozen=True)
class Judged:
    """A finding as read back from a run: the `tags.Finding` at its onset, the last logged
    step it held at, and whether that is the run's last logged step (it still holds)."""

    finding: tags.Finding
    until: int
    ongoing: bool

    def to_dict(self, run: str) -> dict[str, Any]:
        """The finding as ``tbviz report --json`` prints it (and the tab reads it): epochs as
        Keras prints them (`tags.epoch_number`), beside the steps TensorBoard shows."""
        finding = self.finding
        return {
            "run": run,
            "layer": finding.layer,
            "kind": finding.kind,
            "severity": finding.severity,
            "since": tags.epoch_number(finding.since),
            "until": tags.epoch_number(self.until),
            "ongoing": self.ongoing,
            "since_step": finding.since,
            "until_step": self.until,
            "value": finding.value,
            "detail": finding.detail,
            "origin": finding.origin,
            "frozen": finding.frozen,
            "message": finding.sentence(),
        }


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
    # layer path -> (step, how its pictures were made), in step order
    infos: dict[str, list[tuple[int, tags.LayerInfo]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # layer path -> (step, its findings at that step), in step order
    health: dict[str, list[tuple[int, list[tags.Finding]]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def findings(self) -> list[Judged]:
        """Every finding of the run, once each (a finding is written at every step it holds):
        warnings first, then by onset step and model order."""
        order = {layer: i for i, layer in enumerate(self.health)}
        last = max((steps[-1][0] for steps in self.health.values() if steps), default=None)
        seen: dict[tuple[str, str, int], Judged] = {}
        for layer, steps in self.health.items():
            for step, findings in steps:
                for finding in findings:
                    key = (layer, finding.kind, finding.since)
                    first = seen.get(key)
                    seen[key] = Judged(first.finding if first else finding, step, step == last)
        return sorted(
            seen.values(),
            key=lambda j: (j.finding.severity != "warning", j.finding.since, order[j.finding.layer]),
        )

    def info(self, layer: str, step: int | None = None) -> tags.LayerInfo | None:
        """The layer's `LayerInfo` at `step` (None: its last), or None if none was logged."""
        logged = self.infos.get(layer, [])
        if step is None:
            return logged[-1][1] if logged else None
        return next((info for s, info in logged if s == step), None)

    def tags(self) -> set[str]:
        """Every tbviz tag read."""
        layer_tags = {tags.tag(tags.LAYER, layer) for layer in self.infos}
        layer_tags |= {tags.tag(tags.HEALTH, layer) for layer in self.health}
        return set(self.images) | set(self.scalars) | set(self.histograms) | layer_tags


def event_files(run_dir: str) -> list[str]:
    """The event files of one run directory (a local path or a URL), oldest first (see `order`)."""
    return sorted(_event_file_stats(run_dir), key=order)


def order(path: str) -> list[tuple[int, int, str]]:
    """The sort key of an event file: its name's parts, numbers compared as numbers.

    Names are ``events.out.tfevents.<seconds>.<host>.<pid>.<counter>...``, so a
    process's 10th file of one second (counter 10) comes after its 9th, not before.
    """
    parts = path.replace(os.sep, "/").rsplit("/", 1)[-1].split(".")
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts]


def _event_file_stats(run_dir: str) -> dict[str, tuple[int, object]]:
    """``{event file: (size, when it last changed)}`` of one run directory, in one listing."""
    if fs.is_url(run_dir):
        return {
            url: stat
            for url, stat in fs.list_files(run_dir).items()
            if fs.basename(url).startswith(_PREFIX)
        }
    found: dict[str, tuple[int, object]] = {}
    pattern = os.path.join(glob.escape(fs.local_path(run_dir)), _PREFIX + "*")
    for path in glob.glob(pattern):
        try:
            info = os.stat(path)
        except OSError:  # removed since the listing
            continue
        found[path] = (info.st_size, info.st_mtime)
    return found


_PREFIX = "events.out.tfevents."


def existing_event_files(run_dir: str, timeout: float = 10) -> list[str]:
    """`event_files`, or none when the run directory cannot be listed (it does not exist yet,
    the server cannot be reached, or does not answer within `timeout` seconds)."""
    if not fs.is_url(run_dir):
        try:
            return event_files(run_dir)
        except Exception:  # noqa: BLE001 -- a question asked in passing: no answer is "none"
            return []
    found: list[list[str]] = []

    def ask() -> None:
        try:
            found.append(event_files(run_dir))
        except Exception:  # noqa: BLE001 -- a question asked in passing: no answer is "none"
            pass

    # Asked on the training thread: a server that does not answer must not hold training up.
    asking = threading.Thread(target=ask, daemon=True, name="tbviz-list")
    asking.start()
    asking.join(timeout)
    return found[0] if found else []


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
        kinds: read only these tag kinds (`tbviz.io.tags.KINDS`); None for
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
        self._files: dict[str, tuple[int, object, int]] = {}  # path -> (size, mtime, read up to)
        self._tails: dict[str, str] = {}  # path -> its incomplete last record, for now
        self._initial_metadata: dict = {}  # per run, as TensorBoard keeps it (dataclass_compat)
        self._plugins: dict[str, str] = {}  # tag -> plugin name of its first event that had one
        self._result: ReadResult | None = None

    def update(self) -> bool:
        """Reads what is new on disk; returns whether anything was."""
        stats = dict(sorted(_event_file_stats(self.run_dir).items(), key=lambda i: order(i[0])))
        known = list(self._files)
        last = order(known[-1]) if known else None
        if any(
            path not in stats or stats[path][0] < self._files[path][0] for path in known
        ) or (last and any(order(path) < last for path in stats if path not in self._files)):
            self._reset()
        changed = False
        for path, (size, mtime) in stats.items():
            old_size, old_mtime, start = self._files.get(path, (-1, None, 0))
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
            for layer, infos in self._raw.infos.items():
                result.infos[layer] = _latest(infos)
            for layer, health in self._raw.health.items():
                result.health[layer] = _latest(health)
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
    data = records.record_at(path, offset)
    damaged = OSError(f"{path}: the record at byte {offset} is no longer an event of {tag!r}")
    try:
        event = data_compat.migrate_event(event_pb2.Event.FromString(data))
    except DecodeError:
        raise damaged from None
    for value in event.summary.value:
        if value.tag == tag:
            return list(value.tensor.string_val)[2:]
    raise damaged


_Item = TypeVar(
    "_Item",
    ImageStep,
    tuple[int, float],
    tuple[int, np.ndarray],
    tuple[int, tags.LayerInfo],
    tuple[int, list[tags.Finding]],
)


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
    parsed = tags.parse_tag(value.tag)
    if parsed is None:
        return
    kind, layer = parsed
    # Writers may keep a tag's metadata for its first event only (TF1's FileWriter).
    plugin = value.metadata.plugin_data.plugin_name or plugins.get(value.tag, "")
    if plugin:
        plugins.setdefault(value.tag, plugin)
    if kinds is not None and kind not in kinds:
        return
    if value.metadata.summary_description and value.tag not in result.descriptions:
        result.descriptions[value.tag] = value.metadata.summary_description
    if kind == tags.IMAGE and plugin == "images":
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
    elif kind in (*tags.SCALAR_KINDS, *tags.HEALTH_SCALAR_KINDS, tags.CHANGE) and plugin == "scalars":
        result.scalars[value.tag].append((event.step, _scalar(value.tensor)))
    elif kind == tags.DISTRIBUTION and plugin == "histograms":
        result.histograms[value.tag].append((event.step, tensor_util.make_ndarray(value.tensor)))
    elif kind == tags.LAYER and plugin == tags.PLUGIN_NAME and value.tensor.string_val:
        info = tags.LayerInfo.from_json(value.tensor.string_val[0])
        if info is not None:
            result.infos[layer].append((event.step, info))
    elif kind == tags.HEALTH and plugin == tags.PLUGIN_NAME and value.tensor.string_val:
        findings = tags.findings_from_json(value.tensor.string_val[0], layer)
        if findings is not None:
            result.health[layer].append((event.step, findings))


def _scalar(tensor) -> float:
    # A scalar written as one float or double value (as tf.summary and tbviz write them) is
    # read directly: make_ndarray costs most of the time of reading a big log.
    if len(tensor.float_val) == 1 and not tensor.tensor_content:
        return float(tensor.float_val[0])
    if len(tensor.double_val) == 1 and not tensor.tensor_content:
        return float(tensor.double_val[0])
    return float(tensor_util.make_ndarray(tensor))


def _load_events(
    path: str, cursor: list[int], initial_metadata: dict, problems: list[str], tail: list[str]
) -> Iterator[tuple[Any, int]]:
    """The events of `path` from byte ``cursor[0]`` (see `tbviz.io.records.records`), with
    their record's offset."""
    for offset, record in records.records(path, cursor, problems, tail):
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
