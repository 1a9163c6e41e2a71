"""The logging step: one forward pass of the probe batch, every selected layer summarised.

This is the one module with code for a particular Keras backend. Everything
the step does is the same on every backend and written once here (`Step._forward`):
the selected layers' ``call`` is wrapped (`tbviz.capture.recording`), each
layer's output is summarised the moment the layer returns it (`tbviz.summarize`:
the part that reads the output, then pictures, numbers, coarse maps), an input
of the model is summarised from the probe itself, and the layers' call counts
are checked against the model's graph. Only how that forward pass is compiled
and run differs, each backend the way its own Keras trainer runs a step:

- TensorFlow: a ``tf.function`` (or eagerly for a model compiled with
  ``run_eagerly=True``). The model goes on with a layer's output only once
  the part of its summary that reads it is done (a control dependency); the
  rest runs beside the forward pass. When output shapes repeat, each part is
  a call of a non-inlined function traced once per kind of layer (`_function`).
- JAX: one ``jax.jit`` of a pure function of the weights, the probe and the
  fixed ranges that calls ``model.stateless_call``. The weights are arguments
  on every call (closed-over weights would be baked into the compiled step
  as constants and go stale) and the jitted function is kept, so it compiles
  once. Under a multi-process ``keras.distribution`` the step runs on process
  0 alone, on its own device, with its local copy of the replicated weights.
- PyTorch: the model called eagerly under ``torch.no_grad()``.

`build_step` returns a `Step`: called with the fixed ranges, it returns each
layer's summary as host NumPy arrays (copying them is part of the step).
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tbviz import capture
from tbviz import layers as layer_selection
from tbviz.pictures import PictureOptions, map_grid
from tbviz.summarize import Reduced, finish_layer, reduce_layer

# What the step returns for one layer: pictures (N, H, W) uint8, numbers float32
# (see `tbviz.summarize.finish_layer` for their layout), coarse maps float32.
LayerResult = tuple[np.ndarray, np.ndarray, np.ndarray]


class StepUnavailable(RuntimeError):
    """The step cannot run in this setting (not an error in the arguments); logging stays off."""


@dataclass(frozen=True)
class Summary:
    """How one selected layer's output is summarised (see `tbviz.summarize`)."""

    options: PictureOptions
    channels_first: bool
    wants_stats: bool

    def reduce(self, output: Any) -> Reduced:
        """The part that reads the full output; the model waits for it."""
        return reduce_layer(output, self.options, self.channels_first, self.wants_stats)

    def finish(self, reduced: Reduced, fixed_range: Any, grid: tuple[int, int]) -> tuple:
        """The rest, from what `reduce` kept: pictures, numbers, coarse maps."""
        return finish_layer(reduced, fixed_range, self.options, grid, self.wants_stats)

    def grid(self, output: Any) -> tuple[int, int]:
        """The grid of the pictures of `output` (with its batch axis)."""
        return map_grid(
            tuple(output.shape[1:]),
            channels_first=self.channels_first,
            max_channels=self.options.max_channels,
        )


