"""Every layer of a model, in order: its path, its output, how that output is laid out.

Layers are addressed by *path*: a top-level layer by its name, a layer inside
a nested model (a Functional or Sequential model used as a layer, as in
transfer learning) by ``outer/inner``. Subclassed models (a ``keras.Model``
with a ``call`` method) have no graph: their paths are the names of the
layers they track as attributes (``model.block.conv`` -> ``block/conv`` when
``block`` is a nested model or a user-defined layer holding layers).

Every selected layer's output is computed the same way, by calling the model
on the probe batch with the layers' ``call`` wrapped (`tbviz.model.capture`).
What the walk needs to know beforehand, each layer's output shape and layout,
comes from one of two places, chosen per model by `needs_capture`:

- *graph*: Functional and Sequential models (nested ones included) are
  walked through Keras' call graph: each layer gets the symbolic output of
  its call in its owner's graph.
- *capture*: for subclassed models, and for layers inside a subclassed model
  nested in a Functional one, `tbviz.model.capture` runs the model eagerly
  once and records the outputs.

Each entry's `LayerEntry.layout` says how its output is drawn
(`tbviz.numerics.layout`), read from the layer and the graph, never guessed
from sizes alone: its data format; whether it is an image (an input of the
model, or an output that is not class probabilities, with 1 or 3 channels);
whether a token sequence comes from an image (a vision transformer's patches).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

from tbviz.numerics.layout import Layout, token_grid_side

#: Layers that are an activation function and nothing else.
ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
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
#: Layers that pass their input through unchanged at inference (dropout, noise, identity).
IDENTITY_AT_INFERENCE = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
_CHANNEL_AXIS_LAYERS = (keras.layers.BatchNormalization, keras.layers.GroupNormalization)


@dataclass(frozen=True)
class LayerEntry:
    """One layer of the model (one call of it), with the path used in its tags.

    Attributes:
        path: the tag path, ``outer/inner`` inside nested models.
        layer: the layer.
        owners: the chain of models and container layers from the top-level
            model down to `layer`'s owner.
        output: the layer's output: its symbolic output in its owner's graph
            (graph mode), or the value recorded by `tbviz.model.capture`
            (capture mode); None when unknown.
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
        model_output: its output is an output of the top-level model.
        from_image: its output is computed from an image input of the model
            (rank 4), so a square token sequence is a grid of patches.
        repeats_input: its output equals its input's (a ReLU applied to an
            output that is already a ReLU's): a picture would show nothing new.
        run_shape: the output's shape (no batch axis) on the probe batch, for
            an output whose graph leaves sizes unknown (a sequence of any
            length); see `with_run_shapes`.
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
    model_output: bool = False
    from_image: bool = False
    repeats_input: bool = False
    run_shape: tuple[int, ...] | None = None

    @property
    def key(self) -> tuple[int, int]:
        """``(id(layer), call)``: what `tbviz.model.capture` hands a tap, identifying this entry."""
        return id(self.layer), self.call

    @property
    def channels_first(self) -> bool:
        """The layer's output is ``(N, C, ...)``: read from the layer, never guessed from sizes."""
        return _channels_first(self.layer, self.output)

    @property
    def shape(self) -> tuple | None:
        """The output's shape without the batch axis, or None for several outputs or none."""
        if self.run_shape is not None:
            return self.run_shape
        if self.output is None or not hasattr(self.output, "shape"):
            return None
        return tuple(self.output.shape)[1:]

    @property
    def layout(self) -> Layout | None:
        """How the output is drawn; None when it cannot be (see `unusable_reason`)."""
        if unusable_reason(self) is not None:
            return None
        shape, first = tuple(self.shape or ()), self.channels_first
        if None in shape:
            return None
        if len(shape) == 2 and self.from_image and not first and token_grid_side(shape[0]):
            return Layout("tokens", shape)
        if len(shape) == 3 and (shape[0] if first else shape[-1]) in (1, 3):
            if self.input_index is not None or (
                self.model_output and activation_name(self.layer) != "softmax"
            ):
                return Layout("image", shape, first)
        return Layout.default(shape, first)

    @property
    def trainable(self) -> bool:
        """Whether the layer and every model holding it are trainable (a frozen backbone's are not)."""
        return all(getattr(x, "trainable", True) for x in (*self.owners, self.layer))


