"""Layer outputs by wrapping the layers' ``call``: how every selected layer is reached.

While the model runs on the probe batch, the ``call`` of each wanted layer
is temporarily replaced by a wrapper that records what it returns, and that
can hand the output to a *tap* (the logging step of `tbviz.step` pictures
each layer there, inside the compiled step, as soon as the layer returns).
The original ``call`` is restored in a ``finally``, whatever happens. A layer
called several times during one forward pass (a shared layer, or one inside a
nested model called more than once) is recorded at its first call, and the
tap sees every call with its number (``SelectedLayer.call`` says which one an
entry is).

A subclassed model's layers have no symbolic outputs (``layer.output``
raises), so `capture_entries` runs such a model eagerly once to learn its
layers' outputs (shapes, layouts, which ones run at all). Paths of layers in
a subclassed model are the names of the layers it tracks as attributes (see
`tbviz.model.walk.walk`)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras

from tbviz.model.walk import LayerEntry, walk, with_outputs

_MISSING = object()


Tap = Callable[[keras.layers.Layer, int, Any], Any]


class Recording:
    """What the wrapped layers returned during one forward pass, by ``id(layer)``.

    Attributes:
        outputs: the first output of each layer.
        order: the position at which each layer's first call returned.
        calls: how many times each layer's ``call`` ran.
    """

    def __init__(self, tap: Tap | None = None) -> None:
        self.outputs: dict[int, Any] = {}
        self.order: dict[int, int] = {}
        self.calls: dict[int, int] = {}
        self.tap = tap

    def record(self, layer: keras.layers.Layer, output: Any) -> Any:
        """Keeps the first output of `layer`; returns what the model goes on with."""
        key = id(layer)
        call = self.calls.get(key, 0)
        self.calls[key] = call + 1
        if call == 0:
            self.outputs[key] = output
            self.order[key] = len(self.order)
        return output if self.tap is None else self.tap(layer, call, output)


@contextlib.contextmanager
def recording(layers: Sequence[keras.layers.Layer], tap: Tap | None = None) -> Iterator[Recording]:
    """Wraps the ``call`` of `layers` to record their outputs; restores them on exit.

    With a `tap`, ``tap(layer, call, output)`` is called as soon as the
    layer returns, on every call (`call` counts them from 0), and what it
    returns is what the rest of the model receives (the same values; see
    `tbviz.step` for why the TensorFlow step returns them behind a
    control dependency).
    """
    result = Recording(tap)
    restore: list[tuple[keras.layers.Layer, Any]] = []
    try:
        for layer in {id(layer): layer for layer in layers}.values():
            own = vars(layer).get("call", _MISSING)  # an instance attribute, if any
            original = layer.call

            @functools.wraps(original)
            def wrapper(*args, _layer=layer, _original=original, **kwargs):
                return result.record(_layer, _original(*args, **kwargs))

            layer.call = wrapper
            restore.append((layer, own))
        yield result
    finally:
        for layer, own in reversed(restore):
            if own is _MISSING:
                del layer.call
            else:
                layer.call = own


def run(model: keras.Model, layers: Sequence[keras.layers.Layer], probe: Any) -> Recording:
    """Calls ``model(probe, training=False)`` eagerly, recording the outputs of `layers`."""
    with recording(layers) as result:
        model(probe, training=False)
    return result


def capture_entries(
    model: keras.Model, probe: Any, entries: Sequence[LayerEntry] | None = None
) -> list[LayerEntry]:
    """`tbviz.model.walk.walk` entries with their outputs recorded on `probe`, in call order.

    Every tracked layer is recorded once (to know shapes and what is reached);
    layers whose ``call`` never ran are marked unreachable, at the end.
    """
    entries = walk(model) if entries is None else list(entries)
    wanted = [e.layer for e in entries if e.unreachable is None]
    result = run(model, wanted, probe)
    return with_outputs(entries, result.outputs, result.order, model.name)
