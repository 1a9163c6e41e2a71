"""Which layers to picture, and how their outputs are computed.

Layers are addressed by *path*: a top-level layer by its name, a layer inside
a nested model (a Functional or Sequential model used as a layer, as in
transfer learning) by ``outer/inner``. Subclassed models (a ``keras.Model``
with a ``call`` method) have no graph: their paths are the names of the
layers they track as attributes (``model.block.conv`` -> ``block/conv`` when
``block`` is a nested model or a user-defined layer holding layers).

Every selected layer's output is computed the same way, by calling the model
on the probe batch with the layers' ``call`` wrapped (`tbviz.capture`). What
the walk needs to know beforehand, each layer's output shape and layout, comes
from one of two places, chosen per model by `needs_capture`:

- *graph*: Functional and Sequential models (nested ones included) are
  walked through Keras' call graph: each layer gets the symbolic output of
  its call in its owner's graph.
- *capture*: for subclassed models, and for layers inside a subclassed model
  nested in a Functional one, `tbviz.capture` runs the model eagerly once and
  records the outputs.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import keras

# Union, not `|`: these aliases are evaluated at import time, and Python 3.10 cannot
# `|` a string forward reference.
LayerSelector = Union[str, "re.Pattern[str]", type, keras.layers.Layer]  # noqa: UP007
LayerSelection = Union[LayerSelector, Sequence[LayerSelector], None]  # noqa: UP007

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


_ACTIVATIONS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
)
_ACTIVATION_LIKE = (
    *_ACTIVATIONS,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.Add,
    keras.layers.Concatenate,
)
# Layers whose output has the layout of their (first) input: their data format
# is inherited from the layer that feeds them.
_LAYOUT_PRESERVING = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
    keras.layers.Rescaling,
    keras.layers.Identity,
)
_CHANNEL_AXIS_LAYERS = (keras.layers.BatchNormalization, keras.layers.GroupNormalization)


@dataclass(frozen=True)
class SelectedLayer:
    """A layer that can be chosen for logging, with the path used in its tags.

    Attributes:
        path: the tag path, ``outer/inner`` inside nested models.
        layer: the layer.
        owners: the chain of models and container layers from the top-level
            model down to `layer`'s owner.
        output: the layer's output: its symbolic output in its owner's graph
            (graph mode), or the value recorded by `tbviz.capture` (capture
            mode); None when unknown.
        block_output: every path from the owner's inputs to its outputs passes
            through this output (a stage boundary: a residual block's output,
            any layer of a plain chain), and it is not the input of the one
            activation layer that consumes it (``add`` -> ``relu``: the
            ``relu`` is the block output).
        unreachable: why the output cannot be computed from the model's
            inputs, or None.
        needs_capture: the output is only reachable by running the model
            eagerly (the layer lives in a subclassed model).
        call: which run of the layer's ``call`` in one forward pass of the
            top-level model this entry is (0 unless the layer, or a nested
            model holding it, is called more than once: see `walk`).
        input_index: for an input of the top-level model, its position in
            ``model.inputs`` (its picture is the probe itself); else None.
    """

    path: str
    layer: keras.layers.Layer
    owners: tuple = ()
    output: Any = field(default=None, compare=False, repr=False)
    block_output: bool = False
    unreachable: str | None = None
    needs_capture: bool = False
    call: int = 0
    input_index: int | None = None

    @property
    def key(self) -> tuple[int, int]:
        """``(id(layer), call)``: what `tbviz.capture` hands a tap, identifying this entry."""
        return id(self.layer), self.call

    @property
    def channels_first(self) -> bool:
        """The layer's output is ``(N, C, ...)``: read from the layer, never guessed from sizes."""
        return _channels_first(self.layer, self.output)

    @property
    def shape(self) -> tuple | None:
        """The output's shape without the batch axis, or None for several outputs or none."""
        if self.output is None or not hasattr(self.output, "shape"):
            return None
        return tuple(self.output.shape)[1:]


# -- Keras internals, wrapped here only ----------------------------------------------


def sublayers(layer: keras.layers.Layer, *, recursive: bool = False) -> list[keras.layers.Layer]:
    """The layers `layer` tracks (attributes, lists, dicts), in tracking order.

    The only use of Keras' private ``_flatten_layers``; falls back to ``.layers``.
    """
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return list(getattr(layer, "layers", []))
    return list(flatten(include_self=False, recursive=recursive))


def _node_of(tensor: Any) -> Any:
    """The Keras node (one ``__call__`` of an operation) that produced a symbolic tensor."""
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None
    return history.operation._inbound_nodes[history.node_index]


def _flat(structure: Any) -> list:
    return keras.tree.flatten(structure)


