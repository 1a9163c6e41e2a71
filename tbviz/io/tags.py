"""The on-disk contract of tbviz: where it writes, under which tags, and what they hold.

This module is the single owner of the tag scheme. Everything that writes
(`tbviz.io.summaries`) or reads (`tbviz.io.reader`, the plugin, the commands)
goes through it. It imports nothing from Keras or TensorFlow, so that
readers stay light.

Layout, inside the ``log_dir`` given to `ActivationLogger`:

    <log_dir>/activations/            the run (beside Keras' train/ and validation/)
        events.out.tfevents.*         one file per writer session

Tags in that run, one series per selected layer, ``step`` = Keras' 0-based
epoch index (the step Keras' ``TensorBoard`` callback gives ``epoch_*``):

    feature_maps/<layer>    image: one PNG per probe sample, the layer's maps
                            normalised, colour-mapped and tiled in a grid
    mean/<layer>            scalar: mean of the layer's finite activations
    std/<layer>             scalar: their standard deviation
    zero_fraction/<layer>   scalar: fraction of activations exactly 0 (dead ReLUs)
    distribution/<layer>    histogram of the finite activations
    change/<layer>          scalar: how much the layer's activations on the probe
                            batch changed since the previous logged epoch (from
                            the second logged epoch on; see below)
    layer/<layer>           the layer's `LayerInfo` (plugin ``activations``): how
                            its pictures were made, as JSON, for the readers
    dead_channels/<layer>   scalar: share of its channels constant (a ReLU's: 0)
                            on every probe sample and position
    saturation/<layer>      scalar: share of values at a bound of its bounded
                            activation (sigmoid, tanh, softmax, relu6...; only those)
    rms/<layer>             scalar: root mean square of its finite activations
    nonfinite/<layer>       scalar: how many of its activations are NaN/Inf
    health/<layer>          the layer's findings at that step (plugin
                            ``activations``): a JSON list of `Finding`, [] if none

**Epochs, as people read them.** On disk the step is Keras' 0-based epoch
index, as TensorBoard's slider shows it. Everything tbviz shows a person (the
tab, the notebook viewer, ``tbviz export`` and ``tbviz report``, its
warnings) names the epoch as Keras' progress bar prints it, ``Epoch 1/20``
for step 0: `epoch_number` is the one place that says so.

``<layer>`` is the layer's path: its name, or ``outer/inner`` for a layer inside
a nested model. A layer or nested model called more than once in its model (the
shared encoder of a siamese network) has one path per call, marked with the
call's position in the order the model was built: ``encoder@0/conv``,
``encoder@1/conv``. An input of the model has the input layer's name as its
path (its picture is the probe). Image summaries use TensorBoard's ``images`` plugin format:
a string tensor ``[width, height, png_0, ..., png_k-1]``.

``change/<layer>`` at step t is the relative L2 change ``||a - b|| / ||b||``
between two small, fixed-size summaries of the layer's activations on the
probe batch: ``a`` at step t, ``b`` at the previous logged step (so with
``freq=5`` it is the change over 5 epochs). The summary is the layer's maps
as pictured (the first ``max_channels`` channels, shrunk to fit
``max_size``), each map further shrunk by area averaging to at most
``COARSE_SIZE x COARSE_SIZE``, raw values before any normalisation: so it
sees changes of both pattern and magnitude. Positions that are NaN/Inf in
either are left out; ``||b|| == 0`` counts as ``||b||`` = 1e-12 (a dead layer
that stays dead: 0). 0 means no change; 0.1 means the activations moved by
10 % of their size; a layer that has stopped learning tends to 0.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

RUN_NAME = "activations"
#: The plugin name of tbviz's own summaries (`LayerInfo`), and of the ACTIVATIONS tab.
PLUGIN_NAME = "activations"

IMAGE = "feature_maps"
MEAN = "mean"
STD = "std"
ZERO_FRACTION = "zero_fraction"
DISTRIBUTION = "distribution"
CHANGE = "change"
LAYER = "layer"

DEAD_CHANNELS = "dead_channels"
SATURATION = "saturation"
RMS = "rms"
NONFINITE = "nonfinite"
HEALTH = "health"

SCALAR_KINDS = (MEAN, STD, ZERO_FRACTION)  # the statistics scalars
HEALTH_SCALAR_KINDS = (DEAD_CHANNELS, SATURATION, RMS, NONFINITE)
KINDS = (IMAGE, *SCALAR_KINDS, DISTRIBUTION, CHANGE, LAYER, *HEALTH_SCALAR_KINDS, HEALTH)

# The kinds of `Finding`, and how a sentence names each.
DEAD = "dead"
SATURATED = "saturated"
EXPLODING = "exploding"
VANISHING = "vanishing"
STALLED = "stalled"
NONFINITE_FINDING = "nonfinite"
FINDING_KINDS = (NONFINITE_FINDING, DEAD, SATURATED, EXPLODING, VANISHING, STALLED)
_STATE = {
    DEAD: "is dead",
    SATURATED: "is saturated",
    EXPLODING: "is exploding",
    VANISHING: "is vanishing",
    STALLED: "has stopped changing",
    NONFINITE_FINDING: "has NaN/Inf activations",
}
SEVERITIES = ("warning", "info")

def epoch_number(step: int) -> int:
    """The epoch as Keras prints it ("Epoch 1/20") for TensorBoard's `step` (Keras' 0-based
    epoch index): what every reader shows a person."""
    return step + 1


#: Each map is shrunk to at most this many pixels a side for the change metric.
COARSE_SIZE = 8

# Palette pictures are 8-bit PNGs whose indices are the normalised values: index
# i < LEVELS stands for i / (LEVELS - 1) in [0, 1]; the last two entries are reserved.
# (A layer pictured as a colour image, `LayerInfo.layout` "image" with 3 channels, is an
# RGB PNG instead: each channel's value v in [0, 1] as round(v * 255).)
LEVELS = 254
SEPARATOR_INDEX = 254  # grid separators
NONFINITE_INDEX = 255  # NaN/Inf pixels, drawn in NONFINITE_COLOR
NONFINITE_COLOR = (255, 0, 255)  # magenta: in none of the usual colour maps
SEPARATOR_COLOR = (255, 255, 255)


def tag(kind: str, layer_path: str) -> str:
    """Returns the tag of one series of one layer, e.g. ``feature_maps/conv2d``."""
    if kind not in KINDS:
        raise ValueError(f"Unknown tag kind; expected one of {KINDS}. Received: kind={kind!r}")
    return f"{kind}/{layer_path}"


def parse_tag(tag_name: str) -> tuple[str, str] | None:
    """Splits a tbviz tag into ``(kind, layer_path)``; None if it is not one of ours."""
    kind, sep, layer_path = tag_name.partition("/")
    if not sep or kind not in KINDS or not layer_path:
        return None
    return kind, layer_path


#: The version of `LayerInfo`'s JSON; readers take what they know of any version.
LAYER_INFO_VERSION = 1


@dataclass(frozen=True)
class LayerInfo:
    """How one layer's pictures were made at one logged step: the facts readers need.

    Written beside the pictures as ``layer/<layer>`` (a JSON string) at every
    logged step, so a reader never parses prose. Logs of tbviz versions
    before it have none (readers then know only the pictures' size).

    Attributes:
        layer_class: the layer's class name (``"Conv2D"``).
        output_shape: the layer's output shape without the batch axis (None:
            unknown size).
        layout: how the output became a picture: ``"maps"`` (one map per
            channel in a grid), ``"tokens"`` (a token sequence, each channel
            a map over the square grid of its tokens), ``"volume"`` (rank 5:
            a row per channel, a column per depth slice), ``"strip"`` (a
            sequence: channels down, time across), ``"block"`` (units as one
            block), ``"image"`` (the output is an image: drawn as the image,
            grey or RGB).
        channels: the output's channel count (units for ``"block"``).
        channels_shown: how many of them the picture shows (the first ones).
        grid: ``(rows, cols)`` of maps in the picture.
        cell: ``(height, width)`` of one map in the picture, in pixels.
        normalize: how values were scaled to colours: ``"map"``, ``"layer"`` or ``"fixed"``.
        clip_percentile: percent of values clipped at each end of the range.
        cmap: the colour map's name (``"rgb"`` for a colour image).
        coarse: ``(height, width)`` of the maps the change metric compares.
        samples: pictures per step (probe samples).
        shrunk: what the epoch's pixel budget made smaller, in words, or None.
    """

    layer_class: str
    output_shape: tuple[int | None, ...]
    layout: str
    channels: int
    channels_shown: int
    grid: tuple[int, int]
    cell: tuple[int, int]
    normalize: str
    clip_percentile: float
    cmap: str
    coarse: tuple[int, int]
    samples: int
    shrunk: str | None = None

    def description(self, path: str) -> str:
        """The card's text in TensorBoard's Images dashboard (the readers use the fields)."""
        shape = "(" + ", ".join("?" if s is None else str(s) for s in self.output_shape) + ")"
        shown = (
            f"the first {self.channels_shown} of {self.channels} channels"
            if self.channels_shown < self.channels
            else f"{self.channels} channels"
        )
        what = {
            "maps": f"{shown} as {self.cell[0]}x{self.cell[1]} maps tiled {self.grid[0]} x {self.grid[1]}",
            "tokens": f"{shown} as maps over the {self.cell[0]}x{self.cell[1]} token grid, tiled "
            f"{self.grid[0]} x {self.grid[1]}",
            "volume": f"{shown} as rows of {self.grid[1]} depth slices",
            "strip": f"{shown} down, time across",
            "block": f"{self.channels} units as one {self.cell[0]}x{self.cell[1]} block",
            "image": "the output drawn as the image it is",
        }.get(self.layout, self.layout)
        text = (
            f"Layer `{path}` ({self.layer_class}), output shape {shape}: {what}, one picture per "
            f"probe sample. normalize={self.normalize!r}, clip_percentile={self.clip_percentile}, "
            f"cmap={self.cmap!r}. Magenta pixels are NaN/Inf."
        )
        return f"{text} {self.shrunk}" if self.shrunk else text

    def to_json(self) -> str:
        return json.dumps({"version": LAYER_INFO_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> LayerInfo | None:
        """The info in `text`; None if it is not a `LayerInfo` this version can read."""
        try:
            data: Any = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            values = {k: v for k, v in data.items() if k in known}
            for name in ("output_shape", "grid", "cell", "coarse"):
                values[name] = tuple(values[name])
            return cls(**values)
        except (KeyError, TypeError):
            return None


#: The version of the ``health/<layer>`` JSON.
HEALTH_VERSION = 1


@dataclass(frozen=True)
class Finding:
    """Something wrong with one layer, from one logged step on (`tbviz.numerics.health`).

    Attributes:
        layer: the layer's path.
        kind: one of `FINDING_KINDS`.
        since: the step (Keras' 0-based epoch index) of the first logged epoch of the
            stretch it has held in; a person reads it as `epoch_number` (``since + 1``).
        severity: ``"warning"`` (a problem to look at), or ``"info"`` (a frozen layer, or
            one that follows an earlier layer's finding: see `origin`).
        value: the figure that says so at `since` (a share, a ratio, a count).
        detail: that figure in words.
        origin: the path of the earlier layer whose finding this one follows (a NaN, a
            scale or a dead input propagated), or None.
        frozen: the layer is not trainable (``trainable=False``).
    """

    layer: str
    kind: str
    since: int
    severity: str
    value: float
    detail: str
    origin: str | None = None
    frozen: bool = False

    def sentence(self) -> str:
        """``'conv2' is dead since epoch 3: 16 of 16 channels ...``, epochs as Keras prints them."""
        state = _STATE.get(self.kind, self.kind)
        return f"'{self.layer}' {state} since epoch {epoch_number(self.since)}: {self.explained()}"

    def explained(self) -> str:
        """Its detail, with why it is info if it is: frozen, or which layer it follows."""
        text = self.detail
        if self.frozen:
            text += " (a frozen layer: trainable=False)"
        if self.origin is not None:
            text += f" (follows '{self.origin}')"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Its fields, as written on disk (`since` a step)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, layer: str | None = None) -> Finding | None:
        """The finding in `data` (`layer`: the path, when the tag gives it); None if not one."""
        try:
            origin = data.get("origin")
            finding = cls(
                layer=str(layer if layer is not None else data["layer"]),
                kind=str(data["kind"]),
                since=int(data["since"]),
                severity=str(data["severity"]),
                value=float(data["value"]),
                detail=str(data["detail"]),
                origin=None if origin is None else str(origin),
                frozen=bool(data.get("frozen", False)),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        return finding if finding.severity in SEVERITIES else None


def health_json(findings: list[Finding]) -> str:
    """The ``health/<layer>`` value of one step: its findings, without the layer (the tag has it)."""
    items = [{k: v for k, v in f.to_dict().items() if k != "layer"} for f in findings]
    return json.dumps({"version": HEALTH_VERSION, "findings": items}, sort_keys=True)


def findings_from_json(text: str | bytes, layer: str) -> list[Finding] | None:
    """The findings of a ``health/<layer>`` value; None if it is not one this version reads."""
    try:
        data: Any = json.loads(text)
        items = data["findings"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return None
    if not isinstance(items, list):
        return None
    found = [Finding.from_dict(item, layer) if isinstance(item, dict) else None for item in items]
    return [f for f in found if f is not None]
