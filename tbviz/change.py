"""The change metric: how much a layer's activations moved since the previous logged epoch.

`coarse` runs inside the logging step on maps that `tbviz.pictures` has
already shrunk; it shrinks each map further, to at most
``metadata.COARSE_SIZE`` pixels a side, so that what leaves the step and is
kept on the host until the next logged epoch is at most
``N x COARSE_SIZE x COARSE_SIZE x max_channels`` floats per layer (128 kB for
8 probe samples and 64 channels). `relative_change` compares two of those on
the host. The definition is `tbviz.metadata`'s (``change/<layer>``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tbviz import metadata
from tbviz.pictures import downsample

_TINY = 1e-12


def coarse(maps: Any, *, finite: Any = None) -> Any:
    """Shrinks float maps ``(N, h, w, M)`` by area averaging to at most ``COARSE_SIZE`` a side.

    `finite`: whether the maps may hold NaN/Inf (see `tbviz.pictures.when_finite`).
    """
    h, w = maps.shape[1], maps.shape[2]
    size = (min(h, metadata.COARSE_SIZE), min(w, metadata.COARSE_SIZE))
    return downsample(maps, size, finite=finite)


def relative_change(current: np.ndarray, previous: np.ndarray) -> float | None:
    """``||current - previous|| / ||previous||`` over positions finite in both.

    None when the two cannot be compared (different shapes: the layer's
    pictures were set up differently).
    """
    current, previous = np.asarray(current, np.float64), np.asarray(previous, np.float64)
    if current.shape != previous.shape:
        return None
    finite = np.isfinite(current) & np.isfinite(previous)
    a, b = current[finite], previous[finite]
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), _TINY))
