"""Layer outputs of models without a graph (subclassed ``keras.Model``), by eager capture.

A subclassed model's layers have no symbolic outputs (``layer.output``
raises), so no activation model can be built. Instead the model is called
eagerly on the probe batch, ``model(probe, training=False)``, while the
``call`` of each wanted layer is temporarily replaced by a wrapper that
records what it returns; the original ``call`` is restored in a ``finally``,
whatever happens. A layer called several times during one forward pass
(a shared layer) is recorded at its first call.

Paths of layers in a subclassed model are the names of the layers it tracks as
attributes (see `tbviz.layers.walk`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import keras

from tbviz import layers as layer_selection

_MISSING = object()


class Recording:
    """What the wrapped layers returned during one forward pass, by ``id(layer)``."""

    def __init__(self) -> None:
        self.outputs: dict[int, Any] = {}
        self.order: dict[int, int] = {}

    def record(self, layer: keras.layers.Layer, output: Any) -> None:
        key = id(layer)
        if key not in self.outputs:  # the first call of a shared layer
            self.outputs[key] = output
            self.order[key] = len(self.order)


@contextlib.contextmanager
def recording(layers: Sequence[keras.layers.Layer]) -> Iterator[Recording]:
    """Wraps the ``call`` of `layers` to record their outputs; restores them on exit."""
    result = Recording()
    restore: list[tuple[keras.layers.Layer, Any]] = []
    try:
        for layer in {id(layer): layer for layer in layers}.values():
            own = vars(layer).get("call", _MISSING)  # an instance attribute, if any
            original = layer.call

            @functools.wraps(original)
            def wrapper(*args, _layer=layer, _original=original, **kwargs):
                output = _original(*args, **kwargs)
                result.record(_layer, output)
                return output

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
    model: keras.Model, probe: Any, entries: Sequence[layer_selection.SelectedLayer] | None = None
) -> list[layer_selection.SelectedLayer]:
    """`tbviz.layers.walk` entries with their outputs recorded on `probe`, in call order.

    Every tracked layer is recorded once (to know shapes and what is reached);
    layers whose ``call`` never ran are marked unreachable, at the end.
    """
    entries = layer_selection.walk(model) if entries is None else list(entries)
    wanted = [e.layer for e in entries if e.unreachable is None]
    result = run(model, wanted, probe)
    return layer_selection.with_outputs(entries, result.outputs, result.order, model.name)


def layer_outputs(
    model: keras.Model, layers: Sequence[keras.layers.Layer], probe: Any
) -> list[Any]:
    """The outputs of `layers` (in that order) when `model` runs on `probe`."""
    result = run(model, layers, probe)
    missing = [layer.name for layer in layers if id(layer) not in result.outputs]
    if missing:
        raise RuntimeError(
            f"layers {', '.join(missing)} of model '{model.name}' did not run on the probe batch"
        )
    return [result.outputs[id(layer)] for layer in layers]
