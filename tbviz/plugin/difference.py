"""The compare view's difference picture, made on the server from two logged PNGs.

tbviz pictures are palette PNGs whose indices are the normalised values:
index ``i < LEVELS`` stands for ``i / (LEVELS - 1)`` in [0, 1] (see
`tbviz.io.tags`), `SEPARATOR_INDEX` is a grid separator and
`NONFINITE_INDEX` a NaN/Inf pixel. The difference picture is ``B - A`` of
those normalised values, in [-1, 1], coloured with a diverging map (blue:
lower in B, white: equal, red: higher in B). Pictures in another format (RGB
PNGs of other writers) are compared by their grey level instead.

What it means depends on how the layer was pictured: with ``normalize="map"``
or ``"layer"`` each picture has its own scale, so the difference shows where
the *pattern* changed; with ``normalize="fixed"`` both share one scale and it
also shows how much the activations grew or shrank.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

from tbviz.io.png import colormap_colours, encode_palette_png
from tbviz.io.tags import LEVELS, NONFINITE_COLOR, NONFINITE_INDEX, SEPARATOR_INDEX

DIVERGING_CMAP = "RdBu_r"
SEPARATOR_GREY = (200, 200, 200)
_STEPS = 253  # odd, so that 0 has a colour of its own (the middle one, white)


class PictureMismatch(ValueError):
    """The two pictures cannot be compared (different sizes)."""


def normalised_values(png: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A picture's normalised values in [0, 1] and a mask of its real pixels.

    The mask is False on separators and on NaN/Inf pixels (and on nothing
    for a non-palette picture, which is read as grey levels).
    """
    with Image.open(io.BytesIO(png)) as image:
        if image.mode == "P":
            indices = np.asarray(image)
            real = indices < LEVELS
            return np.where(real, indices, 0).astype(np.float32) / (LEVELS - 1), real
        grey = np.asarray(image.convert("L"), np.float32) / 255.0
        return grey, np.ones(grey.shape, bool)


def difference_png(png_a: bytes, png_b: bytes) -> tuple[bytes, float]:
    """The difference picture ``B - A`` as a palette PNG, and the mean ``|B - A|`` over real pixels.

    Separators are light grey; a pixel that is NaN/Inf in either picture is magenta.

    Raises:
        PictureMismatch: the pictures differ in size.
    """
    a, real_a = normalised_values(png_a)
    b, real_b = normalised_values(png_b)
    if a.shape != b.shape:
        raise PictureMismatch(
            f"the pictures differ in size ({a.shape[1]}x{a.shape[0]} and "
            f"{b.shape[1]}x{b.shape[0]} pixels): the layer was pictured with other settings"
        )
    both = real_a & real_b
    delta = np.where(both, b - a, 0.0)
    indices = np.round((delta + 1.0) / 2.0 * (_STEPS - 1)).astype(np.uint8)
    nonfinite = _nonfinite(png_a) | _nonfinite(png_b)
    indices[~both] = SEPARATOR_INDEX
    indices[nonfinite] = NONFINITE_INDEX
    mean = float(np.abs(delta[both]).mean()) if both.any() else 0.0
    return encode_palette_png(indices, _palette()), mean


def _nonfinite(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        if image.mode == "P":
            return np.asarray(image) == NONFINITE_INDEX
        return np.zeros(image.size[::-1], bool)


@functools.lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    """256 colours: `_STEPS` of the diverging map, then grey separators, magenta NaN/Inf."""
    palette = np.zeros((256, 3), np.uint8)
    palette[:_STEPS] = colormap_colours(DIVERGING_CMAP, _STEPS)
    palette[_STEPS:] = SEPARATOR_GREY
    palette[SEPARATOR_INDEX] = SEPARATOR_GREY
    palette[NONFINITE_INDEX] = NONFINITE_COLOR
    return palette
