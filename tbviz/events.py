"""Reads tbviz summaries back from event files, without TensorFlow.

Used by ``tbviz export`` and by the tests. A truncated or corrupted event file
yields what is readable before the damage; the damage is reported through
`ReadResult.problems` instead of an exception.
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from tensorboard.backend.event_processing import event_file_loader
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
    for path in event_files(run_dir):
        try:
            for event in event_file_loader.EventFileLoader(path).Load():
                for value in event.summary.value:
                    _add(result, event, value)
        except Exception as error:  # noqa: BLE001 -- a damaged file must not stop the rest
            result.problems.append(f"{path}: stopped reading at a damaged record ({error})")
    for series in (result.images, result.scalars, result.histograms):
        for tag, items in series.items():
            latest = {_step(item): item for item in items}
            series[tag] = [latest[s] for s in sorted(latest)]
    return result


def _step(item) -> int:
    return item.step if isinstance(item, ImageStep) else item[0]


def _add(result: ReadResult, event, value) -> None:
    parsed = metadata.parse_tag(value.tag)
    if parsed is None:
        return
    kind, _ = parsed
    plugin = value.metadata.plugin_data.plugin_name
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
