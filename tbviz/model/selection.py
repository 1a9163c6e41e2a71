"""Which layers are pictured: the default choice, ``"all"``, or the user's selectors.

Selectors name layers by path, name, glob, regular expression, class or
object (`select_layers`); the default choice and ``"all"`` are rules over
`tbviz.model.walk`'s entries, documented on their functions.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence
from typing import Union

import keras

from tbviz.model.walk import (
    ACTIVATION_LAYERS,
    IDENTITY_AT_INFERENCE,
    LayerEntry,
    is_container,
    output_rank,
    sublayers,
    unusable_reason,
    walk,
)

# Union, not `|`: these aliases are evaluated at import time, and Python 3.10 cannot
# `|` a string forward reference.
LayerSelector = Union[str, "re.Pattern[str]", type, keras.layers.Layer]  # noqa: UP007
LayerSelection = Union[LayerSelector, Sequence[LayerSelector], None]  # noqa: UP007

# Layers that only move, pad or perturb pixels: never worth a card by default.
_PLUMBING = (
    keras.layers.InputLayer,
    *IDENTITY_AT_INFERENCE,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.Flatten,
)
# Keras' preprocessing and augmentation layers (`Rescaling`, `Normalization`,
# `Resizing`, `CenterCrop`, every `Random*`, ...): at inference they show the
# input, not features. Recognised by the package they (or a base class) come from,
# so custom augmentation layers built on Keras' base classes count too.
_PREPROCESSING_PACKAGE = "keras.src.layers.preprocessing"


def is_preprocessing(layer: keras.layers.Layer) -> bool:
    """A Keras preprocessing or data-augmentation layer (left out of the default choice)."""
    return any(
        (cls.__module__ or "").startswith(_PREPROCESSING_PACKAGE) for cls in type(layer).__mro__
    )


_ACTIVATION_LIKE = (
    *ACTIVATION_LAYERS,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.Add,
    keras.layers.Concatenate,
)


def _is_candidate(entry: LayerEntry, ranks: tuple[int, ...]) -> bool:
    layer = entry.layer
    return (
        entry.unreachable is None
        and not is_container(layer)
        and not isinstance(layer, _PLUMBING)
        and not is_preprocessing(layer)
        and not entry.repeats_input
        and output_rank(entry) in ranks
        and unusable_reason(entry) is None
    )


def _is_activation_like(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, _ACTIVATION_LIKE):
        return True
    activation = getattr(layer, "activation", None)
    return activation is not None and getattr(activation, "__name__", "") != "linear"


def _distinct(entries: list[LayerEntry]) -> list[LayerEntry]:
    """Drops entries whose output is the very tensor of an earlier one (a custom block
    returning its last layer's output, in a subclassed model)."""
    seen: set[tuple[int, int]] = set()
    result = []
    for entry in entries:
        # The inner layers of a nested model called twice share their symbolic outputs.
        key = (id(entry.output), entry.call)
        if key not in seen:
            seen.add(key)
            result.append(entry)
    return result


def _spread(items: list, count: int) -> list:
    """`count` items spread evenly from the first to the last."""
    if len(items) <= count:
        return items
    if count == 1:
        return items[-1:]
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def default_layers(entries: list[LayerEntry], max_layers: int) -> list[LayerEntry]:
    """The default choice: spatial and sequence layers, at most `max_layers` of them.

    Candidates: every reachable layer with a rank-3 to rank-5 output except
    plumbing (input, dropout, padding, cropping, reshape, flatten), Keras'
    preprocessing and augmentation layers (`is_preprocessing`: at inference
    they show the input), layers whose output repeats their input's (a ReLU
    of a ReLU's output) and nested models (their inner layers are
    candidates instead); a model with none
    (an MLP) gets its rank-2 layers instead. Past `max_layers`, the first of
    these tiers with at least `max_layers` layers is used:

    1. activation-like *block outputs*: activations, convolutions with a
       non-linear activation, pooling and merges whose output every path
       from the inputs passes through (a residual block's output, not the
       ReLUs inside it; never squeeze-and-excitation side branches);
    2. activation-like layers (batch normalisation and linear convolutions
       left out);
    3. every candidate;

    and spread evenly over the model's depth, first and last always included.
    """
    candidates = _distinct([e for e in entries if _is_candidate(e, (3, 4, 5))])
    if not candidates:
        candidates = _distinct([e for e in entries if _is_candidate(e, (2,))])
    if len(candidates) > max_layers:
        activation_like = [e for e in candidates if _is_activation_like(e.layer)]
        for tier in ([e for e in activation_like if e.block_output], activation_like):
            if len(tier) >= max_layers:
                candidates = tier
                break
    return _spread(candidates, max_layers)


def all_layers(entries: list[LayerEntry]) -> list[LayerEntry]:
    """``layers="all"``: every layer whose output can be pictured, in model order.

    The model's inputs come first (their pictures, the probe as the model
    sees it, are the reference the other layers are read against); then
    every reachable layer with an output of rank 2 to 5, except plumbing
    (dropout, padding, cropping, reshape, flatten), Keras' preprocessing and
    augmentation layers (`is_preprocessing`), layers whose output repeats
    their input's (a ReLU of a ReLU's output) and nested models (their inner
    layers are there instead).
    """
    return _distinct(
        [
            e
            for e in entries
            if (e.input_index is not None and unusable_reason(e) is None)
            or _is_candidate(e, (2, 3, 4, 5))
        ]
    )


# -- explicit selection ------------------------------------------------------------------


_CALL_MARK = re.compile(r"@\d+(?=/|$)")


def _matches(entry: LayerEntry, selector: LayerSelector) -> bool:
    """Whether `selector` names `entry`: by path, by layer name, or by the path without
    its call marks (``encoder/conv`` names ``encoder@0/conv`` and ``encoder@1/conv``)."""
    if isinstance(selector, keras.layers.Layer):
        return entry.layer is selector
    if isinstance(selector, type):
        return isinstance(entry.layer, selector)
    names = {entry.path, entry.layer.name, _CALL_MARK.sub("", entry.path)}
    if isinstance(selector, re.Pattern):
        return any(selector.fullmatch(name) for name in names)
    if any(ch in selector for ch in "*?["):
        return any(fnmatch.fnmatchcase(name, selector) for name in names)
    return selector in names


def _describe(selector: LayerSelector) -> str:
    if isinstance(selector, keras.layers.Layer):
        return f"layer object '{selector.name}' ({type(selector).__name__})"
    if isinstance(selector, type):
        return f"layer class {selector.__name__}"
    if isinstance(selector, re.Pattern):
        return f"pattern re.compile({selector.pattern!r})"
    return repr(selector)


def _tracked_elsewhere(model: keras.Model, selector: LayerSelector) -> keras.layers.Layer | None:
    """A layer `model` tracks (recursively) that `selector` names but the walk did not reach."""
    for layer in sublayers(model, recursive=True):
        if layer is selector or (isinstance(selector, str) and layer.name == selector):
            return layer
    return None


def _dangling_branch(entries: list, selector: LayerSelector) -> tuple | None:
    """A layer called on a tensor of the model's graph whose output leads nowhere in the model.

    Returns ``(layer, feeding layer path)`` or None.
    """
    known = {id(e.layer) for e in entries}
    for entry in entries:
        if entry.needs_capture:
            continue
        for node in getattr(entry.layer, "_outbound_nodes", []):
            layer = node.operation
            if id(layer) in known or not isinstance(layer, keras.layers.Layer):
                continue
            if layer is selector or (isinstance(selector, str) and layer.name == selector):
                return layer, entry.path
    return None


def _no_match_error(model: keras.Model, selector: LayerSelector, entries: list) -> ValueError:
    names = [e.path for e in entries]
    if isinstance(selector, (keras.layers.Layer, str)):
        dangling = _dangling_branch(entries, selector)
        if dangling is not None:
            layer, source = dangling
            return ValueError(
                f"`layers`: layer '{layer.name}' ({type(layer).__name__}) cannot be reached "
                f"from the inputs of model '{model.name}': it is called on the output of "
                f"'{source}', but its output does not lead to the model's outputs (a "
                "disconnected branch), so it is not part of the model."
            )
    if isinstance(selector, (keras.layers.Layer, str)):
        hidden = _tracked_elsewhere(model, selector)
        if isinstance(hidden, keras.layers.InputLayer):
            return ValueError(
                f"`layers`: '{hidden.name}' is the input layer of a model nested in "
                f"'{model.name}': its values are the output of the layer that feeds that "
                "nested model, so select that layer instead (the inputs of the top-level "
                f"model can be selected: {', '.join(e.path for e in entries if e.input_index is not None) or 'none'})."
            )
        if hidden is not None:
            return ValueError(
                f"`layers`: layer '{hidden.name}' ({type(hidden).__name__}) cannot be reached "
                f"from the inputs of model '{model.name}': the model tracks it, but it is not "
                "on a path from the model's inputs to its outputs (a disconnected branch, or "
                "a sub-layer of a Keras layer)."
            )
    if isinstance(selector, keras.layers.Layer):
        return ValueError(
            f"`layers`: {_describe(selector)} cannot be reached from the inputs of model "
            f"'{model.name}': it is not a layer of that model (a layer of another model, or "
            "of a branch that does not lead to the model's outputs). The model's layers are: "
            f"{', '.join(names)}."
        )
    close = difflib.get_close_matches(
        str(getattr(selector, "pattern", selector)), names, n=5, cutoff=0.4
    )
    hint = f" Closest names: {', '.join(close)}." if close else ""
    return ValueError(
        f"`layers`: {_describe(selector)} matches no layer of model "
        f"'{model.name}'.{hint} The model's layers are: {', '.join(names)}."
    )


def select_layers(
    model: keras.Model,
    layers: LayerSelection,
    *,
    max_layers: int = 12,
    entries: list[LayerEntry] | None = None,
) -> list[LayerEntry]:
    """Returns the layers to log, in model order, without duplicates.

    Args:
        model: a built model: Functional, Sequential or subclassed.
        layers: None for `default_layers`; ``"all"`` for `all_layers`; or a
            name, path, glob pattern (``"conv*"``), compiled regular
            expression, layer class, layer object, or a list of these (in a
            list, ``"all"`` is a layer name). Every selector must match at
            least one layer.
        max_layers: the cap of the default choice (ignored when `layers` is
            given). Defaults to `12`.
        entries: the layers to choose from; defaults to `walk(model)`
            (`tbviz.model.capture.capture_entries` for a subclassed model).

    Raises:
        ValueError: a selector matches no layer (the message lists the
            closest layer names), or a selected layer cannot be reached from
            the model's inputs (the message names it and says why).
    """
    entries = walk(model) if entries is None else list(entries)
    if layers is None:
        return default_layers(entries, max_layers)
    if isinstance(layers, str) and layers == "all":
        return all_layers(entries)
    single = (str, re.Pattern, type, keras.layers.Layer)
    selectors = [layers] if isinstance(layers, single) else list(layers)
    chosen: set[str] = set()
    for selector in selectors:
        if not isinstance(selector, single):
            raise TypeError(
                "`layers` items must be layer names, glob patterns, compiled regular "
                "expressions, layer classes or layer objects. Received: "
                f"{selector!r} of type {type(selector).__name__}"
            )
        hits = {e.path for e in entries if _matches(e, selector)}
        if not hits:
            raise _no_match_error(model, selector, entries)
        chosen |= hits
    selected = [e for e in entries if e.path in chosen]
    for entry in selected:
        if entry.unreachable:
            raise ValueError(
                f"`layers`: layer '{entry.path}' ({type(entry.layer).__name__}) cannot be "
                f"reached from the inputs of model '{model.name}': {entry.unreachable}."
            )
    return selected

