"""The logging step on Keras' PyTorch backend: the model called eagerly under ``torch.no_grad()``.

Every selected layer's summary runs as the layer returns, on the model's
device (Keras' own); only the small results are copied to the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import torch
import torch.distributed

from tbviz.step.base import Step


def build_step(*arguments: Any, eager: bool) -> Step:
    """See `tbviz.step.build_step`; PyTorch's step is always eager."""
    return TorchStep(*arguments)


def writes_summaries(model: keras.Model) -> bool:
    """Rank 0 logs when ``torch.distributed`` is initialised."""
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )


@contextlib.contextmanager
def local_weights(model: keras.Model) -> Iterator[None]:
    """Nothing to do on PyTorch: the model runs as it is."""
    yield


def explain_failure(model: keras.Model, error: BaseException) -> str | None:
    """No PyTorch failure means the step can never run; each epoch tries again."""
    return None


class TorchStep(Step):
    """The model called eagerly under ``torch.no_grad()`` on its device (Keras' own)."""

    def __init__(self, *arguments: Any) -> None:
        super().__init__(*arguments)
        self.sample_first = True  # see `tbviz.numerics.summary.reduce_layer`

    def _run(self, fixed_ranges: np.ndarray, *, finite: bool) -> list[list[np.ndarray]]:
        with torch.no_grad():
            ranges = keras.ops.convert_to_tensor(fixed_ranges)
            results = self._forward(
                lambda: self.model(self.probe, training=False), self.probe, ranges, finite=finite
            )
            # Not keras.ops.convert_to_numpy: with NumPy 2 it warns (np.array on a tensor).
            return [[t.detach().cpu().numpy() for t in group] for group in results]
