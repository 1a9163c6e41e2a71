"""The palette PNGs tbviz writes: exact indices and colours, as Pillow reads and writes them."""

import io

import numpy as np
import pytest
from PIL import Image

from tbviz.pictures import palette
from tbviz.summary import encode_palette_png

pytestmark = pytest.mark.backend_independent  # not about the Keras backend: runs once (conftest.py)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (35, 71), (255, 255), (300, 520)])
def test_palette_png_round_trip(shape):
    """Every index and the whole palette come back; the bytes are Pillow's own (level 3)."""
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 256, shape, dtype=np.uint8)
    colours = palette("viridis")
    png = encode_palette_png(indices, colours)
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "P" and image.size == shape[::-1]
        np.testing.assert_array_equal(np.asarray(image), indices)
        np.testing.assert_array_equal(
            np.frombuffer(bytes(image.getpalette()), np.uint8).reshape(-1, 3), colours
        )
    reference = Image.frombytes("P", shape[::-1], indices.tobytes())
    reference.putpalette(colours.tobytes())
    buffer = io.BytesIO()
    reference.save(buffer, format="PNG", compress_level=3)
    if len(buffer.getvalue()) < 65536:  # Pillow splits larger ones into several IDAT chunks
        assert png == buffer.getvalue()
