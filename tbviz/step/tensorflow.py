"""The logging step on Keras' TensorFlow backend: a ``tf.function`` traced once.

The model goes on with a layer's output only once the part of its summary
that reads it is done (a control dependency); the rest runs beside the
forward pass. When output shapes repeat, each part is a call of a
non-inlined function traced once per kind of layer (`_function`). A model
compiled with ``run_eagerly=True`` is run eagerly, as Keras runs it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tbviz.model.walk import sublayers
from tbviz.numerics.summary import Reduced
from tbviz.step.base import LayerResult, Step


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
        function: the traced step, ``function(probe, fixed_ranges)`` -> tensors;
            a plain Python function when eager.
    """

    def __init__(self, *arguments: Any, eager: bool) -> None:
        super().__init__(*arguments)
        # In the traced step, when layers share an output shape, layout and options, each
        # layer's two parts are calls of two functions traced once per (summary, dtype),
        # see `_function`. When none do (a few layers, say the default's on a small CNN),
        # they are inline: the functions' runtime would only add memory (about 2 MB).
        inline = eager or len(set(self.summaries)) == len(self.selected)
        functions: dict[tuple, Any] = {}

        def reduce(i: int, output: Any) -> Reduced:
            summary = self.summaries[i]
            if inline:
                return summary.reduce(output)
            key = ("reduce", summary, output.dtype)
            if key not in functions:
                functions[key] = _function(summary.reduce, output)
            return Reduced(*functions[key](output))

        def finish(i: int, reduced: Reduced, fixed_range: Any) -> tuple:
            summary = self.summaries[i]
            if inline:
                return summary.finish(reduced, fixed_range)
            # One function for all layers whose maps are alike: the statistics' sample
            # may have any length (it differs from layer to layer).
            key = ("finish", summary.finish_kind, tuple(reduced.maps.shape))
            if key not in functions:

                def finish_summary(*tensors: Any) -> tuple:  # the Reduced fields, the range
                    return summary.finish(Reduced(*tensors[:-1]), tensors[-1])

                functions[key] = _function(
                    finish_summary,
                    reduced.maps,
                    tf.TensorSpec([None], reduced.sample.dtype),
                    reduced.nonfinite,
                    reduced.constant,
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


