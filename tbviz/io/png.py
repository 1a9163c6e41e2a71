"""PNG encoding of tbviz's pictures, and the colour palettes their indices stand for.

tbviz's pictures are 8-bit *palette* PNGs: each pixel an index (see
`tbviz.io.tags`: ``i < LEVELS`` is the normalised value ``i / (LEVELS - 1)``,
then the separator and the NaN/Inf marker), the palette the colour map's
colours. TensorBoard and every PNG reader show them as those colours, in
about a third of the bytes and encoding time of RGB PNGs. A layer pictured as
a colour image is an RGB PNG.

PNGs are written directly (signature, IHDR, PLTE, one IDAT, IEND), with no
filter, deflated by ISA-L (`isal`, its level 2) where it is installed, else by
zlib at level 3 (as Pillow writes palette images with ``compress_level=3``).
ISA-L takes a fifth of zlib's time on smooth maps and under half on noisy
ones, for 1 % more bytes (measured on 400 smoothed and 1,400
untrained-ResNet-50 pictures): the PNGs of a many-layer epoch are most of the
writer's work, and the writer shares the CPU with training. Both release the
GIL while they compress.
"""

from __future__ import annotations

import functools
import struct
import types
import zlib

import numpy as np

from tbviz.io.tags import LEVELS, NONFINITE_COLOR, SEPARATOR_COLOR

_deflate: types.ModuleType
try:  # Intel's ISA-L deflate, where it has wheels (x86-64, ARM64)
    from isal import isal_zlib as _deflate

    _LEVEL = 2
except ImportError:  # pragma: no cover -- other machines: zlib
    _deflate, _LEVEL = zlib, 3

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PALETTE, _RGB = 3, 2  # PNG colour types
_STORED_BLOCK = 65_535  # the most bytes a stored (uncompressed) deflate block holds


def _stored_size(raw: int) -> int:
    """The bytes of a zlib stream holding `raw` bytes stored as they are: header, a 5-byte
    head per block, Adler-32."""
    return 2 + raw + 5 * max(1, -(-raw // _STORED_BLOCK)) + 4


def largest_png(height: int, width: int, *, rgb: bool = False) -> int:
    """The most bytes `encode_picture` makes of a ``height x width`` picture, whatever it
    holds: its rows stored as they are (`_encode` never writes more), plus the chunks."""
    raw = height * (width * (3 if rgb else 1) + 1)  # each row: its filter byte, its pixels
    deflated = _stored_size(raw)
    chunks = 12 * (3 if rgb else 4) + 13 + (0 if rgb else 3 * 256)  # IHDR, PLTE, IDAT, IEND
    return len(_SIGNATURE) + chunks + deflated


def encode_palette_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """Encodes ``(H, W)`` uint8 indices with a ``(256, 3)`` uint8 palette as an 8-bit palette PNG."""
    return _encode(indices, _PALETTE, np.asarray(palette, np.uint8).tobytes())


def encode_rgb_png(pixels: np.ndarray) -> bytes:
    """Encodes ``(H, W, 3)`` uint8 pixels as an 8-bit RGB PNG."""
    height, width, _ = pixels.shape
    return _encode(np.reshape(pixels, (height, width * 3)), _RGB)


def encode_picture(picture: np.ndarray, palette: np.ndarray) -> bytes:
    """A tbviz picture as a PNG: ``(H, W)`` indices into `palette`, or ``(H, W, 3)`` RGB pixels."""
    if picture.ndim == 3:
        return encode_rgb_png(picture)
    return encode_palette_png(picture, palette)


def _encode(rows: np.ndarray, colour_type: int, plte: bytes | None = None) -> bytes:
    height, row_bytes = rows.shape
    width = row_bytes // 3 if colour_type == _RGB else row_bytes
    data = np.zeros((height, row_bytes + 1), np.uint8)  # each row starts with its filter type, 0
    data[:, 1:] = rows
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    if plte is not None:
        chunks.append(_chunk(b"PLTE", plte))
    raw = data.tobytes()
    deflated = _deflate.compress(raw, _LEVEL)
    if len(deflated) > _stored_size(len(raw)):
        deflated = zlib.compress(raw, 0)  # noise: stored as it is, never larger (`largest_png`)
    chunks.append(_chunk(b"IDAT", deflated))
    return b"".join([_SIGNATURE, *chunks, _chunk(b"IEND", b"")])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def colormap_colours(name: str, count: int) -> np.ndarray:
    """``(count, 3)`` uint8 colours sampling the matplotlib colour map `name` evenly, low to high.

    Raises:
        ValueError: matplotlib knows no colour map `name` (the message lists close names).
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=5)
        raise ValueError(
            f"Unknown colour map; expected a matplotlib colour-map name"
            f"{' such as ' + ', '.join(close) if close else ''}. Received: cmap={name!r}"
        ) from None
    return np.round(cmap.resampled(count)(np.arange(count))[:, :3] * 255.0).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def palette(name: str) -> np.ndarray:
    """The ``(256, 3)`` uint8 colours that picture indices stand for (read-only).

    Entries ``0 .. LEVELS - 1`` sample the matplotlib colour map `name`
    (``"viridis"``, ``"gray"``, ``"RdBu_r"``...); then `SEPARATOR_COLOR` and
    `NONFINITE_COLOR`.
    """
    colours = np.concatenate(
        [colormap_colours(name, LEVELS), [SEPARATOR_COLOR, NONFINITE_COLOR]]
    ).astype(np.uint8)
    colours.setflags(write=False)
    return colours
