"""Exports logged feature maps from event files to PNG, GIF and contact sheets.

Reads event files with `tbviz.io.reader` (no training, no model, no Keras)
and writes, for every selected layer and probe image of a run, the files
`FILES_WRITTEN` describes (the text ``tbviz export --help`` prints).
"""

from __future__ import annotations

import functools
import io
import os
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

from tbviz.io import fs, reader, tags
from tbviz.io.tags import epoch_number
from tbviz.plugin import html
from tbviz.plugin.heat import NO_CHANGE_COLOUR, HeatScale
from tbviz.plugin.logs import LogError, Run, load_runs, select_layers

__all__ = [
    "FILES_WRITTEN", "ExportError", "ExportSummary", "Run", "check_writable", "export_run",
    "load_runs", "run_out_dir", "safe_name", "select_layers", "work_units", "write_html",
]  # fmt: skip

CAPTION_HEIGHT = 16
MIN_FRAME_WIDTH = 64
LABEL_WIDTH = 64
HEADER_HEIGHT = 16
GAP = 4
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
DEFAULT_DURATION_MS = 500


FILES_WRITTEN = """\
Files written (existing ones are overwritten), per run, layer and probe image:

  OUT/RUN/LAYER/probe<i>/epoch<NNNN>.png  the logged picture of each epoch,
                                          byte for byte (logged width x height)
  OUT/RUN/LAYER/probe<i>.gif              one frame per logged epoch, looping: the
                                          picture (x --scale) over a 16 px strip
                                          reading "epoch N"; frames are as wide as
                                          the widest picture of the layer (at least
                                          64 px) and as tall as the tallest + 16 px
  OUT/RUN/LAYER/sheet.png                 contact sheet: rows = epochs,
                                          columns = probe images
  OUT/RUN/sheet_probe<i>.png              contact sheet: rows = epochs,
                                          columns = layers
  OUT/RUN/change.png                      change heat map: rows = layers,
                                          columns = epochs (change/<layer>)

A contact sheet has a 64 px column of epoch labels, a 16 px row of titles and
4 px gaps; column j is as wide as its widest picture, row i as tall as its
tallest (x --scale).

RUN is TensorBoard's run name (the run directory relative to LOGDIR, e.g.
"activations"); LAYER is the layer path with characters other than letters,
digits, "_", ".", "-", "~" percent-encoded ("outer/inner" -> "outer%2Finner");
<i> counts probe images from 0; N and NNNN are the epoch as Keras prints it
("Epoch 1/20"): the logged step (Keras' 0-based epoch index, TensorBoard's
step) + 1, as everywhere tbviz shows an epoch.

A damaged event file does not stop the export: what is readable is exported
and each skipped part is reported as a warning naming the file.
"""


ExportError = LogError  # the name the command and its tests know


@dataclass
class ExportSummary:
    """What `export_run` wrote."""

    run: str
    out_dir: str
    layers: list[str]
    steps: list[int]
    pngs: list[str] = field(default_factory=list)
    gifs: list[str] = field(default_factory=list)
    sheets: list[str] = field(default_factory=list)
    heatmap: str | None = None
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- writing


def write_html(
    path: str,
    logdir: str,
    selections: Sequence[tuple[Run, list[str]]],
    *,
    max_bytes: int | None = html.REPORT_MAX_BYTES,
) -> int:
    """Writes the viewer of `selections` (runs and their layers) as one self-contained HTML
    file (`tbviz.plugin.html`); returns its size in bytes."""
    runs = [run for run, _ in selections]
    data = html.viewer(
        runs, {run.name: layers for run, layers in selections}, title=fs.redact(logdir),
        max_bytes=max_bytes,
    )  # fmt: skip
    text = html.page(data).encode("utf-8")
    with open(path, "wb") as file:
        file.write(text)
    return len(text)


def safe_name(layer_path: str) -> str:
    """A file name for a layer path: unreserved characters kept, the rest percent-encoded."""
    name = urllib.parse.quote(layer_path, safe="")
    if name.startswith("."):  # ".", ".." and hidden names
        name = "%2E" + name[1:]
    return name


