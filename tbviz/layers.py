"""Which layers to picture, and the activation model that outputs them.

Layers are addressed by *path*: a top-level layer by its name, a layer inside
a nested model (a Functional or Sequential model used as a layer, as in
transfer learning) by ``outer/inner``.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import keras

LayerSelector = Union[str, "re.Pattern[str]", type]
LayerSelection = Union[LayerSelector, Sequence[LayerSelector], None]

# Layers that only move, pad or perturb pixels: never worth a card by default.
_PLUMBING = (
    keras.layers.InputLayer,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.Reshape,
    keras.layers.Permute,
)
_ACTIVATION_LIKE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.Add,
    keras.layers.Concatenate,
)


@dataclass(frozen=True)
class SelectedLayer:
    """A layer chosen for logging, with the path used in its tags."""

    path: str
    layer: keras.layers.Layer
    # The chain of nested models from the top-level model down to `layer`'s owner.
    owners: tuple[keras.Model, ...]

    @property
    def channels_first(self) -> bool:
        fmt = getattr(self.layer, "data_format", None) or keras.config.image_data_format()
        return fmt == "channels_first"


def _is_container(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.Model) and bool(getattr(layer, "layers", None))


def walk(model: keras.Model, prefix: str = "", owners: tuple = ()) -> Iterator[SelectedLayer]:
    """Yields every layer of `model` in order, descending into nested models."""
    owners = (*owners, model)
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.layers.InputLayer):
            continue
        yield SelectedLayer(path, layer, owners)
        if _is_container(layer):
            yield from walk(layer, prefix=f"{path}/", owners=owners)


def output_rank(layer: keras.layers.Layer) -> int | None:
    """The rank of the layer's single output, or None if it has no single tensor output."""
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return None
    if not hasattr(output, "shape"):
        return None
    return len(output.shape)


def unusable_reason(layer: keras.layers.Layer) -> str | None:
    """Why a layer's output cannot be pictured, or None if it can."""
    try:
        output = layer.output
    except (AttributeError, ValueError) as error:
        return f"its output is not defined ({error})"
    if not hasattr(output, "shape"):
        return "it has several outputs"
    if len(output.shape) not in (2, 3, 4, 5):
        return f"its output has rank {len(output.shape)} (shape {tuple(output.shape)}); ranks 2 to 5 can be pictured"
    if not any(kind in str(output.dtype) for kind in ("float", "int")):
        return f"its output is not numeric (dtype {output.dtype})"
    return None


def _is_default_candidate(entry: SelectedLayer) -> bool:
    layer = entry.layer
    return (
        not _is_container(layer)
        and not isinstance(layer, _PLUMBING)
        and output_rank(layer) in (3, 4, 5)
        and unusable_reason(layer) is None
    )


def _is_activation_like(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, _ACTIVATION_LIKE):
        return True
    activation = getattr(layer, "activation", None)
    return activation is not None and getattr(activation, "__name__", "") != "linear"


def _spread(items: list, count: int) -> list:
    """`count` items spread evenly from the first to the last."""
    if len(items) <= count:
        return items
    if count == 1:
        return items[-1:]
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def default_layers(entries: list[SelectedLayer], max_layers: int) -> list[SelectedLayer]:
    """The default choice: spatial and sequence layers, at most `max_layers` of them.

    Every layer with a rank-3 to rank-5 output except plumbing (input,
    dropout, padding, cropping, reshape) and nested-model containers (their
    inner layers are candidates instead). Past `max_layers`, activation-like
    layers (activations, convolutions with a non-linear activation, pooling,
    merges) are preferred and spread evenly over the model's depth, first and
    last always included.
    """
    candidates = [e for e in entries if _is_default_candidate(e)]
    if len(candidates) > max_layers:
        preferred = [e for e in candidates if _is_activation_like(e.layer)]
        if len(preferred) >= max_layers:
            candidates = preferred
    return _spread(candidates, max_layers)


def _matches(entry: SelectedLayer, selector: LayerSelector) -> bool:
    if isinstance(selector, type):
        return isinstance(entry.layer, selector)
    if isinstance(selector, re.Pattern):
        return bool(selector.fullmatch(entry.path) or selector.fullmatch(entry.layer.name))
    if any(ch in selector for ch in "*?["):
        return fnmatch.fnmatchcase(entry.path, selector) or fnmatch.fnmatchcase(
            entry.layer.name, selector
        )
    return selector in (entry.path, entry.layer.name)


def _describe(selector: LayerSelector) -> str:
    if isinstance(selector, type):
        return f"layer class {selector.__name__}"
    if isinstance(selector, re.Pattern):
        return f"pattern re.compile({selector.pattern!r})"
    return repr(selector)


def select_layers(
    model: keras.Model, layers: LayerSelection, *, max_layers: int = 12
) -> list[SelectedLayer]:
    """Returns the layers to log, in model order, without duplicates.

    Args:
        model: a built Functional or Sequential model.
        layers: None for `default_layers`; or a name, path, glob pattern
            (``"conv*"``), compiled regular expression, layer class, or a list
            of these. Every selector must match at least one layer.
        max_layers: the cap of the default choice (ignored when `layers` is
            given). Defaults to `12`.

    Raises:
        ValueError: a selector matches no layer; the message lists the
            closest layer names.
    """
    entries = list(walk(model))
    if layers is None:
        return default_layers(entries, max_layers)
    selectors = [layers] if isinstance(layers, (str, re.Pattern, type)) else list(layers)
    chosen: set[str] = set()
    for selector in selectors:
        if not isinstance(selector, (str, re.Pattern, type)):
            raise TypeError(
                "`layers` items must be layer names, glob patterns, compiled regular "
                f"expressions or layer classes. Received: {selector!r} of type "
                f"{type(selector).__name__}"
            )
        hits = {e.path for e in entries if _matches(e, selector)}
        if not hits:
            names = [e.path for e in entries]
            close = difflib.get_close_matches(str(getattr(selector, "pattern", selector)), names, n=5, cutoff=0.4)
            hint = f" Closest names: {', '.join(close)}." if close else ""
            raise ValueError(
                f"`layers`: {_describe(selector)} matches no layer of model "
                f"'{model.name}'.{hint} The model's layers are: {', '.join(names)}."
            )
        chosen |= hits
    return [e for e in entries if e.path in chosen]


def _called_inputs(inner: keras.Model) -> Any:
    """The tensors that feed nested model `inner` in its owner's graph."""
    nodes = getattr(inner, "_inbound_nodes", [])
    if len(nodes) != 1:
        raise ValueError(
            f"Nested model '{inner.name}' is called {len(nodes)} times in its parent model; "
            "tbviz can only reach inside a nested model that is called exactly once. "
            f"Select '{inner.name}' itself instead."
        )
    tensors = nodes[0].input_tensors
    return tensors[0] if len(tensors) == 1 else tensors


def outer_output(entry: SelectedLayer) -> Any:
    """The symbolic output of `entry.layer` in the top-level model's graph.

    A layer inside a nested model has an output only in that model's own
    graph; it is brought into the outer graph by calling a sub-model of the
    nested model on the tensors that feed the nested model.
    """
    output = entry.layer.output
    for inner in reversed(entry.owners[1:]):  # from the innermost nested model outwards
        sub_model = keras.Model(inner.inputs, output)
        output = sub_model(_called_inputs(inner))
    return output


def activation_model(model: keras.Model, selected: list[SelectedLayer]) -> keras.Model:
    """A model from `model`'s inputs to the outputs of the selected layers (a list)."""
    return keras.Model(model.inputs, [outer_output(e) for e in selected])
