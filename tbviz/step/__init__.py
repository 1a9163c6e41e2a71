"""The logging step: one forward pass of the probe batch, every selected layer summarised.

One interface, one module per Keras backend, chosen once from
``keras.backend.backend()`` as Keras chooses its own backend modules:
`tbviz.step.tensorflow`, `tbviz.step.jax`, `tbviz.step.torch`. Nothing else in
tbviz imports ``tensorflow``, ``jax`` or ``torch``. The step itself is the
same on every backend (`tbviz.step.base.Step._forward`); a backend's module
says how it is compiled and run, each the way its own Keras trainer runs a
step:

- TensorFlow: a ``tf.function`` (or eagerly for a model compiled with
  ``run_eagerly=True``); the model goes on with a layer's output only once
  the part of its summary that reads it is done.
- JAX: one ``jax.jit`` of a pure function of the weights, the probe and the
  fixed ranges that calls ``model.stateless_call``; the weights are arguments
  on every call, so it compiles once and never goes stale.
- PyTorch: the model called eagerly under ``torch.no_grad()``.

Besides the step, each backend says which process logs under distributed
training (`writes_summaries`), how the model is run eagerly outside the step
(`local_weights`), and what a backend-specific failure means
(`explain_failure`).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import keras

from tbviz.model.walk import LayerEntry
from tbviz.numerics.summary import LayerSummary
from tbviz.step.base import LayerResult, Step, StepUnavailable

__all__ = [
    "LayerResult",
    "Step",
    "StepUnavailable",
    "build_step",
    "explain_failure",
    "local_weights",
    "writes_summaries",
]

BACKENDS = ("tensorflow", "jax", "torch")
_BACKEND = keras.backend.backend()
_module: Any = importlib.import_module(f"tbviz.step.{_BACKEND}") if _BACKEND in BACKENDS else None


def build_step(
    model: keras.Model,
    probe: Any,
    selected: Sequence[LayerEntry],
    summaries: Sequence[LayerSummary],
    expected_calls: dict[int, int],
    *,
    eager: bool = False,
) -> Step:
    """The step for the current Keras backend (see `tbviz.step.base.Step` for the arguments).

    `eager`: run without compiling, for a model compiled with
    ``run_eagerly=True`` (which may not be traceable). Defaults to `False`.

    Raises:
        StepUnavailable: the step cannot run here (another Keras backend; JAX
            weights sharded across processes).
    """
    if _module is None:
        raise StepUnavailable(
            f"tbviz runs on the tensorflow, jax and torch backends of Keras; expected one of "
            f"them. Received: keras.backend.backend()={_BACKEND!r}"
        )
    return _module.build_step(model, probe, selected, summaries, expected_calls, eager=eager)


def writes_summaries(model: keras.Model) -> bool:
    """Whether this process logs: under distributed training only one process writes
    (TensorFlow: the strategy's chief; JAX: process 0; PyTorch: rank 0)."""
    return True if _module is None else _module.writes_summaries(model)


def local_weights(model: keras.Model) -> AbstractContextManager[None]:
    """A context in which `model` can be called eagerly as the step calls it (on JAX across
    processes: with this process's replica of the weights).

    Raises:
        StepUnavailable: JAX weights sharded across processes.
    """
    return contextlib.nullcontext() if _module is None else _module.local_weights(model)


def explain_failure(model: keras.Model, error: BaseException) -> str | None:
    """What to tell the user when `error` means the step can never run in this process
    (TensorFlow without a channels_first kernel on this CPU); None for any other error."""
    return None if _module is None else _module.explain_failure(model, error)