def run_out_dir(out: str, run: Run, logdir: str) -> str:
    """Where a run's files go: ``<out>/<run name>`` (the run directory's name for ".")."""
    name = run.name
    if name == ".":
        name = fs.basename(logdir) or "run"
    return os.path.join(out, *name.split("/"))


def check_writable(out: str) -> None:
    """Creates `out` if needed and checks that files can be written there.

    Raises:
        ExportError: naming `out` and the reason.
    """
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".tbviz-write-test")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ExportError(
            f"cannot write to --out {out!r}: {reason}; expected a writable directory "
            "(it is created if missing)"
        ) from None


def work_units(run: Run, layers: Sequence[str]) -> int:
    """How many progress steps `export_run` reports: one per layer and probe, one per sheet."""
    counts = [_probe_count(run, layer) for layer in layers]
    return sum(counts) + len(layers) + max(counts, default=0)


def export_run(
    run: Run,
    out_dir: str,
    layers: Sequence[str] | None = None,
    *,
    scale: int = 1,
    duration_ms: int = DEFAULT_DURATION_MS,
    progress: Callable[[int], object] | None = None,
) -> ExportSummary:
    """Writes one run's PNGs, GIFs and contact sheets under `out_dir` (see the module doc).

    Args:
        run: from `load_runs`.
        out_dir: the run's own output directory, e.g. `run_out_dir(out, run, logdir)`.
        layers: layer paths to export, in column order; None for all.
        scale: enlarge pictures in GIFs and contact sheets this many times
            (nearest neighbour). Defaults to `1`.
        duration_ms: how long each GIF frame shows. Defaults to `500`.
        progress: called with the number of finished work units (see `work_units`).

    A picture that cannot be decoded is skipped with a warning in the summary.
    """
    if scale < 1:
        raise ExportError(f"scale must be a positive integer; received {scale!r}")
    if duration_ms < 1:
        raise ExportError(f"duration must be a positive number of ms; received {duration_ms!r}")
    layers = list(run.layers if layers is None else layers)
    tick = progress or (lambda n: None)
    all_steps = sorted({s.step for layer in layers for s in _series(run, layer)})
    summary = ExportSummary(run.name, out_dir, layers, all_steps)

    def picture(layer: str, item: reader.ImageStep, probe: int) -> Image.Image | None:
        if probe >= len(item.pngs):
            return None
        try:
            with Image.open(io.BytesIO(item.pngs[probe])) as image:
                return image.convert("RGB")
        except Exception as error:  # noqa: BLE001 -- a damaged picture is skipped, not fatal
            summary.warnings.append(
                f"run {run.name!r}, layer {layer!r}, probe {probe}, epoch {epoch_number(item.step)}: "
                f"picture unreadable ({error}); skipped"
            )
            return None

    decoded: dict[str, list[dict[int, Image.Image]]] = {}  # layer -> probe -> step -> picture
    for layer in layers:
        layer_dir = os.path.join(out_dir, safe_name(layer))
        series = _series(run, layer)
        probes = _probe_count(run, layer)
        columns: list[dict[int, Image.Image]] = []
        for probe in range(probes):
            probe_dir = os.path.join(layer_dir, f"probe{probe}")
            os.makedirs(probe_dir, exist_ok=True)
            frames: list[tuple[int, Image.Image]] = []
            for item in series:
                image = picture(layer, item, probe)
                if image is None:
                    continue
                path = os.path.join(probe_dir, f"epoch{epoch_number(item.step):04d}.png")
                with open(path, "wb") as file:
                    file.write(item.pngs[probe])
                summary.pngs.append(path)
                frames.append((item.step, image))
            if frames:
                path = os.path.join(layer_dir, f"probe{probe}.gif")
                write_gif(frames, path, scale=scale, duration_ms=duration_ms)
                summary.gifs.append(path)
            columns.append(dict(frames))
            tick(1)
        decoded[layer] = columns
        sheet = contact_sheet(
            [f"probe {p}" for p in range(probes)],
            [s.step for s in series],
            functools.partial(_cell, columns),
            scale=scale,
        )
        path = os.path.join(layer_dir, "sheet.png")
        os.makedirs(layer_dir, exist_ok=True)
        sheet.save(path)
        summary.sheets.append(path)
        tick(1)

    # Per-probe sheets reuse the pictures decoded above.
    for probe in range(max((_probe_count(run, layer) for layer in layers), default=0)):

        def cell(step: int, column: int, probe: int = probe) -> Image.Image | None:
            columns = decoded[layers[column]]
            return columns[probe].get(step) if probe < len(columns) else None

        sheet = contact_sheet(layers, all_steps, cell, scale=scale)
        path = os.path.join(out_dir, f"sheet_probe{probe}.png")
        os.makedirs(out_dir, exist_ok=True)
        sheet.save(path)
        summary.sheets.append(path)
        tick(1)

    changes = {
        layer: dict(run.result.scalars.get(tags.tag(tags.CHANGE, layer), []))
        for layer in layers
    }
    if any(changes.values()):
        path = os.path.join(out_dir, "change.png")
        os.makedirs(out_dir, exist_ok=True)
        change_heatmap(layers, all_steps, changes, scale=scale).save(path)
        summary.heatmap = path
    return summary


