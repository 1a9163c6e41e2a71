"""The change metric and the exported change heat map (the compare view's difference picture is
the page's: tests/test_dashboard_browser.py)."""

from __future__ import annotations

import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from tbviz.cli import export
from tbviz.io import tags
from tbviz.numerics import change
from tbviz.plugin import heat


def test_relative_change_is_the_relative_l2_distance():
    """||a - b|| / ||b||, NaN/Inf positions left out, 0 for a dead layer that stays dead."""
    b = np.array([[3.0, 4.0]])
    assert change.relative_change(b + [[0.0, 0.5]], b) == pytest.approx(0.5 / 5.0)
    assert change.relative_change(b * 2, b) == pytest.approx(1.0)
    assert change.relative_change(np.array([[3.0, np.nan]]), np.array([[6.0, 1.0]])) == pytest.approx(0.5)
    assert change.relative_change(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0
    assert change.relative_change(np.zeros((2, 2)), np.zeros((2, 3))) is None


def test_coarse_shrinks_each_map_to_at_most_the_coarse_size():
    """(N, h, w, M) maps become at most COARSE_SIZE a side by area averaging; small maps stay."""
    maps = np.arange(2 * 16 * 4 * 3, dtype=np.float32).reshape(2, 16, 4, 3)
    small = to_np(change.coarse(maps))
    assert small.shape == (2, tags.COARSE_SIZE, 4, 3)
    np.testing.assert_allclose(small[:, 0], maps[:, 0:2].mean(axis=1))


@pytest.mark.backend_independent
def test_change_heatmap_has_a_cell_per_layer_and_epoch():
    """The exported heat map: one cell per layer and epoch, brightest for the largest change."""
    layers, steps = ["a", "b", "frozen"], [0, 5, 10]
    changes = {"a": {5: 0.01, 10: 0.001}, "b": {5: 0.5, 10: 0.1}, "frozen": {5: 0.0, 10: 0.0}}
    image = export.change_heatmap(layers, steps, changes)
    pixels = np.asarray(image.convert("RGB")).astype(int)
    cell = export.HEAT_CELL
    # The first cell of the first row (no value at epoch 0) marks where the cells begin.
    left = next(x for x in range(image.width) if tuple(pixels[export.HEADER_HEIGHT + 2, x]) == export.NO_VALUE)

    def at(row: int, column: int) -> np.ndarray:
        return pixels[export.HEADER_HEIGHT + row * cell + cell // 2, left + column * cell + cell // 2]

    assert tuple(at(0, 0)) == export.NO_VALUE and tuple(at(1, 0)) == export.NO_VALUE
    brightness = {key: at(*key).sum() for key in [(0, 1), (0, 2), (1, 1), (1, 2)]}
    assert max(brightness, key=brightness.get) == (1, 1)  # 0.5, the largest: yellow
    assert min(brightness, key=brightness.get) == (0, 2)  # 0.001, the smallest: dark
    # A change of exactly 0 is not the smallest change's colour: white, outlined.
    assert tuple(at(2, 1)) == heat.NO_CHANGE_COLOUR != tuple(at(0, 2))
