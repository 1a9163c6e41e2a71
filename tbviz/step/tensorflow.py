"""The logging step on Keras' TensorFlow backend: a ``tf.function`` traced once.

The model goes on with a layer's output only once the part of its summary
that reads it is done (a control dependency); the rest, done for groups of
layers at once, runs beside the forward pass. A model compiled with
``run_eagerly=True`` is run eagerly, as Keras runs it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tbviz.model.walk import sublayers
from tbviz.numerics.summary import Reduced
from tbviz.step.base import Step


def build_step(*arguments: Any, eager: bool) -> Step:
    """See `tbviz.step.build_step`."""
    return TensorFlowStep(*arguments, eager=eager)


def writes_summaries(model: keras.Model) -> bool:
    """Only the chief of a multi-worker strategy logs (``should_save_summary``)."""
    try:
        return bool(model.distribute_strategy.extended.should_save_summary)
    except AttributeError:
        return True


@contextlib.contextmanager
def local_weights(model: keras.Model) -> Iterator[None]:
    """Nothing to do on TensorFlow: the model runs as it is."""
    yield


class TensorFlowStep(Step):
    """A ``tf.function`` traced once (``reduce_retracing``), or eager for ``run_eagerly`` models.

    Attributes:
        function: the traced step, ``function(probe, fixed_ranges, finite)`` ->
            tensors, traced once for each value of `finite` it is called with; a plain
            Python function when eager.
    """

    def __init__(self, *arguments: Any, eager: bool) -> None:
        super().__init__(*arguments)
        # When no two layers are finished together (a few layers, say the default's on a
        # small CNN), the model waits for each layer's whole summary: there is little to
        # overlap, and its temporaries would add to the forward pass's peak memory.
        inline = len(self.groups) == len(self.selected)
        self._functions: dict[tuple, Any] = {}  # reduce, by kind of layer (see `_reduce`)
        self.sample_first = True  # see `reduce_layer`

        def after(output: Any, reduced: Reduced, finished: tuple | None) -> Any:
            # The model goes on with a layer's output only once the part of its summary
            # that reads it is done, so a layer's full activation is freed as soon as the
            # model is done with it, as in a bare forward pass, instead of every selected
            # activation waiting for the end. What is left to do from there (finishing
            # groups of layers, on small tensors) runs beside the rest of the forward pass.
            if tf.executing_eagerly():
                return output
            waits = tf.nest.flatten(finished if inline and finished is not None else reduced)
            with tf.control_dependencies(waits):
                return tf.nest.map_structure(tf.identity, output)

        def step(probe: Any, fixed_ranges: Any, finite: bool) -> list[tuple]:
            return self._forward(
                lambda: self.model(probe, training=False), probe, fixed_ranges, after, finite=finite
            )

        self.function = step if eager else tf.function(step, reduce_retracing=True, autograph=False)

    def _reduce(self, i: int, output: Any, finite: bool) -> Reduced:
        # Each layer's reduce is a call of a function traced once per kind of layer and
        # kept out of line (TensorFlow's `_noinline`): tracing each of MobileNetV2's 153
        # layers' ops took 3x as long, and the graph optimiser's first run 1.6x as long
        # (5.8 against 3.6 s on a loaded machine), for no faster step.
        if tf.executing_eagerly():
            return super()._reduce(i, output, finite)
        summary = self.summaries[i]
        key = (summary.reduce_key, tuple(output.shape), output.dtype, finite)
        if key not in self._functions:
            self._functions[key] = tf.function(
                lambda x: tuple(summary.reduce(x, finite=finite)),
                input_signature=[tf.TensorSpec(output.shape, output.dtype)],
                autograph=False,
                experimental_attributes={"_noinline": True},
            )
        return Reduced(*self._functions[key](output))

    def _run(self, fixed_ranges: np.ndarray, *, finite: bool) -> list[list[np.ndarray]]:
        results = self.function(self.probe, fixed_ranges, finite)
        return [[t.numpy() for t in group] for group in results]


def explain_failure(model: keras.Model, error: BaseException) -> str | None:
    """What to tell the user when TensorFlow has no kernel for a channels_first layer.

    TensorFlow's own CPU convolutions take channels_last (NHWC) only; channels_first
    (NCHW) ones exist where oneDNN is on, by default only on CPUs with AVX512-VNNI,
    AVX512-BF16, AVX-VNNI or AMX. A model can train without them under XLA
    (``jit_compile=True``), but tbviz's forward pass runs without XLA. None for any
    other error.
    """
    if not isinstance(error, tf.errors.OpError):
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
        for layer in sublayers(model, recursive=True)
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


