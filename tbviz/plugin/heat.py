"""The change heat map's colours: viridis on a log scale, for the viewers and for ``tbviz export``.

All colour ``change/<layer>`` values the same way, from this one scale: the
viewers get each cell's colour and the legend's ramp in the run's answer
(`tbviz.plugin.viewdata`), the export paints them into ``change.png``. A
change of exactly 0 (nothing moved: a frozen or dead layer) is not the
scale's lowest colour but `NO_CHANGE_COLOUR`, white, drawn with an outline.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tbviz.io.png import colormap_colours

CMAP = "viridis"
NO_CHANGE_COLOUR = (255, 255, 255)  # a change of exactly 0: in no part of viridis
_LEVELS = 256


@dataclass(frozen=True)
class HeatScale:
    """A log scale from the smallest to the largest positive value.

    Attributes:
        low, high: the smallest and largest positive finite values (None: there are none).
    """

    low: float | None
    high: float | None

    @classmethod
    def of(cls, values: Iterable[float | None]) -> HeatScale:
        positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
        return cls(min(positive), max(positive)) if positive else cls(None, None)

    def position(self, value: float | None) -> float | None:
        """Where `value` sits on the scale, 0 to 1 (0 and below: 0); None for no value."""
        if value is None or not math.isfinite(value):
            return None
        if value <= 0 or self.low is None or self.high is None:
            return 0.0
        if self.high <= self.low:
            return 1.0
        lo, hi = math.log10(self.low), math.log10(self.high)
        return min(1.0, max(0.0, (math.log10(value) - lo) / (hi - lo)))

    def colour(self, value: float | None) -> tuple[int, int, int] | None:
        """The colour of `value` (RGB): `NO_CHANGE_COLOUR` for 0 and below, None for no value."""
        t = self.position(value)
        if t is None:
            return None
        if value is not None and value <= 0:
            return NO_CHANGE_COLOUR
        r, g, b = _colours()[round(t * (_LEVELS - 1))]
        return int(r), int(g), int(b)


def hex_colour(rgb: tuple[int, int, int] | None) -> str | None:
    return None if rgb is None else "#{:02x}{:02x}{:02x}".format(*rgb)


def ticks(scale: HeatScale, count: int = 5) -> list[float]:
    """`count` values evenly spaced on the log scale from `scale.low` to `scale.high`, for a
    legend's labels ([] without values; one when low == high)."""
    if scale.low is None or scale.high is None:
        return []
    if scale.high <= scale.low:
        return [scale.low]
    lo, hi = math.log10(scale.low), math.log10(scale.high)
    return [float(f"{10 ** (lo + (hi - lo) * i / (count - 1)):.3g}") for i in range(count)]


def ramp(stops: int = 9) -> list[str]:
    """`stops` colours of the scale, low to high, for a legend's gradient."""
    colours = _colours()
    picked = [colours[round(i * (_LEVELS - 1) / (stops - 1))] for i in range(stops)]
    return [hex_colour((int(r), int(g), int(b))) or "" for r, g, b in picked]


@functools.lru_cache(maxsize=1)
def _colours() -> np.ndarray:
    return colormap_colours(CMAP, _LEVELS)
