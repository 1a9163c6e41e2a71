"""Building the logger's step for one model: which layers, how each is pictured, the step.

`build` runs once per ``fit()`` (lazily, once the model has inputs) and
returns a small value, `Built`: the compiled step and, per pictured layer,
its `Planned` settings. Mistakes in the arguments raise here, before
training, with what was expected and what was received.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tbviz import step as steps
from tbviz._warnings import warn
from tbviz.callback.config import LoggerConfig
from tbviz.io.summaries import LAYER_EXTRA_BYTES
from tbviz.io.tags import LayerInfo
from tbviz.model import capture, probes, selection
from tbviz.model.walk import (
    LayerEntry,
    activation_name,
    needs_capture,
    unusable_reason,
    walk,
    with_run_shapes,
)
from tbviz.numerics.change import coarse_size
from tbviz.numerics.health import BOUNDS, LayerFacts
from tbviz.numerics.layout import Layout, fit_pixel_budget
from tbviz.numerics.pictures import PictureOptions
from tbviz.numerics.summary import LayerSummary


@dataclass(frozen=True)
class Planned:
    """One pictured layer: where it is, how it is drawn, what its readers are told."""

    entry: LayerEntry
    layout: Layout
    options: PictureOptions
    info: LayerInfo
    fixed_range: tuple[float, float]  # NaN: taken from the first logged epoch (normalize="fixed")
    facts: LayerFacts  # what its health is judged with


@dataclass(frozen=True)
class Built:
    """The logging step of one model and the layers it pictures, in the order of its results."""

    step: steps.Step
    layers: list[Planned]


def target_model(trained: keras.Model, pictured: keras.Model | None) -> keras.Model:
    """The model to picture: `pictured` (``model=``), else the one being trained, which must
    have a ``call``.

    Raises:
        ValueError: the trained model is a wrapper with no ``call()`` (a GAN):
            the message names the models it holds and says to pass ``model=``.
    """
    if pictured is not None:
        return pictured
    if _has_call(trained):
        return trained
    inner = [
        f"{trained.name}.{attribute}"
        for attribute, value in vars(trained).items()
        if isinstance(value, keras.Model) and not attribute.startswith("_")
    ]
    raise ValueError(
        f"Model '{trained.name}' ({type(trained).__name__}) has no `call()`: it trains "
        f"the models it holds ({', '.join(inner) or 'none found'}) in its own "
        "`train_step`, so there is no forward pass to run the probe through. Pass the "
        "model to picture as `model=`, e.g. "
        f"ActivationLogger(probe, model={inner[0] if inner else 'generator'}), with a "
        "probe that matches that model's input."
    )


def has_inputs(model: keras.Model) -> bool:
    """Whether the model's inputs exist yet (a Sequential without `Input` has none before its
    first batch; a subclassed model never has any)."""
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def build(model: keras.Model, probe: Any, config: LoggerConfig) -> Built:
    """The step picturing `model` on `probe` (what `tbviz.model.probes.as_probe` made).

    Raises:
        ValueError, TypeError: a mistake in the arguments (the probe does not
            match the model's input, no layer matches a selector...).
        tbviz.step.StepUnavailable: the step cannot run in this setting.
    """
    graph = has_inputs(model)
    if not graph and isinstance(model, keras.Sequential):
        raise ValueError(
            f"Sequential model '{model.name}' has no inputs yet; give it a `keras.Input` "
            "or build it before training."
        )
    structure = getattr(model, "input", None) if graph and not isinstance(model, keras.Sequential) else None
    probe = probes.match_model_inputs(probe, model.inputs if graph else None, structure)
    if isinstance(structure, dict):  # the model is called with the structure it was built on
        probe = keras.tree.pack_sequence_as(structure, keras.tree.flatten(probe))
    entries = walk(model)
    if needs_capture(entries):  # a subclassed model, or one inside: run it once
        with steps.local_weights(model):
            entries = capture.capture_entries(model, probe, entries)
    selected = selection.select_layers(
        model, config.layers, max_layers=config.max_layers, entries=entries
    )
    selected = _with_known_sizes(model, probe, selected)
    usable = []
    for entry in selected:
        reason = _unusable(entry)
        if reason:
            warn(f"layer '{entry.path}' is skipped: {reason}.")
        else:
            usable.append(entry)
    if not usable:
        raise ValueError(
            f"None of the selected layers of model '{model.name}' can be pictured "
            f"(selected: {', '.join(e.path for e in selected) or 'none'})."
        )
    samples = probes.sample_count(probe)
    planned = _plan(usable, samples, config)
    step = steps.build_step(
        model,
        probe,
        [p.entry for p in planned],
        [
            LayerSummary(
                p.options,
                p.layout,
                config.stats or config.histograms or config.health,
                health=config.health,
                bounds=p.facts.bounds if config.health and p.facts.judges_saturation else None,
            )
            for p in planned
        ],
        _expected_calls(entries),
        # A model compiled with run_eagerly=True may not be traceable: then eagerly, as fit() does.
        eager=bool(getattr(model, "run_eagerly", False)),
    )
    return Built(step, planned)


def _unusable(entry: LayerEntry) -> str | None:
    reason = unusable_reason(entry)
    if reason is None and entry.layout is None:
        return f"its output's size is not known (shape {entry.shape})"
    return reason


def _with_known_sizes(model: keras.Model, probe: Any, entries: list[LayerEntry]) -> list[LayerEntry]:
    """`entries`, those whose graph leaves a size unknown (a sequence of any length) given the
    size their output has on the probe, by running the model once."""
    unknown = [e.layer for e in entries if e.shape is not None and None in e.shape]
    if not unknown:
        return entries
    with steps.local_weights(model):
        recorded = capture.run(model, unknown, probe)
    return with_run_shapes(entries, recorded.outputs)


def _plan(entries: list[LayerEntry], samples: int, config: LoggerConfig) -> list[Planned]:
    """Each layer's settings: its options (images drawn as images; pictures made smaller
    where all of them would not fit in ``max_pixels_per_epoch``) and its `LayerInfo`."""
    asked = config.pictures
    layouts = [e.layout for e in entries]
    assert all(layouts)  # `_unusable` left out the others
    limits = fit_pixel_budget(
        layouts,  # type: ignore[arg-type]
        probes=samples,
        max_pixels=config.max_pixels_per_epoch,
        max_channels=asked.max_channels,
        max_size=asked.max_size,
        padding=asked.padding,
        layer_bytes=LAYER_EXTRA_BYTES,
    )
    made: dict[tuple, PictureOptions] = {}  # each distinct one once: it builds a palette
    planned = []
    initial = config.value_range or (np.nan, np.nan)
    for entry, layout, (size, channels) in zip(entries, layouts, limits, strict=True):
        assert layout is not None
        fixed_range = initial
        settings: dict[str, Any] = {"max_size": size, "max_channels": channels}
        if layout.kind == "image":  # drawn as the image it is: its own range, or its bounds
            # A bounded activation's image is drawn on that scale (a generator's tanh image
            # in [-1, 1]), not stretched to its own range.
            bounds = BOUNDS.get(activation_name(entry.layer) or "")
            fixed_range = bounds[:2] if bounds else (np.nan, np.nan)
            settings.update(
                normalize="fixed" if bounds else "layer",
                clip_percentile=0.0,
                cmap="gray" if layout.channels == 1 else asked.cmap,
                symmetric=False,
            )
        key = tuple(sorted(settings.items()))
        if key not in made:
            made[key] = dataclasses.replace(asked, **settings)
        options = made[key]
        info = _info(entry, layout, options, asked, samples, config)
        planned.append(Planned(entry, layout, options, info, fixed_range, _facts(entry, layout, samples)))
    return planned


def _facts(entry: LayerEntry, layout: Layout, samples: int) -> LayerFacts:
    return LayerFacts(
        path=entry.path,
        activation=activation_name(entry.layer),
        channels=layout.channels,
        values_per_channel=samples * math.prod(layout.shape) // max(layout.channels, 1),
        trainable=entry.trainable,
        has_weights=bool(entry.layer.trainable_weights),
        model_input=entry.input_index is not None,
        model_output=entry.model_output,
    )


def _info(
    entry: LayerEntry,
    layout: Layout,
    options: PictureOptions,
    asked: PictureOptions,
    samples: int,
    config: LoggerConfig,
) -> LayerInfo:
    grid = layout.grid(options.max_channels)
    cell = layout.cell(options.max_channels, options.max_size, options.padding)
    return LayerInfo(
        layer_class=type(entry.layer).__name__,
        output_shape=tuple(entry.shape or ()),
        layout=layout.kind,
        channels=layout.channels,
        channels_shown=layout.channels_shown(options.max_channels),
        grid=grid,
        cell=cell,
        normalize=options.normalize,
        clip_percentile=options.clip_percentile,
        cmap="rgb" if layout.kind == "image" and layout.channels == 3 else options.cmap,
        coarse=coarse_size(cell),
        samples=samples,
        shrunk=_shrunk(layout, options, asked, config.max_pixels_per_epoch),
    )


def _shrunk(
    layout: Layout, options: PictureOptions, asked: PictureOptions, budget: int | None
) -> str | None:
    """What the epoch's pixel budget made smaller, in words; None if nothing."""
    full = layout.picture(asked.max_channels, asked.max_size, asked.padding)
    small = layout.picture(options.max_channels, options.max_size, options.padding)
    shown, before = layout.channels_shown(options.max_channels), layout.channels_shown(asked.max_channels)
    if small == full and shown == before:
        return None
    changes = [f"{small[0]}x{small[1]} px instead of {full[0]}x{full[1]}"] if small != full else []
    if shown < before:
        changes.append(f"the first {shown} channels instead of {before}")
    return (
        f"Made smaller to keep each logged epoch within max_pixels_per_epoch={budget:,} "
        f"pixels: {' and '.join(changes)}."
    )


def _expected_calls(entries: list[LayerEntry]) -> dict[int, int]:
    """How often each tapped layer runs in one forward pass, by the walk: a check that the
    calls counted at run time are the ones the entries are keyed on."""
    expected: dict[int, int] = {}
    for entry in entries:
        if entry.input_index is None and not entry.needs_capture:
            key = id(entry.layer)
            expected[key] = max(expected.get(key, 0), entry.call + 1)
    return expected


def _has_call(model: keras.Model) -> bool:
    """False for a training wrapper (a GAN) that defines `train_step` but no `call`."""
    return any(
        "call" in vars(cls) for cls in type(model).__mro__ if cls not in _BASE_MODEL_CLASSES
    )


_BASE_MODEL_CLASSES = set(keras.Model.__mro__)
