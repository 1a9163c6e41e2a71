"""The viewer as one self-contained piece of HTML: notebooks (`tbviz.show`, the live view) and reports.

The same page as the ACTIVATIONS tab -- ``static/pictures.js``, ``viewer.js``
and ``style.css``, inlined -- fed by embedded data instead of the plugin's
routes: each run's answer (`tbviz.plugin.viewdata.run_answer`), each layer's
numbers, and the logged PNGs as base64 text in one JSON block. No server, no
network, no kernel: it works from a saved notebook, nbconvert's HTML or a
file opened from disk, offline, in any browser.

**Size.** The pictures are the logged palette PNGs, byte for byte (base64
adds a third). Past `max_bytes` (an estimate from each layer's last logged
pictures), the viewer holds less, in this order, until it fits: fewer probe
images (the first ones), then fewer epochs (spread evenly, the first and
the last kept), then fewer layers (spread evenly); it says what it left out
above the views.
"""

from __future__ import annotations

import base64
import html
import json
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tbviz.io import tags
from tbviz.io.reader import ImageStep, read_pictures
from tbviz.plugin import viewdata
from tbviz.plugin.logs import Run

#: The page's files (``static/``) as the tab serves them, with their content types.
STATIC = {
    "/index.js": "text/javascript",
    "/pictures.js": "text/javascript",
    "/viewer.js": "text/javascript",
    "/style.css": "text/css",
}
#: The viewer's scripts, in the order they run (index.js imports them so in the tab).
SCRIPTS = ("pictures.js", "viewer.js")
#: The budget of `tbviz.show` and the notebook's live view: the demo's 20 epochs hold about 2 MB.
NOTEBOOK_MAX_BYTES = 10_000_000
#: The budget of ``tbviz export --html``.
REPORT_MAX_BYTES = 50_000_000
#: The version of the embedded JSON the page reads.
FORMAT = 1


def static_file(name: str) -> str:
    """The text of one of the page's files (``static/<name>``), as installed.

    Raises:
        OSError: it is missing from the installed package.
    """
    return (resources.files(__package__) / "static" / name).read_text(encoding="utf-8")


@dataclass
class Selection:
    """What a viewer holds: per run, its layers and each layer's steps; the probe images; and
    what was left out, in words."""

    layers: dict[str, list[str]]  # run name -> layers, in model order
    steps: dict[str, list[int]]  # run name -> the steps kept
    probes: list[int]
    left_out: list[str] = field(default_factory=list)


def select(
    runs: Sequence[Run],
    layers: dict[str, list[str]],
    *,
    probes: Sequence[int] | None = None,
    max_bytes: int | None = NOTEBOOK_MAX_BYTES,
    cache: PictureCache | None = None,
) -> Selection:
    """What fits in `max_bytes` (None: everything) of `layers` (run name -> layers) and `probes`
    (None: every probe logged): see the module doc."""
    cache = cache or PictureCache()
    samples = max((_samples(run, layer) for run in runs for layer in layers[run.name]), default=0)
    chosen = list(range(samples)) if probes is None else [p for p in dict.fromkeys(probes) if 0 <= p < samples]
    if probes is not None and not chosen:
        raise ValueError(
            f"`probes` must name logged probe images, 0 to {samples - 1}. Received: probes={list(probes)!r}"
        )
    all_steps = {run.name: _steps(run, layers[run.name]) for run in runs}
    # Bytes of one picture of each (run, layer), probe by probe: from its last logged step.
    sizes = {}
    for run in runs:
        for layer in layers[run.name]:
            series = run.result.images[tags.tag(tags.IMAGE, layer)]
            sizes[run.name, layer] = [len(png) * 4 / 3 for png in cache.pngs(series[-1], layer)]

    def cost(probes: list[int], steps: dict[str, list[int]], kept: dict[str, list[str]]) -> float:
        total = 0.0
        for run in runs:
            wanted = set(steps[run.name])
            for layer in kept[run.name]:
                per_step = sum(sizes[run.name, layer][p] for p in probes if p < len(sizes[run.name, layer]))
                logged = {item.step for item in run.result.images[tags.tag(tags.IMAGE, layer)]}
                total += per_step * len(logged & wanted)
        return total

    selection = Selection(dict(layers), all_steps, chosen)
    if max_bytes is None or cost(chosen, all_steps, layers) <= max_bytes:
        return selection
    budget = f"{max_bytes / 1e6:g} MB"
    # 1. fewer probe images
    count = len(chosen)
    while count > 1 and cost(chosen[:count], all_steps, layers) > max_bytes:
        count -= 1
    if count < len(chosen):
        selection.left_out.append(
            f"To stay under {budget}, this viewer holds probe image"
            f"{'s' if count > 1 else ''} {', '.join(map(str, chosen[:count]))} of {len(chosen)}."
        )
        selection.probes = chosen = chosen[:count]
    # 2. fewer epochs
    most = max(len(s) for s in all_steps.values())
    kept_steps = all_steps
    while most > 1 and cost(chosen, kept_steps, layers) > max_bytes:
        most -= 1
        kept_steps = {name: _spread(steps, most) for name, steps in all_steps.items()}
    if kept_steps != all_steps:
        shown = sum(map(len, kept_steps.values()))
        logged = sum(map(len, all_steps.values()))
        selection.left_out.append(
            f"To stay under {budget}, this viewer holds {shown} of the {logged} logged epochs "
            "(spread evenly, the first and the last kept)."
        )
        selection.steps = kept_steps
    # 3. fewer layers
    kept_layers = layers
    most = max(len(names) for names in layers.values())
    while most > 1 and cost(chosen, kept_steps, kept_layers) > max_bytes:
        most -= 1
        kept_layers = {name: _spread(names, most) for name, names in layers.items()}
    if kept_layers != layers:
        shown = sum(map(len, kept_layers.values()))
        selection.left_out.append(
            f"To stay under {budget}, this viewer holds {shown} of the "
            f"{sum(map(len, layers.values()))} logged layers (spread evenly over the depth)."
        )
        selection.layers = kept_layers
    selection.left_out.append(
        "Pass max_bytes=None to tbviz.show (or --max-mb 0 to tbviz export --html) for everything."
    )
    return selection