HEAT_CELL = 12
NO_VALUE = (224, 224, 224)


def change_heatmap(
    layers: Sequence[str],
    steps: Sequence[int],
    changes: dict[str, dict[int, float]],
    *,
    scale: int = 1,
) -> Image.Image:
    """The change heat map: rows = `layers`, columns = `steps`, ``changes[layer][step]`` coloured.

    Cells are ``HEAT_CELL * scale`` pixels square, coloured by the tab's own
    scale (`tbviz.plugin.heat`: viridis on a log scale between the smallest
    and largest positive value); a change of exactly 0 is white with a grey
    outline, a cell without a finite value light grey. Layer names are on the left, every few
    epochs' numbers on top, the scale's ends below.
    """
    import math

    heat = HeatScale.of(v for layer in layers for v in changes.get(layer, {}).values())
    cell = HEAT_CELL * scale
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    longest = max((probe.textlength(layer, font=font) for layer in layers), default=0)
    label_width = min(int(longest) + 2 * GAP, 320)
    legend = (
        f"change since the previous logged epoch: {heat.low:.2g} (dark) to "
        f"{heat.high:.2g} (bright), log scale; white: 0"
        if heat.low is not None
        else "no change values"
    )
    width = max(label_width + cell * len(steps), int(probe.textlength(legend, font=font))) + GAP
    height = HEADER_HEIGHT + cell * len(layers) + GAP + HEADER_HEIGHT
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    every = max(1, math.ceil(len(steps) * 24 / max(1, cell * len(steps))))  # a label every ~24 px
    for column, step in enumerate(steps):
        if column % every == 0:
            draw.text((label_width + column * cell + cell / 2, HEADER_HEIGHT / 2), str(epoch_number(step)),
                      fill=INK, font=font, anchor="mm")  # fmt: skip
    for row, layer in enumerate(layers):
        top = HEADER_HEIGHT + row * cell
        name = _fit_text(draw, layer, label_width - 2 * GAP, font)
        draw.text((label_width - GAP, top + cell / 2), name, fill=INK, font=font, anchor="rm")
        for column, step in enumerate(steps):
            colour = heat.colour(changes.get(layer, {}).get(step)) or NO_VALUE
            left = label_width + column * cell
            outline = NO_VALUE if colour == NO_CHANGE_COLOUR else None
            draw.rectangle([left, top, left + cell - 2, top + cell - 2], fill=colour, outline=outline)
    draw.text((GAP, height - HEADER_HEIGHT / 2), legend, fill=INK, font=font, anchor="lm")
    return image


def _series(run: Run, layer: str) -> list[reader.ImageStep]:
    return run.result.images.get(tags.tag(tags.IMAGE, layer), [])


