"""The change metric: how much a layer's activations moved since the previous logged epoch.

`coarse` runs inside the logging step on maps that `tbviz.numerics.pictures` has
already shrunk; it shrinks each map further, to at most
``tags.COARSE_SIZE`` pixels a side, so that what leaves the step and is
kept on the host until the next logged epoch is at most
``N x COARSE_SIZE x COARSE_SIZE x max_channels`` floats per layer (128 kB for
8 probe samples and 64 channels). `relative_change` compares two of those on
the host. The definition is `tbviz.io.tags`'s (``change/<layer>``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tbviz.io import tags
from tbviz.numerics.pictures import downsample

_TINY = 1e-12


def coarse_size(map_hw: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` that maps of `map_hw` pixels are compared at: at most ``COARSE_SIZE`` a side."""
    return min(map_hw[0], tags.COARSE_SIZE), min(map_hw[1], tags.COARSE_SIZE)


def coarse(maps: Any, *, finite: Any = None) -> Any:
    """Shrinks float maps ``(N, h, w, M)`` by area averaging to `coarse_size`.

    `finite`: whether the maps may hold NaN/Inf (see `tbviz.numerics.pictures.when_finite`).
    """
    return downsample(maps, coarse_size(tuple(maps.shape[1:3])), finite=finite)


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
