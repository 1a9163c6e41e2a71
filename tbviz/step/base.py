"""The step every backend runs: one forward pass with each selected layer summarised as it returns.

`Step._forward` is the whole step, written once in ``keras.ops`` terms: the
selected layers' ``call`` is wrapped (`tbviz.model.capture.recording`), each
layer's output is reduced the moment the layer returns it, and the layers
alike in their summary are finished together as soon as the last of them is
reduced (`tbviz.numerics.summary`); an input of the model is summarised from
the probe itself, and the layers' call counts are checked against the model's
graph. Each backend's module (`tbviz.step.tensorflow`, ``jax``, ``torch``)
only says how that forward pass is compiled and run.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tbviz.model import capture
from tbviz.model.walk import LayerEntry
from tbviz.numerics.summary import LayerSummary, Reduced, finish_group

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

    Attributes:
        groups: the layers finished together (`tbviz.numerics.summary.finish_group`),
            as indices into `selected`, in the order their first layer was selected.
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
        self.samples = int(keras.tree.flatten(probe)[0].shape[0])
        self.groups = _groups(self.summaries, self.samples)
        self._careful = False  # the last step met NaN/Inf: the careful step runs first
        # Constant channels looked for in the sample first (`reduce_layer`'s `sample_first`).
        self.sample_first = False

    def __call__(self, fixed_ranges: np.ndarray) -> list[LayerResult]:
        """Runs the step; `fixed_ranges` is ``(layers, 2)`` float32 (NaN where not fixed yet).

        The lean step takes every output to be free of NaN/Inf and only checks
        it; where one is not, the careful step runs (and runs first at the next
        logged epoch, until an epoch is clean again). Each is compiled the first
        time it runs: most models never need the careful one.
        """
        groups = self._run(fixed_ranges, finite=not self._careful)
        unclean = any(np.any(numbers[:, 2] != 0) for _, numbers, _ in groups)
        if unclean and not self._careful:  # the lean step's pictures of it are wrong
            groups = self._run(fixed_ranges, finite=False)
        self._careful = unclean
        return self.split(groups)

    def _reduce(self, i: int, output: Any, finite: bool) -> Reduced:
        """Layer i's `tbviz.numerics.summary.reduce_layer` (a backend may compile it apart)."""
        return self.summaries[i].reduce(output, finite=finite, sample_first=self.sample_first)

    def _run(self, fixed_ranges: np.ndarray, *, finite: bool) -> list[list[np.ndarray]]:
        """Runs `_forward` the backend's way: each group's results, as NumPy arrays."""
        raise NotImplementedError

    def _forward(
        self,
        call_model: Callable[[], Any],
        probe: Any,
        fixed_ranges: Any,
        after: Callable[[Any, Reduced, tuple | None], Any] | None = None,
        *,
        finite: bool = True,
    ) -> list[tuple]:
        """One forward pass (`call_model`, on `probe`) with each selected layer summarised as
        it returns; returns each group's summary (`finish_group`), in the order of `groups`.
        `finite`: the lean step (True) or the careful one (see `__call__`).

        ``after(output, reduced, finished)`` returns what the model goes on with (by
        default the output itself); `finished` is the summary of the layer's group when
        this layer was its last, else None. Raises if a selected layer did not run, or a
        tapped layer ran a different number of times than the model's graph says.
        """
        selected, expected_calls = self.selected, self.expected_calls
        group_of = {i: g for g, members in enumerate(self.groups) for i in members}
        waiting = [len(members) for members in self.groups]  # layers not reduced yet
        reduced: dict[int, Reduced] = {}  # reduced, their group not finished yet
        finished: dict[int, tuple] = {}
        seen: set[int] = set()
        flat_probe = keras.tree.flatten(probe)
        index = {e.key: i for i, e in enumerate(selected)}

        def summarize(i: int, output: Any) -> tuple[Reduced, tuple | None]:
            reduced[i] = ours = self._reduce(i, output, finite)
            seen.add(i)
            g = group_of[i]
            waiting[g] -= 1
            if waiting[g]:
                return ours, None
            members = self.groups[g]
            ranges = keras.ops.take(fixed_ranges, np.array(members, np.int32), axis=0)
            parts = [reduced.pop(j) for j in members]  # freed once finished (eager backends)
            finished[g] = finish_group(
                parts, ranges, [self.summaries[j] for j in members], finite=finite
            )
            return ours, finished[g]

        for i, entry in enumerate(selected):  # an input's picture: the probe as the model sees it
            if entry.input_index is not None:
                summarize(i, flat_probe[entry.input_index])

        def tap(layer: keras.layers.Layer, call: int, output: Any) -> Any:
            i = index.get((id(layer), call))
            if i is None:  # a call of a shared layer that is not selected
                return output
            ours, group = summarize(i, output)
            return output if after is None else after(output, ours, group)

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
        missing = [e.path for i, e in enumerate(selected) if i not in seen]
        if missing or miscounted:
            raise RuntimeError(
                f"layers {', '.join(missing + miscounted)} of model '{self.model.name}': the "
                "probe batch did not run them as the model's graph says"
            )
        return [finished[g] for g in range(len(self.groups))]

    def split(self, groups: Sequence[Sequence[np.ndarray]]) -> list[LayerResult]:
        """Each layer's result, on the host, from its group's (`_forward`'s, as NumPy arrays)."""
        results: list[Any] = [None] * len(self.selected)
        n = self.samples
        for members, (pictures, numbers, coarse) in zip(self.groups, groups, strict=True):
            for k, i in enumerate(members):
                rows = slice(k * n, (k + 1) * n)
                results[i] = (pictures[rows], numbers[k], coarse[rows])
        return results


#: The most bytes of maps a group of layers finishes at once: a group's temporaries are a
#: few copies of its maps, made beside the forward pass (ResNet-50's default layers, maps
#: of 2 MB each: peak tensor memory 1.05x a forward pass's with 4 MB, 1.23x unbounded).
GROUP_MAP_BYTES = 4 * 2**20


def _groups(summaries: Sequence[LayerSummary], samples: int) -> list[list[int]]:
    """The layers finished together: alike in `LayerSummary.group_key`, in model order, at
    most `GROUP_MAP_BYTES` of maps each (one layer at least)."""
    alike: dict[tuple, list[int]] = {}
    for i, summary in enumerate(summaries):
        alike.setdefault(summary.group_key, []).append(i)
    groups = []
    for members in alike.values():
        size = 4 * samples * math.prod(summaries[members[0]].map_shape)
        per_group = max(1, GROUP_MAP_BYTES // size)
        groups += [members[k : k + per_group] for k in range(0, len(members), per_group)]
    return sorted(groups)


def call_arguments(model: keras.Model) -> dict[str, Any]:
    """``training=False`` if the model's ``call`` takes it (``stateless_call`` calls ``call`` itself)."""
    parameters = inspect.signature(model.call).parameters
    takes = "training" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    return {"training": False} if takes else {}