class Step:
    """The built step: ``step(fixed_ranges)`` -> one `LayerResult` per selected layer.

    Attributes:
        model: the model the step runs.
        probe: the probe batch, as tensors of the backend.
        selected: the selected layers, in the order of the results.
    """

    def __init__(
        self,
        model: keras.Model,
        probe: Any,
        selected: Sequence[layer_selection.SelectedLayer],
        summaries: Sequence[Summary],
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
        finish: Callable[[int, Reduced, Any, tuple[int, int]], tuple] | None = None,
        after: Callable[[Any, Reduced, tuple], Any] | None = None,
    ) -> list[tuple]:
        """One forward pass (`call_model`, on `probe`) with each selected layer summarised as it returns.

        This is the step on every backend; each backend's `Step` only says how
        it is compiled and run. Layer i's summary is ``finish(i, reduce(i,
        output), fixed_range, grid)`` (by default its `Summary`'s);
        ``after(output, reduced, summary)`` returns what the model goes on with (by
        default the output itself). Raises if a selected layer did not run,
        or a tapped layer ran a different number of times than the model's
        graph says.
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
            results[i] = finish(i, reduced, ranges[i], self.summaries[i].grid(output))
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


def build_step(
    model: keras.Model,
    probe: Any,
    selected: Sequence[layer_selection.SelectedLayer],
    summaries: Sequence[Summary],
    expected_calls: dict[int, int],
    *,
    eager: bool = False,
) -> Step:
    """The step for the current Keras backend.

    Args:
        model: the model to run (the one being trained, or `model=`).
        probe: the probe batch as the model is called with it: backend tensors
            (see `tbviz.probes.match_model_inputs`).
        selected: the layers to summarise; an entry with an ``input_index`` is
            the model's input of that position, summarised from the probe.
        summaries: how each selected layer is summarised.
        expected_calls: how many times each tapped layer runs in one forward
            pass, by ``id(layer)``, as the model's graph says.
        eager: run without compiling, for a model compiled with
            ``run_eagerly=True`` (which may not be traceable). Defaults to `False`.

    Raises:
        StepUnavailable: the step cannot run here (JAX: weights sharded across
            processes).
    """
    backend = keras.backend.backend()
    arguments = (model, probe, selected, summaries, expected_calls)
    if backend == "tensorflow":
        return _TensorFlowStep(*arguments, eager=eager)
    if backend == "jax":
        return _JaxStep(*arguments, eager=eager)
    if backend == "torch":
        return _TorchStep(*arguments)
    raise StepUnavailable(
        f"tbviz runs on the tensorflow, jax and torch backends of Keras; expected one of "
        f"them. Received: keras.backend.backend()={backend!r}"
    )


def writes_summaries(model: keras.Model) -> bool:
    """Whether this process logs: under distributed training only one process writes.

    TensorFlow: the strategy's chief (``should_save_summary``); JAX: process 0;
    PyTorch: rank 0 when ``torch.distributed`` is initialised.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.process_index() == 0
    if backend == "torch":
        import torch.distributed

        return (
            not (torch.distributed.is_available() and torch.distributed.is_initialized())
            or torch.distributed.get_rank() == 0
        )
    try:
        return bool(model.distribute_strategy.extended.should_save_summary)
    except AttributeError:
        return True


def _call_arguments(model: keras.Model) -> dict[str, Any]:
    """``training=False`` if the model's ``call`` takes it (``stateless_call`` calls ``call`` itself)."""
    parameters = inspect.signature(model.call).parameters
    takes = "training" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    return {"training": False} if takes else {}


# -- TensorFlow ----------------------------------------------------------------------


class _TensorFlowStep(Step):
    """A ``tf.function`` traced once (``reduce_retracing``), or eager for ``run_eagerly`` models.

    Attributes:
        function: the traced step, ``function(probe, fixed_ranges)`` -> tensors;
            a plain Python function when eager.
    """

    def __init__(self, *arguments: Any, eager: bool) -> None:
        import tensorflow as tf

        super().__init__(*arguments)
        # In the traced step, when layers share an output shape, layout and options, each
        # layer's two parts are calls of two functions traced once per (shape, dtype,
        # summary), see `_function`. When none do (a few layers, say the default's on a
        # small CNN), they are inline: the functions' runtime would only add memory (about
        # 2 MB).
        kinds = Counter((e.shape, s) for e, s in zip(self.selected, self.summaries, strict=True))
        inline = eager or len(kinds) == len(self.selected)
        functions: dict[tuple, Any] = {}

        def reduce(i: int, output: Any) -> Reduced:
            summary = self.summaries[i]
            if inline:
                return summary.reduce(output)
            key = ("reduce", summary, tuple(output.shape), output.dtype)
            if key not in functions:
                functions[key] = _function(summary.reduce, output)
            return Reduced(*functions[key](output))

        def finish(i: int, reduced: Reduced, fixed_range: Any, grid: tuple[int, int]) -> tuple:
            summary = self.summaries[i]
            if inline:
                return summary.finish(reduced, fixed_range, grid)
            # One function for all layers whose maps are alike: the statistics' sample
            # may have any length (it differs from layer to layer).
            key = ("finish", summary, grid, tuple(reduced.maps.shape))
            if key not in functions:

                def finish_summary(*tensors: Any) -> tuple:  # maps, sample, count, range
                    return summary.finish(Reduced(*tensors[:3]), tensors[3], grid)

                functions[key] = _function(
                    finish_summary,
                    reduced.maps,
                    tf.TensorSpec([None], reduced.sample.dtype),
                    reduced.nonfinite,
                    fixed_range,
                )
            return functions[key](*reduced, fixed_range)

        def after(output: Any, reduced: Reduced, summary: tuple) -> Any:
            # The model goes on with a layer's output only once the part of its summary
            # that reads it is done, so a layer's full activation is freed as soon as the
            # model is done with it, as in a bare forward pass, instead of every selected
            # activation waiting for the end. With many layers, what is left to do from
            # there (`finish`, on small tensors) runs beside the rest of the forward pass;
            # with a few, inline, the model waits for it too: there is little to overlap,
            # and its temporaries would add to the forward pass's peak memory.
            if tf.executing_eagerly():
                return output
            with tf.control_dependencies(tf.nest.flatten(summary if inline else reduced)):
                return tf.nest.map_structure(tf.identity, output)

        def step(probe: Any, fixed_ranges: Any) -> list[tuple]:
            return self._forward(
                lambda: self.model(probe, training=False),
                probe,
                fixed_ranges,
                reduce,
                finish,
                after,
            )

        self.function = step if eager else tf.function(step, reduce_retracing=True, autograph=False)

    def __call__(self, fixed_ranges: np.ndarray) -> list[LayerResult]:
        results = self.function(self.probe, fixed_ranges)
        return [tuple(t.numpy() for t in result) for result in results]