def _probe_count(run: Run, layer: str) -> int:
    return max((len(item.pngs) for item in _series(run, layer)), default=0)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _enlarge(image: Image.Image, scale: int) -> Image.Image:
    if scale == 1:
        return image
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """`text`, or its end after an ellipsis, so that it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    for start in range(1, len(text)):
        shortened = "\u2026" + text[start:]
        if draw.textlength(shortened, font=font) <= width:
            return shortened
    return ""


def epoch_frame(
    image: Image.Image, step: int, size: tuple[int, int], scale: int = 1
) -> Image.Image:
    """One GIF frame: `image` (enlarged) centred at the top, "epoch N" in a strip below.

    N is `step`'s epoch as Keras prints it (`tbviz.io.tags.epoch_number`).

    `size` is the picture area ``(width, height)``; the frame is
    ``(max(width, MIN_FRAME_WIDTH), height + CAPTION_HEIGHT)``.
    """
    width, height = max(size[0], MIN_FRAME_WIDTH), size[1]
    frame = Image.new("RGB", (width, height + CAPTION_HEIGHT), BACKGROUND)
    picture = _enlarge(image, scale)
    frame.paste(picture, ((width - picture.width) // 2, 0))
    draw = ImageDraw.Draw(frame)
    draw.text(
        (width / 2, height + CAPTION_HEIGHT / 2),
        f"epoch {epoch_number(step)}",
        fill=INK,
        font=_font(),
        anchor="mm",
    )
    return frame


def write_gif(
    frames: Sequence[tuple[int, Image.Image]],
    path: str,
    *,
    scale: int = 1,
    duration_ms: int = DEFAULT_DURATION_MS,
) -> None:
    """Writes ``(step, picture)`` pairs as a looping GIF, one captioned frame per pair."""
    size = (
        max(image.width for _, image in frames) * scale,
        max(image.height for _, image in frames) * scale,
    )
    # Every caption differs, so Pillow never merges frames: one frame per epoch.
    images = [epoch_frame(image, step, size, scale) for step, image in frames]
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=0,
    )


def _cell(columns: list[dict[int, Image.Image]], step: int, column: int) -> Image.Image | None:
    """The picture of one probe (`column`) at one step, if logged."""
    return columns[column].get(step)


def contact_sheet(
    titles: Sequence[str],
    steps: Iterable[int],
    cell: Callable[[int, int], Image.Image | None],
    *,
    scale: int = 1,
) -> Image.Image:
    """A grid of pictures: rows = `steps`, columns = `titles`; ``cell(step, column)`` gives each.

    Layout and size: see the module doc.
    """
    steps = list(steps)
    cells = {
        (row, column): cell(step, column)
        for row, step in enumerate(steps)
        for column in range(len(titles))
    }
    pictures = {key: _enlarge(p, scale) for key, p in cells.items() if p is not None}
    widths = [
        max((p.width for (_, c), p in pictures.items() if c == column), default=0)
        for column in range(len(titles))
    ]
    heights = [
        max((p.height for (r, _), p in pictures.items() if r == row), default=0)
        for row in range(len(steps))
    ]
    sheet = Image.new(
        "RGB",
        (
            LABEL_WIDTH + sum(widths) + GAP * (len(widths) + 1),
            HEADER_HEIGHT + sum(heights) + GAP * (len(heights) + 1),
        ),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    font = _font()
    lefts = [LABEL_WIDTH + GAP + sum(widths[:c]) + GAP * c for c in range(len(widths))]
    tops = [HEADER_HEIGHT + GAP + sum(heights[:r]) + GAP * r for r in range(len(heights))]
    for column, title in enumerate(titles):
        text = _fit_text(draw, title, widths[column], font)
        draw.text((lefts[column] + widths[column] / 2, HEADER_HEIGHT / 2 + 1), text, fill=INK,
                  font=font, anchor="mm")  # fmt: skip
    for row, step in enumerate(steps):
        draw.text((LABEL_WIDTH - GAP, tops[row] + heights[row] / 2), f"epoch {epoch_number(step)}",
                  fill=INK, font=font, anchor="rm")  # fmt: skip
    for (row, column), picture in pictures.items():
        sheet.paste(picture, (lefts[column], tops[row]))
    return sheet