def activation_name(layer: keras.layers.Layer) -> str | None:
    """The name of the activation the layer ends with (``"relu"``, ``"sigmoid"``, ``"linear"``...);
    None when it has none that Keras names."""
    if isinstance(layer, keras.layers.ReLU):
        plain = not layer.negative_slope and not layer.threshold
        if plain and layer.max_value is None:
            return "relu"
        return "relu6" if plain and layer.max_value == 6 else "relu (clipped or leaky)"
    named = {
        keras.layers.LeakyReLU: "leaky_relu",
        keras.layers.PReLU: "prelu",
        keras.layers.ELU: "elu",
        keras.layers.Softmax: "softmax",
    }
    for cls, name in named.items():
        if isinstance(layer, cls):
            return name
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def _repeats_input(node: Any) -> bool:
    """Whether `node` (a call of a layer) applies an idempotent activation (relu, relu6) to an
    output that is already that activation's, so that its output equals its input."""
    if node is None or len(node.input_tensors) != 1:
        return False
    name = activation_name(node.operation)
    if name not in ("relu", "relu6") or not isinstance(node.operation, ACTIVATION_LAYERS):
        return False
    parent = _node_of(node.input_tensors[0])
    while parent is not None and isinstance(parent.operation, IDENTITY_AT_INFERENCE):
        parent = _node_of(parent.input_tensors[0]) if parent.input_tensors else None
    return parent is not None and activation_name(parent.operation) == name


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

    def derived(self, sources: Sequence[int]) -> frozenset[int]:
        """The ids of the tensors computed from the tensors of ids `sources` (them included)."""
        found = set(sources)
        for node in self.order:
            if any(id(t) in found for t in node.input_tensors):
                found.update(id(t) for t in node.output_tensors)
        return frozenset(found)

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
                if len(users) == 1 and isinstance(users[0].operation, ACTIVATION_LAYERS):
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
    among the layer's calls when Keras runs `owner` (what `tbviz.model.capture`
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


def is_container(layer: keras.layers.Layer) -> bool:
    """A nested model holding layers (its layers are walked instead of it)."""
    return isinstance(layer, keras.Model) and bool(sublayers(layer))


def _is_user_composite(layer: keras.layers.Layer) -> bool:
    """A user-defined layer holding layers (a custom block); Keras' own composites are leaves."""
    module = type(layer).__module__ or ""
    return not module.startswith("keras.") and bool(sublayers(layer))