class PictureCache:
    """The PNGs of logged steps, read back once (a live view embeds the same ones each epoch)."""

    def __init__(self) -> None:
        self._pngs: dict[Any, list[bytes]] = {}

    def pngs(self, item: ImageStep, layer: str) -> list[bytes]:
        key = item.location or id(item)
        if key not in self._pngs:
            self._pngs[key] = read_pictures(item, tags.tag(tags.IMAGE, layer))
        return self._pngs[key]


def document(
    runs: Sequence[Run],
    selection: Selection,
    *,
    title: str,
    notices: Iterable[str] = (),
    cache: PictureCache | None = None,
) -> dict[str, Any]:
    """The embedded JSON: each run's answer and numbers, and the selected pictures as base64."""
    cache = cache or PictureCache()
    answers, numbers, pictures = {}, {}, {}
    for run in runs:
        layers = selection.layers[run.name]
        wanted = set(selection.steps[run.name])
        steps = {
            layer: {
                item.step: item
                for item in run.result.images[tags.tag(tags.IMAGE, layer)]
                if item.step in wanted
            }
            for layer in layers
        }
        layers = [layer for layer in layers if steps[layer]]
        answers[run.name] = viewdata.run_answer(
            run.name, run.result, layers, steps, probes=selection.probes
        )
        numbers[run.name] = {
            layer: viewdata.layer_numbers(run.result, layer, sorted(steps[layer])) for layer in layers
        }
        pictures[run.name] = {
            layer: {
                str(step): [
                    base64.b64encode(png).decode("ascii") if p in selection.probes else None
                    for p, png in enumerate(cache.pngs(item, layer))
                ]
                for step, item in sorted(steps[layer].items())
            }
            for layer in layers
        }
    return {
        "format": FORMAT,
        "title": title,
        "runs": [run.name for run in runs],
        "notices": [*selection.left_out, *notices],
        "answers": answers,
        "numbers": numbers,
        "pictures": pictures,
    }


def fragment(data: dict[str, Any], *, page: bool = False, key: str | None = None) -> str:
    """The viewer as HTML to put in a page or a notebook output: `data` from `document`.

    `page`: the viewer fills the window (a file of its own); else it is a box
    of bounded height (a notebook output). `key`: a name for the viewer's
    state (view, epoch, probe, zoom...), kept when an output with the same key
    replaces it (the live view, each epoch).
    """
    element = "tbviz-" + uuid.uuid4().hex[:12]
    code = "\n".join(static_file(name) for name in SCRIPTS)
    css = static_file("style.css")
    if "</script" in code.lower() or "</style" in css.lower():
        raise AssertionError("a script or style.css of static/ would end its inline element")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    attributes = f' data-key="{html.escape(key)}"' if key else ""
    return (
        f'<div class="tbviz-embed" id="{element}" data-mode="{"page" if page else "embedded"}"{attributes}>'
        '<div class="tbviz-fallback">tbviz viewer of '
        f"{html.escape(str(data.get('title', '')))}: it needs JavaScript. In Jupyter, trust the "
        "notebook (File \u25b8 Trust Notebook, or <code>jupyter trust NOTEBOOK</code>) and open it "
        "again; or export it with <code>tbviz export LOGDIR --html report.html</code>.</div>"
        f"<style>{css}</style>"
        f'<script type="application/json" class="tbviz-data">{payload}</script>'
        f"<script>{code}</script>"
        f'<script>globalThis.tbvizViewer.mountEmbedded(document.getElementById("{element}"));</script>'
        "</div>"
    )


def page(data: dict[str, Any]) -> str:
    """The viewer as a whole HTML document (``tbviz export --html``)."""
    title = html.escape(f"tbviz \u00b7 {data.get('title', '')}")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n</head>\n<body class=\"tbviz-page\">\n"
        f"{fragment(data, page=True)}\n</body>\n</html>\n"
    )


def viewer(
    runs: Sequence[Run],
    layers: dict[str, list[str]] | None = None,
    *,
    title: str,
    probes: Sequence[int] | None = None,
    max_bytes: int | None = NOTEBOOK_MAX_BYTES,
    notices: Iterable[str] = (),
    cache: PictureCache | None = None,
) -> dict[str, Any]:
    """`document` of what `select` keeps of `runs` (`layers`: run name -> layers; None: all)."""
    cache = cache or PictureCache()
    layers = layers or {run.name: run.layers for run in runs}
    selection = select(runs, layers, probes=probes, max_bytes=max_bytes, cache=cache)
    return document(runs, selection, title=title, notices=notices, cache=cache)


def _samples(run: Run, layer: str) -> int:
    return max(
        (item.count or len(item.pngs) for item in run.result.images[tags.tag(tags.IMAGE, layer)]),
        default=0,
    )


def _steps(run: Run, layers: Sequence[str]) -> list[int]:
    return sorted(
        {item.step for layer in layers for item in run.result.images[tags.tag(tags.IMAGE, layer)]}
    )


def _spread(items: list, count: int) -> list:
    """`count` of `items` spread evenly, the first and the last kept."""
    if len(items) <= count:
        return items
    if count == 1:
        return items[-1:]
    step = (len(items) - 1) / (count - 1)
    return [items[math.floor(i * step + 0.5)] for i in range(count)]