def _function(body: Callable, *examples: Any) -> Any:
    """`body` as a ``tf.function`` traced once, for tensors shaped as `examples` (tensors
    or ``tf.TensorSpec``).

    Inside the traced step each layer's summary is then two call ops, not
    hundreds of ops: with every layer of a ResNet-50 selected (174 layers,
    11 distinct output shapes), tracing the step and TensorFlow's graph
    optimiser had 74,000 ops to go through (about 15 s and 16 s on 2 cores);
    with the calls, they see the forward pass and two small functions per
    shape. ``_noinline`` keeps the optimiser from pasting the body back in at
    every call.
    """
    import tensorflow as tf

    return tf.function(
        body,
        input_signature=[
            x if isinstance(x, tf.TensorSpec) else tf.TensorSpec(x.shape, x.dtype) for x in examples
        ],
        autograph=False,
        experimental_attributes={"_noinline": True},
    )


def missing_kernel(model: keras.Model, error: BaseException) -> str | None:
    """What to tell the user when TensorFlow has no kernel for a channels_first layer.

    TensorFlow's own CPU convolutions take channels_last (NHWC) only; channels_first
    (NCHW) ones exist where oneDNN is on, by default only on CPUs with AVX512-VNNI,
    AVX512-BF16, AVX-VNNI or AMX. A model can train without them under XLA
    (``jit_compile=True``), but tbviz's forward pass runs without XLA. None for any
    other error, and on other backends.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.OpError):
        return None
    lines = error.message.splitlines()
    reasons = [
        re.sub(r"\x1b\[[0-9;]*m|\{\{[^}]*\}\}|\[Op:\w+\]", "", line).strip()  # colours, op names
        for line in lines
        if re.search(r"only supports (the )?ND?HW?C\b", line)
    ]
    if not reasons:
        return None
    suspects = [
        layer
        for layer in layer_selection.sublayers(model, recursive=True)
        if getattr(layer, "data_format", None) == "channels_first"
    ]
    if not suspects:
        return None
    # The culprit: in a graph, its name scope in the node's name ("sequential/conv_1/convolution");
    # run eagerly, its class ("Exception encountered when calling Conv2D.call()").
    node = re.search(r"node (\S+)", error.message)
    scopes = node.group(1).split("/") if node else []
    classes = set(re.findall(r"calling (\w+)\.call\(\)", error.message))
    named = [
        layer
        for layer in suspects
        if type(layer).__name__ in classes
        or any(re.fullmatch(re.escape(layer.name) + r"(_\d+)?", scope) for scope in scopes)
    ]
    named = named or suspects
    layers = ", ".join(f"'{layer.name}' ({type(layer).__name__})" for layer in named)
    return (
        f"TensorFlow has no channels_first (NCHW) kernel on this CPU for "
        f"{'layer' if len(named) == 1 else 'layers'} {layers} of "
        f"model '{model.name}', which tbviz runs without XLA; expected data_format="
        "'channels_last', or TF_ENABLE_ONEDNN_OPTS=1 set before TensorFlow is imported "
        "(oneDNN runs NCHW). Nothing more is logged in this fit(). Received: "
        f"data_format='channels_first' and {type(error).__name__}: {reasons[0]}"
    )


# -- JAX -----------------------------------------------------------------------------


class _JaxStep(Step):
    """One ``jax.jit`` of ``stateless_call`` with the taps; the weights are its arguments.

    Under a ``keras.distribution`` spanning several processes the weights are
    global arrays, and a jit over them is a collective that every process
    would have to join. Only process 0 logs, so it runs the step alone: on its
    first local device, with its own replica of each weight, and with no
    distribution set while the step is traced (a layout map would ask for
    shardings over devices it does not hold). Weights sharded across
    processes (``ModelParallel``) have no full local replica: `StepUnavailable`.

    Attributes:
        function: the jitted step, ``function(trainable, non_trainable, probe,
            fixed_ranges)`` -> arrays on the device; not jitted for a model
            compiled with ``run_eagerly=True``, as Keras' own step is not.
    """

    def __init__(self, *arguments: Any, eager: bool) -> None:
        import jax

        super().__init__(*arguments)
        self._device = jax.local_devices()[0]
        _local_values(self.model, self.model.variables, self._device)  # StepUnavailable now
        self.probe = jax.device_put(self.probe, self._device)
        kwargs = _call_arguments(self.model)

        def step(trainable: list, non_trainable: list, probe: Any, fixed_ranges: Any) -> list:
            def call_model() -> Any:
                return self.model.stateless_call(trainable, non_trainable, probe, **kwargs)

            with _no_distribution():
                return self._forward(call_model, probe, fixed_ranges)

        self.function = step if eager else jax.jit(step)

    def arguments(self, fixed_ranges: np.ndarray) -> tuple:
        """What `function` is called with: the weights' current values, the probe, the ranges."""
        import jax

        return (
            _local_values(self.model, self.model.trainable_variables, self._device),
            _local_values(self.model, self.model.non_trainable_variables, self._device),
            self.probe,
            jax.device_put(fixed_ranges, self._device),
        )

    def __call__(self, fixed_ranges: np.ndarray) -> list[LayerResult]:
        import jax

        with _no_distribution():
            results = self.function(*self.arguments(fixed_ranges))
        return [tuple(result) for result in jax.device_get(results)]