def walk(model: keras.Model) -> list[LayerEntry]:
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
    `tbviz.model.capture.capture_entries` records them, at their first call.
    """
    graph = _graph_of(model)
    inputs = []
    if graph is None:
        context = _Context(frozenset(), frozenset(), _has_image_input(model))
    else:
        images = [id(t) for t in _flat(model.inputs) if len(t.shape) == 4]
        context = _Context(
            graph.derived(images), frozenset(id(t) for t in _flat(model.outputs)), False
        )
        for index, tensor in enumerate(_flat(model.inputs)):
            node = _node_of(tensor)
            if node is not None and isinstance(node.operation, keras.layers.InputLayer):
                inputs.append(
                    LayerEntry(
                        node.operation.name,
                        node.operation,
                        (model,),
                        output=tensor,
                        input_index=index,
                        from_image=id(tensor) in context.image_tensors,
                    )
                )
    return inputs + list(_walk(model, "", (), graph, None, 0, context))


@dataclass(frozen=True)
class _Context:
    """What the walk of one graph knows about the tensors of the top-level model."""

    image_tensors: frozenset[int]  # ids of this graph's tensors computed from an image input
    model_outputs: frozenset[int]  # ids of the top-level model's outputs (in its graph)
    all_from_image: bool  # a nested or subclassed model fed from an image: all of it is


def _has_image_input(model: keras.Model) -> bool:
    try:
        return any(len(t.shape) == 4 for t in _flat(model.inputs))
    except (AttributeError, ValueError):  # a subclassed model: its inputs are not known yet
        return False


def _walk(
    model: keras.layers.Layer,
    prefix: str,
    owners: tuple,
    graph: _CallGraph | None,
    blocked: str | None,
    model_call: int,
    context: _Context,
) -> Iterator[LayerEntry]:
    """Entries of `model`'s layers; `model_call` is which run of `model` in one forward pass."""
    owners = (*owners, model)
    inner = _Context(frozenset(), frozenset(), context.all_from_image)
    # Graph models list their layers in graph order; others in tracking order.
    for layer in model.layers if graph is not None else sublayers(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        if graph is None:
            yield LayerEntry(
                path,
                layer,
                owners,
                unreachable=blocked,
                needs_capture=True,
                from_image=context.all_from_image,
            )
            if isinstance(layer, keras.Model) or _is_user_composite(layer):
                yield from _walk(layer, f"{path}/", owners, None, blocked, 0, inner)
            continue
        nodes = graph.nodes_of.get(id(layer), [])
        if blocked is None and not nodes:
            reason = (
                f"it is tracked by model '{model.name}' but is not on a path from "
                f"'{model.name}''s inputs to its outputs"
            )
            yield LayerEntry(path, layer, owners, unreachable=reason)
            if is_container(layer):
                yield from _walk(layer, f"{path}/", owners, _graph_of(layer), reason, 0, inner)
            continue
        calls = _calls(layer, nodes, model) if nodes else [(None, 0)]
        for label, (node, rank) in enumerate(calls):
            here = f"{path}@{label}" if len(calls) > 1 else path
            call = model_call * len(calls) + rank
            output = None
            if node is not None:
                outs = node.output_tensors
                output = outs[0] if len(outs) == 1 else list(outs)
            from_image = context.all_from_image or (
                node is not None and any(id(t) in context.image_tensors for t in node.output_tensors)
            )
            yield LayerEntry(
                here,
                layer,
                owners,
                output=output,
                block_output=node is not None and id(node) in graph.cuts,
                unreachable=blocked,
                call=call,
                model_output=output is not None and id(output) in context.model_outputs,
                from_image=from_image,
                repeats_input=_repeats_input(node),
            )
            if not is_container(layer):
                continue
            nested = _Context(frozenset(), frozenset(), from_image)
            inner_graph = _graph_of(layer)
            if inner_graph is not None:
                yield from _walk(layer, f"{here}/", owners, inner_graph, blocked, call, nested)
            elif label == 0:
                # A subclassed model inside a graph: its layers are reached by capture,
                # which records their first call.
                yield from _walk(layer, f"{path}/", owners, None, blocked, 0, nested)


def needs_capture(entries: Sequence[LayerEntry]) -> bool:
    """True if computing these entries' outputs needs an eager run with `tbviz.model.capture`."""
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


def unusable_reason(entry: LayerEntry) -> str | None:
    """Why a layer's output cannot be pictured, or None if it can (sizes may be unknown yet)."""
    return _output_problem(entry.output)


def output_rank(entry: LayerEntry) -> int | None:
    """The rank of the single output, or None if there is no single tensor output."""
    output = entry.output
    if output is None or isinstance(output, (list, tuple, dict)) or not hasattr(output, "shape"):
        return None
    return len(output.shape)


# -- outputs recorded by capture (subclassed models) -------------------------------------


def with_run_shapes(entries: list[LayerEntry], outputs: dict[int, Any]) -> list[LayerEntry]:
    """`entries` given the shapes their outputs had on the probe batch, where their graph
    leaves a size unknown; `outputs` are recorded outputs by ``id(layer)`` (`tbviz.model.capture`)."""
    return [
        dataclasses.replace(entry, run_shape=tuple(outputs[id(entry.layer)].shape)[1:])
        if entry.shape is not None and None in entry.shape and id(entry.layer) in outputs
        else entry
        for entry in entries
    ]


def with_outputs(
    entries: list[LayerEntry], outputs: dict[int, Any], order: dict[int, int], model_name: str
) -> list[LayerEntry]:
    """Entries given the outputs recorded by `tbviz.model.capture`, in call order.

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
