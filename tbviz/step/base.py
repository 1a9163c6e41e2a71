"""The step every backend runs: one forward pass with each selected layer summarised as it returns.

`Step._forward` is the whole step, written once in ``keras.ops`` terms: the
selected layers' ``call`` is wrapped (`tbviz.model.capture.recording`), each
layer's output is summarised the moment the layer returns it
(`tbviz.numerics.summary`), an input of the model is summarised from the
probe itself, and the layers' call counts are checked against the model's
graph. Each backend's module (`tbviz.step.tensorflow`, ``jax``, ``torch``)
only says how that forward pass is compiled and run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tbviz.model import capture
from tbviz.model.walk import LayerEntry
from tbviz.numerics.summary import LayerSummary, Reduced

# What the step returns for one layer, on the host: pictures (N, H, W) uint8 (or
# (N, H, W, 3) RGB), numbers float32 (`tbviz.numerics.summary.LayerNumbers`), coarse maps.
LayerResult = tuple[np.ndarray, np.ndarray, np.ndarray]


class StepUnavailable(RuntimeError):
    """The step cannot run in this setting (not an error in the arguments); logging stays off."""


class Step:
    """The built step: ``step(fixed_ranges)`` -> one `LayerResult` per selected layer.

    Args and attributes:
        model: the model the step runs.
        probe: the probe batch, as tensors of the backend (see
            `tbviz.model.probes.match_model_inputs`).
        selected: the layers to summarise, in the order of the results; an
            entry with an ``input_index`` is the model's input of that
            position, summarised from the probe.
        summaries: how each selected layer is summarised.
        expected_calls: how many times each tapped layer runs in one forward
            pass, by ``id(layer)``, as the model's graph says.
    """

    def __init__(
        self,
        model: keras.Model,
        probe: Any,
        selected: Sequence[LayerEntry],
        summaries: Sequence[LayerSummary],
        expected_calls: dict[int, int],
    ) -> None:
        self.model = model
        self.probe = probe
        self.selected = list(selected)
        self.summaries = list(summaries)
        self.expected_calls = expected_calls

    def __call__(self, fixed_ranges: np.ndarray) -> list[LayerResult]:
        """Runs the step; `fixed_ranges` is ``(layers, 2)`` float32 (NaN where not fixed yet)."""
        raise NotImplementedError

    def _forward(
        self,
        call_model: Callable[[], Any],
        probe: Any,
        fixed_ranges: Any,
        reduce: Callable[[int, Any], Reduced] | None = None,
        finish: Callable[[int, Reduced, Any], tuple] | None = None,
        after: Callable[[Any, Reduced, tuple], Any] | None = None,
    ) -> list[tuple]:
        """One forward pass (`call_model`, on `probe`) with each selected layer summarised as it returns.

        Layer i's summary is ``finish(i, reduce(i, output), fixed_range)`` (by
        default its `LayerSummary`'s); ``after(output, reduced, summary)``
        returns what the model goes on with (by default the output itself).
        Raises if a selected layer did not run, or a tapped layer ran a
        different number of times than the model's graph says.
        """
        reduce = reduce or (lambda i, output: self.summaries[i].reduce(output))
        finish = finish or (lambda i, *arguments: self.summaries[i].finish(*arguments))
        selected, expected_calls = self.selected, self.expected_calls
        results: dict[int, tuple] = {}
        ranges = keras.ops.unstack(fixed_ranges, num=len(selected), axis=0)
        flat_probe = keras.tree.flatten(probe)
        index = {e.key: i for i, e in enumerate(selected)}

        def summarize(i: int, output: Any) -> Reduced:
            reduced = reduce(i, output)
            results[i] = finish(i, reduced, ranges[i])
            return reduced

        for i, entry in enumerate(selected):  # an input's picture: the probe as the model sees it
            if entry.input_index is not None:
                summarize(i, flat_probe[entry.input_index])

        def tap(layer: keras.layers.Layer, call: int, output: Any) -> Any:
            i = index.get((id(layer), call))
            if i is None:  # a call of a shared layer that is not selected
                return output
            reduced = summarize(i, output)
            return output if after is None else after(output, reduced, results[i])

        tapped = [e.layer for e in selected if e.input_index is None]
        with capture.recording(tapped, tap=tap) as recorded:
            call_model()
        miscounted = [
            f"'{layer.name}' ran {recorded.calls.get(id(layer), 0)} times, expected "
            f"{expected_calls[id(layer)]}"
            for layer in tapped
            if id(layer) in expected_calls
            and recorded.calls.get(id(layer), 0) != expected_calls[id(layer)]
        ]
        missing = [e.path for i, e in enumerate(selected) if i not in results]
        if missing or miscounted:
            raise RuntimeError(
                f"layers {', '.join(missing + miscounted)} of model '{self.model.name}': the "
                "probe batch did not run them as the model's graph says"
            )
        return [results[i] for i in range(len(selected))]


def call_arguments(model: keras.Model) -> dict[str, Any]:
    """``training=False`` if the model's ``call`` takes it (``stateless_call`` calls ``call`` itself)."""
    parameters = inspect.signature(model.call).parameters
    takes = "training" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    return {"training": False} if takes else {}