def _local_values(model: keras.Model, variables: Sequence[Any], device: Any) -> list:
    """The variables' values on `device`: under a multi-process distribution, this process's
    replica of each (a global array is not this process's alone to compute with)."""
    import jax

    sharded = [
        v.path
        for v in variables
        if not (v.value.is_fully_addressable or v.value.is_fully_replicated)
    ]
    if sharded:
        raise StepUnavailable(
            f"model '{model.name}' has weights sharded across processes "
            f"({', '.join(sharded[:3])}{', ...' if len(sharded) > 3 else ''}), so process 0, "
            "which logs alone, has no whole copy of them; expected weights replicated on "
            "every process (keras.distribution.DataParallel). Nothing is logged in this fit()."
        )
    return [
        jax.device_put(
            v.value if v.value.is_fully_addressable else v.value.addressable_data(0),
            device,
        )
        for v in variables
    ]


@contextlib.contextmanager
def local_weights(model: keras.Model) -> Iterator[None]:
    """Runs what calls `model` eagerly inside (`tbviz.capture.capture_entries`) the way the
    step runs it: on JAX, with this process's replica of the weights and no distribution,
    so that process 0 can run the model alone (see `_JaxStep`). Nothing on other backends.

    Raises:
        StepUnavailable: JAX weights sharded across processes.
    """
    if keras.backend.backend() != "jax" or all(
        v.value.is_fully_addressable for v in model.variables
    ):
        yield
        return
    import jax

    values = _local_values(model, model.variables, jax.local_devices()[0])
    with (
        _no_distribution(),
        keras.StatelessScope(state_mapping=list(zip(model.variables, values, strict=True))),
    ):
        yield


@contextlib.contextmanager
def _no_distribution() -> Iterator[None]:
    """No ``keras.distribution`` while the step is traced and run: it runs on one device."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(distribution)


# -- PyTorch -------------------------------------------------------------------------


class _TorchStep(Step):
    """The model called eagerly under ``torch.no_grad()`` on its device (Keras' own)."""

    def __call__(self, fixed_ranges: np.ndarray) -> list[LayerResult]:
        import torch

        with torch.no_grad():
            ranges = keras.ops.convert_to_tensor(fixed_ranges)
            results = self._forward(
                lambda: self.model(self.probe, training=False), self.probe, ranges
            )
            # Not keras.ops.convert_to_numpy: with NumPy 2 it warns (np.array on a tensor).
            return [tuple(t.detach().cpu().numpy() for t in result) for result in results]