class _CallGraph:
    """The call graph of a Functional or Sequential model: its nodes in topological order.

    A layer shared between models (or called twice in one) has one node per
    call; only the nodes between this model's inputs and outputs are here.
    """

    def __init__(self, model: keras.Model) -> None:
        inputs = _flat(model.inputs)
        outputs = _flat(model.outputs)
        input_ids = {id(t) for t in inputs}
        self.order: list[Any] = []
        placed: set[int] = set()
        for output in outputs:
            start = _node_of(output)
            if start is None or id(start) in placed:
                continue
            stack = [(start, False)]
            while stack:  # iterative post-order: deep models exceed Python's recursion limit
                node, expanded = stack.pop()
                if id(node) in placed:
                    continue
                if expanded:
                    placed.add(id(node))
                    self.order.append(node)
                    continue
                stack.append((node, True))
                for tensor in node.input_tensors:
                    if id(tensor) in input_ids:
                        parent = _node_of(tensor)
                        if parent is not None and id(parent) not in placed:
                            placed.add(id(parent))
                            self.order.append(parent)
                        continue
                    parent = _node_of(tensor)
                    if parent is not None and id(parent) not in placed:
                        stack.append((parent, False))
        self.nodes_of: dict[int, list] = defaultdict(list)
        for node in self.order:
            self.nodes_of[id(node.operation)].append(node)
        self.cuts = self._cut_nodes(inputs, outputs)

    def _cut_nodes(self, inputs: list, outputs: list) -> set[int]:
        """Nodes whose single output is the only tensor alive right after them."""
        end = len(self.order)
        last_use: dict[int, int] = {}
        for position, node in enumerate(self.order):
            for tensor in node.input_tensors:
                last_use[id(tensor)] = position
        for tensor in outputs:
            last_use[id(tensor)] = end
        ending: dict[int, list[int]] = defaultdict(list)
        for tensor_id, position in last_use.items():
            ending[position].append(tensor_id)
        live = {id(t) for t in inputs if id(t) in last_use}  # alive from the start
        cuts: set[int] = set()
        for position, node in enumerate(self.order):
            if isinstance(node.operation, keras.layers.InputLayer):
                continue
            produced = [id(t) for t in node.output_tensors if last_use.get(id(t), -1) > position]
            live.update(produced)
            live.difference_update(ending[position])
            if len(node.output_tensors) == 1 and live == set(produced) and produced:
                cuts.add(id(node))
        # A cut whose only consumer is an activation layer (a residual `add` before its
        # ReLU) shows the same tensor as that activation, before the non-linearity: the
        # activation is the block's output, not it.
        consumers: dict[int, list] = defaultdict(list)
        for node in self.order:
            for tensor in node.input_tensors:
                consumers[id(tensor)].append(node)
        for node in self.order:
            if id(node) in cuts and len(node.output_tensors) == 1:
                users = consumers[id(node.output_tensors[0])]
                if len(users) == 1 and isinstance(users[0].operation, _ACTIVATIONS):
                    cuts.discard(id(node))
        return cuts


def _graph_of(model: keras.layers.Layer) -> _CallGraph | None:
    """The call graph of a Functional/Sequential model; None for a subclassed or unbuilt one."""
    if not isinstance(model, keras.Model):
        return None
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return None
    if not inputs or not outputs:
        return None
    return _CallGraph(model)


def _execution_order(model: keras.Model) -> dict[int, int]:
    """The position of each node of a Functional/Sequential model in Keras' own run of it.

    Keras runs a model's nodes by decreasing depth, in list order within one
    depth (``Function._run_through_graph``; a built ``Sequential`` runs its
    ``_functional``). The only use of those private attributes.
    """
    function = getattr(model, "_functional", None) or model
    by_depth = getattr(function, "_nodes_by_depth", None) or {}
    order = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
    return {id(node): position for position, node in enumerate(order)}


def _calls(layer: keras.layers.Layer, nodes: list, owner: keras.Model) -> list[tuple[Any, int]]:
    """The calls of `layer` in `owner`'s graph, in the order the model was built.

    Returns ``(node, rank)`` pairs, where `rank` is the position of that call
    among the layer's calls when Keras runs `owner` (what `tbviz.capture`
    counts at run time).
    """
    if len(nodes) == 1:
        return [(nodes[0], 0)]
    inbound = getattr(layer, "_inbound_nodes", [])
    built = sorted(nodes, key=lambda n: next(i for i, m in enumerate(inbound) if m is n))
    position = _execution_order(owner)
    run = sorted(nodes, key=lambda n: position.get(id(n), 0))
    return [(node, next(i for i, m in enumerate(run) if m is node)) for node in built]


# -- the walk ------------------------------------------------------------------------


def _is_container(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.Model) and bool(sublayers(layer))


def _is_user_composite(layer: keras.layers.Layer) -> bool:
    """A user-defined layer holding layers (a custom block); Keras' own composites are leaves."""
    module = type(layer).__module__ or ""
    return not module.startswith("keras.") and bool(sublayers(layer))


