"""What the viewer page is given about a run: one answer for the tab and for the self-contained viewer.

The page (``static/viewer.js``) draws a run from one JSON object, `run_answer`:
the tab's ``/run`` route serves it (`tbviz.plugin.server`), the notebook and
HTML viewers embed it (`tbviz.plugin.html`). Per layer, in model order: its
logged steps, picture count and size, how its pictures were made (the
`tbviz.io.tags.LayerInfo` fields, for the row labels and the colour bar),
its ``change/<layer>`` values and their heat-map colours, the health
findings holding at each step; ``infos`` and ``info_at`` (which of them holds
at each step) only for a layer pictured with other settings at some steps. For the run: its findings, the colour maps'
palettes (colour bars, and reading a picture's values back for the
difference picture), notices. A layer's numbers at each step (mean, std,
health scalars...) are a second, per-layer answer, `layer_numbers`, which
the tab fetches when a picture is enlarged.

Steps are TensorBoard's (Keras' 0-based epoch index); the page shows each as
`tbviz.io.tags.epoch_number` says (its ``epochNumber``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from tbviz.io import png, tags
from tbviz.io.reader import ImageStep, ReadResult
from tbviz.plugin.heat import NO_CHANGE_COLOUR, HeatScale, hex_colour, ramp, ticks

#: The scalars shown beside an enlarged picture, in this order.
NUMBER_KINDS = (
    tags.MEAN, tags.STD, tags.ZERO_FRACTION, tags.RMS, tags.DEAD_CHANNELS, tags.SATURATION,
    tags.NONFINITE, tags.CHANGE,
)  # fmt: skip
#: The tag kinds `run_answer` reads.
ANSWER_KINDS = (tags.IMAGE, tags.LAYER, tags.HEALTH, tags.CHANGE)
#: The tag kinds the viewers read (histograms are left on disk).
KINDS = (*ANSWER_KINDS, *(kind for kind in NUMBER_KINDS if kind not in ANSWER_KINDS))
#: The colour map of the difference picture (B - A): blue lower, white equal, red higher
#: (255 colours: 0 has the middle one); separators light grey, NaN/Inf magenta.
DIFFERENCE_CMAP = "RdBu_r"
SEPARATOR_GREY = (200, 200, 200)


def run_answer(
    name: str,
    result: ReadResult,
    layers: Sequence[str],
    steps: dict[str, dict[int, ImageStep]],
    *,
    probes: Sequence[int] | None = None,
    version: str = "",
    token: str = "",
    notices: Sequence[str] = (),
) -> dict[str, Any]:
    """The page's view of one run (JSON-ready): see the module doc.

    Args:
        name: the run's name.
        result: what was read from it.
        layers: the layers to show, in model order.
        steps: layer -> step -> its logged pictures, for the steps to show.
        probes: the probe indices the page may ask for; None: every one logged.
        version, token: the tab's cache keys (see `tbviz.plugin.server`).
        notices: said above the views, after what was skipped while reading.
    """
    heat = HeatScale.of(
        value for layer in layers for _, value in result.scalars.get(tags.tag(tags.CHANGE, layer), [])
    )
    answers = [_layer_answer(layer, result, steps[layer], heat) for layer in layers]
    samples = max((layer["samples"] for layer in answers), default=0)
    cmaps = {layer["info"]["cmap"] for layer in answers if layer["info"]}
    return {
        "run": name,
        "version": version,
        "token": token,
        "steps": sorted({step for layer in layers for step in steps[layer]}),
        "probes": list(range(samples)) if probes is None else [p for p in probes if p < samples],
        "layers": answers,
        "change_scale": {
            "low": heat.low,
            "high": heat.high,
            "ramp": ramp(),
            "ticks": ticks(heat),
            "zero": hex_colour(NO_CHANGE_COLOUR),
        },
        "coarse_size": tags.COARSE_SIZE,
        "palettes": {cmap: palette for cmap in sorted(cmaps) if (palette := _palette(cmap))},
        "difference": {
            "palette": [
                hex_colour((int(r), int(g), int(b)))
                for r, g, b in png.colormap_colours(DIFFERENCE_CMAP, 255)
            ],
            "separator": hex_colour(SEPARATOR_GREY),
            "nonfinite": hex_colour(tags.NONFINITE_COLOR),
        },
        "judged": bool(result.health),
        "findings": [judged.to_dict(name) for judged in result.findings() if judged.finding.layer in steps],
        "notices": [*(f"Skipped while reading: {p}" for p in result.problems), *notices],
    }


def _layer_answer(
    layer: str, result: ReadResult, steps: dict[int, ImageStep], heat: HeatScale
) -> dict[str, Any]:
    logged = sorted(steps)
    last = steps[logged[-1]]
    changes = dict(result.scalars.get(tags.tag(tags.CHANGE, layer), []))
    health = dict(result.health.get(layer, []))
    # How the pictures were made, once per distinct setting, and which one holds at each step.
    infos: list[dict[str, Any]] = []
    info_at = []
    for step in logged:
        info = result.info(layer, step)
        found = dataclasses.asdict(info) if info else None
        if found not in infos:
            infos.append(found)  # type: ignore[arg-type]
        info_at.append(infos.index(found))  # type: ignore[arg-type]
    last_info = result.info(layer)
    return {
        "name": layer,
        "steps": logged,
        "samples": max(item.count or len(item.pngs) for item in steps.values()),
        "width": last.width,
        "height": last.height,
        "description": result.descriptions.get(tags.tag(tags.IMAGE, layer), ""),
        "normalize": last_info.normalize if last_info else None,
        "info": dataclasses.asdict(last_info) if last_info else None,
        # only for a layer pictured differently at some steps (a resumed run with other settings)
        **({"infos": infos, "info_at": info_at} if len(infos) > 1 else {}),
        "change": [_number(changes.get(step)) for step in logged],
        "change_colour": [hex_colour(heat.colour(changes.get(step))) for step in logged],
        # the findings that hold at each step: [{"kind", "severity"}, ...]
        "health": [
            [{"kind": f.kind, "severity": f.severity} for f in health.get(step, [])]
            for step in logged
        ],
    }


def layer_numbers(result: ReadResult, layer: str, steps: Sequence[int]) -> dict[str, Any]:
    """A layer's numbers at each of `steps`: ``{"steps": [...], "numbers": {kind: [value or
    None, ...]}}`` for the kinds of `NUMBER_KINDS` it has, 4 significant digits."""
    numbers = {}
    for kind in NUMBER_KINDS:
        values = dict(result.scalars.get(tags.tag(kind, layer), []))
        if values:
            numbers[kind] = [_number(values.get(step)) for step in steps]
    return {"steps": list(steps), "numbers": numbers}


def _palette(cmap: str) -> list[str] | None:
    """The 256 colours a picture's palette indices stand for (`tbviz.io.png.palette`), as hex;
    None for a colour map matplotlib does not know here (or ``"rgb"``)."""
    try:
        colours = png.palette(cmap)
    except ValueError:
        return None
    return [hex_colour((int(r), int(g), int(b))) or "" for r, g, b in colours]


def _number(value: float | None) -> float | None:
    """A value for JSON: 4 significant digits (a colour or a label needs no more); None for
    no value or a non-finite one."""
    return float(f"{value:.4g}") if value is not None and math.isfinite(value) else None
