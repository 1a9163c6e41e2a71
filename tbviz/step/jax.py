"""The logging step on Keras' JAX backend: one ``jax.jit`` of ``stateless_call`` with the taps.

The weights are arguments on every call (closed-over weights would be baked
into the compiled step as constants and go stale) and the jitted function is
kept, so it compiles once. Under a multi-process ``keras.distribution`` the
step runs on process 0 alone, on its own device, with its local copy of the
replicated weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import keras
import numpy as np

from tbviz.step.base import Step, StepUnavailable, call_arguments


def build_step(*arguments: Any, eager: bool) -> Step:
    """See `tbviz.step.build_step`."""
    return JaxStep(*arguments, eager=eager)


def writes_summaries(model: keras.Model) -> bool:
    """Process 0 logs."""
    return jax.process_index() == 0


def explain_failure(model: keras.Model, error: BaseException) -> str | None:
    """No JAX failure means the step can never run; each epoch tries again."""
    return None


class JaxStep(Step):
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
            fixed_ranges, finite=...)`` -> arrays on the device; not jitted for a model
            compiled with ``run_eagerly=True``, as Keras' own step is not.
    """

    def __init__(self, *arguments: Any, eager: bool) -> None:
        super().__init__(*arguments)
        self._device = jax.local_devices()[0]
        _local_values(self.model, self.model.variables, self._device)  # StepUnavailable now
        self.probe = jax.device_put(self.probe, self._device)
        kwargs = call_arguments(self.model)

        def step(
            trainable: list, non_trainable: list, probe: Any, fixed_ranges: Any, finite: bool
        ) -> list:
            def call_model() -> Any:
                return self.model.stateless_call(trainable, non_trainable, probe, **kwargs)

            with _no_distribution():
                return self._forward(call_model, probe, fixed_ranges, finite=finite)

        self.function: Any = step if eager else jax.jit(step, static_argnames="finite")

    def arguments(self, fixed_ranges: np.ndarray) -> tuple:
        """What `function` is called with: the weights' current values, the probe, the ranges."""
        return (
            _local_values(self.model, self.model.trainable_variables, self._device),
            _local_values(self.model, self.model.non_trainable_variables, self._device),
            self.probe,
            jax.device_put(fixed_ranges, self._device),
        )

    def _run(self, fixed_ranges: np.ndarray, *, finite: bool) -> list[list[np.ndarray]]:
        with _no_distribution():
            results = self.function(*self.arguments(fixed_ranges), finite=finite)
        return jax.device_get(results)


def _local_values(model: keras.Model, variables: Sequence[Any], device: Any) -> list:
    """The variables' values on `device`: under a multi-process distribution, this process's
    replica of each (a global array is not this process's alone to compute with)."""
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
    """Runs what calls `model` eagerly inside (`tbviz.model.capture.capture_entries`) the way
    the step runs it: with this process's replica of the weights and no distribution, so
    that process 0 can run the model alone (see `JaxStep`).

    Raises:
        StepUnavailable: weights sharded across processes.
    """
    if all(v.value.is_fully_addressable for v in model.variables):
        yield
        return

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