def walk(model: keras.Model) -> list[SelectedLayer]:
    """Every layer of `model` in order, descending into nested models.

    Functional and Sequential models are walked through their call graph
    (layers in graph order, each with its symbolic output), their inputs
    first (an input's picture is the probe as the model sees it). A layer or
    nested model called more than once in its model (a shared encoder of a
    siamese network) gets one entry per call, its path marked with the call's
    position in the order the model was built: ``encoder@0/conv``,
    ``encoder@1/conv``. Subclassed models are walked through the layers they
    track, also descending into user-defined layers that hold layers; their
    entries have no output yet (``needs_capture``):
    `tbviz.capture.capture_entries` records them, at their first call.
    """
    graph = _graph_of(model)
    inputs = []
    if graph is not None:
        for index, tensor in enumerate(_flat(model.inputs)):
            node = _node_of(tensor)
            if node is not None and isinstance(node.operation, keras.layers.InputLayer):
                inputs.append(
                    SelectedLayer(
                        node.operation.name,
                        node.operation,
                        (model,),
                        output=tensor,
                        input_index=index,
                    )
                )
    return inputs + list(_walk(model, "", (), graph, None, 0))


def _walk(
    model: keras.layers.Layer,
    prefix: str,
    owners: tuple,
    graph: _CallGraph | None,
    blocked: str | None,
    model_call: int,
) -> Iterator[SelectedLayer]:
    """Entries of `model`'s layers; `model_call` is which run of `model` in one forward pass."""
    owners = (*owners, model)
    # Graph models list their layers in graph order; others in tracking order.
    for layer in model.layers if graph is not None else sublayers(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        if graph is None:
            yield SelectedLayer(
                path,
                layer,
                owners,
                unreachable=blocked,
                needs_capture=True,
            )
            if isinstance(layer, keras.Model) or _is_user_composite(layer):
                yield from _walk(layer, f"{path}/", owners, None, blocked, 0)
            continue
        nodes = graph.nodes_of.get(id(layer), [])
        if blocked is None and not nodes:
            reason = (
                f"it is tracked by model '{model.name}' but is not on a path from "
                f"'{model.name}''s inputs to its outputs"
            )
            yield SelectedLayer(path, layer, owners, unreachable=reason)
            if _is_container(layer):
                yield from _walk(layer, f"{path}/", owners, _graph_of(layer), reason, 0)
            continue
        calls = _calls(layer, nodes, model) if nodes else [(None, 0)]
        for label, (node, rank) in enumerate(calls):
            here = f"{path}@{label}" if len(calls) > 1 else path
            call = model_call * len(calls) + rank
            output = None
            if node is not None:
                outs = node.output_tensors
                output = outs[0] if len(outs) == 1 else list(outs)
            yield SelectedLayer(
                here,
                layer,
                owners,
                output=output,
                block_output=node is not None and id(node) in graph.cuts,
                unreachable=blocked,
                call=call,
            )
            if not _is_container(layer):
                continue
            inner_graph = _graph_of(layer)
            if inner_graph is not None:
                yield from _walk(layer, f"{here}/", owners, inner_graph, blocked, call)
            elif label == 0:
                # A subclassed model inside a graph: its layers are reached by capture,
                # which records their first call.
                yield from _walk(layer, f"{path}/", owners, None, blocked, 0)


def needs_capture(entries: Sequence[SelectedLayer]) -> bool:
    """True if computing these entries' outputs needs an eager run with `tbviz.capture`."""
    return any(e.needs_capture for e in entries)


# -- layouts and usability -------------------------------------------------------------


def _channels_first(layer: keras.layers.Layer, output: Any, depth: int = 0) -> bool:
    """Reads the data format of `layer`'s output from the layer itself.

    A layer with a ``data_format`` (convolutions, pooling, up-sampling...)
    says it; batch and group normalisation say it by their channel axis;
    element-wise layers (activations, merges, dropout, rescaling) inherit it
    from the layer that feeds them. Otherwise: rank-3 outputs (RNNs,
    attention, embeddings, Dense on sequences) are ``(N, T, C)``; rank-4/5
    outputs follow ``keras.config.image_data_format()``, the default of every
    Keras image layer.
    """
    fmt = getattr(layer, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return fmt == "channels_first"
    rank = len(output.shape) if hasattr(output, "shape") else None
    if isinstance(layer, _CHANNEL_AXIS_LAYERS) and rank:
        axis = getattr(layer, "axis", -1)
        if isinstance(axis, int):
            return axis % rank == 1 and rank > 2
    if isinstance(layer, keras.layers.Dense):
        return False
    if isinstance(layer, _LAYOUT_PRESERVING) and depth < 50:
        node = _node_of(output)
        if node is not None and node.input_tensors:
            source = node.input_tensors[0]
            parent = _node_of(source)
            if parent is not None and not isinstance(parent.operation, keras.layers.InputLayer):
                return _channels_first(parent.operation, source, depth + 1)
    if rank == 3:
        return False
    return keras.config.image_data_format() == "channels_first"


def _output_problem(output: Any) -> str | None:
    if output is None:
        return "its output is not defined"
    if isinstance(output, (list, tuple, dict)):
        count = len(_flat(output))
        return f"it has several outputs ({count})"
    if not hasattr(output, "shape"):
        return f"its output is not a tensor ({type(output).__name__})"
    shape = tuple(output.shape)
    if len(shape) not in (2, 3, 4, 5):
        return f"its output has rank {len(shape)} (shape {shape}); ranks 2 to 5 can be pictured"
    dtype = str(getattr(output, "dtype", ""))
    if "bool" in dtype or not any(kind in dtype for kind in ("float", "int")):
        return f"its output is not numeric (dtype {getattr(output, 'dtype', '?')})"
    return None


def unusable_reason(entry: SelectedLayer | keras.layers.Layer) -> str | None:
    """Why a layer's output cannot be pictured, or None if it can."""
    if isinstance(entry, SelectedLayer):
        return _output_problem(entry.output)
    try:
        output = entry.output
    except (AttributeError, ValueError) as error:
        return f"its output is not defined ({error})"
    return _output_problem(output)


def output_rank(entry: SelectedLayer | keras.layers.Layer) -> int | None:
    """The rank of the single output, or None if there is no single tensor output."""
    output = entry.output if isinstance(entry, SelectedLayer) else _safe_output(entry)
    if output is None or isinstance(output, (list, tuple, dict)) or not hasattr(output, "shape"):
        return None
    return len(output.shape)


def _safe_output(layer: keras.layers.Layer) -> Any:
    try:
        return layer.output
    except (AttributeError, ValueError):
        return None


# -- default selection -------------------------------------------------------------------


def _is_candidate(entry: SelectedLayer, ranks: tuple[int, ...]) -> bool:
    layer = entry.layer
    return (
        entry.unreachable is None
        and not _is_container(layer)
        and not isinstance(layer, _PLUMBING)
        and not is_preprocessing(layer)
        and output_rank(entry) in ranks
        and unusable_reason(entry) is None
    )


def _is_activation_like(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, _ACTIVATION_LIKE):
        return True
    activation = getattr(layer, "activation", None)
    return activation is not None and getattr(activation, "__name__", "") != "linear"


def _distinct(entries: list[SelectedLayer]) -> list[SelectedLayer]:
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


def default_layers(entries: list[SelectedLayer], max_layers: int) -> list[SelectedLayer]:
    """The default choice: spatial and sequence layers, at most `max_layers` of them.

    Candidates: every reachable layer with a rank-3 to rank-5 output except
    plumbing (input, dropout, padding, cropping, reshape, flatten), Keras'
    preprocessing and augmentation layers (`is_preprocessing`: at inference
    they show the input) and nested models (their inner layers are
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


def all_layers(entries: list[SelectedLayer]) -> list[SelectedLayer]:
    """``layers="all"``: every layer whose output can be pictured, in model order.

    The model's inputs come first (their pictures, the probe as the model
    sees it, are the reference the other layers are read against); then
    every reachable layer with an output of rank 2 to 5, except plumbing
    (dropout, padding, cropping, reshape, flatten), Keras' preprocessing and
    augmentation layers (`is_preprocessing`) and nested models (their inner
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


def _matches(entry: SelectedLayer, selector: LayerSelector) -> bool:
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
    entries: list[SelectedLayer] | None = None,
) -> list[SelectedLayer]:
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
            (`tbviz.capture.capture_entries` for a subclassed model).

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


# -- outputs recorded by capture (subclassed models) -------------------------------------


def with_outputs(
    entries: list[SelectedLayer], outputs: dict[int, Any], order: dict[int, int], model_name: str
) -> list[SelectedLayer]:
    """Entries given the outputs recorded by `tbviz.capture`, in call order.

    Args:
        entries: `walk`'s entries.
        outputs: recorded output by ``id(layer)``.
        order: the position at which each layer's first call returned, by ``id(layer)``.
        model_name: for the reason given to layers that never ran.
    """
    reached, missed = [], []
    for entry in entries:
        key = id(entry.layer)
        if key in outputs:
            reached.append(dataclasses.replace(entry, output=outputs[key], unreachable=None))
        else:
            missed.append(
                dataclasses.replace(
                    entry,
                    output=None,
                    unreachable=entry.unreachable
                    or (
                        f"model '{model_name}' tracks it but its `call` never ran when the "
                        "model was called on the probe batch"
                    ),
                )
            )
    reached.sort(key=lambda e: order[id(e.layer)])
    return reached + missed
