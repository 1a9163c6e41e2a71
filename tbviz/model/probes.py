"""The probe batch: made concrete once, checked against the model's inputs, capped.

Plain plumbing between what a user passes as ``probe_images`` and what the
logging step is called with; no pictures are made here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np


def _as_array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, RuntimeError, ValueError):  # a tensor on an accelerator
        array = np.asarray(keras.ops.convert_to_numpy(value))
    if array.dtype.kind not in "iuf":
        raise ValueError(
            f"`probe_images`{name} must be numeric (integer or float). "
            f"Received: dtype={array.dtype}"
        )
    if array.ndim < 2:
        raise ValueError(
            f"`probe_images`{name} must be a batch (N, ...) of at least rank 2. "
            f"Received: shape={array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError(
            f"`probe_images`{name} is empty; expected at least one sample. "
            f"Received: shape={array.shape}"
        )
    return array


def as_probe(probe: Any) -> np.ndarray | list[np.ndarray] | dict[str, np.ndarray]:
    """Makes the probe batch concrete: arrays, once, so every epoch sees the same samples.

    Takes what Keras' ``fit`` takes as ``x``: an array or tensor of any
    backend, a list or dict of them, or something that yields batches (a
    ``tf.data.Dataset``, a ``keras.utils.PyDataset``, a PyTorch
    ``DataLoader``, a generator), whose first batch is taken, its ``x``
    for ``(x, y)`` and ``(x, y, sample_weight)`` elements.
    """
    if _yields_batches(probe):
        probe = _first_batch(probe)
    arrays: dict[str, np.ndarray] | list[np.ndarray]
    if isinstance(probe, Mapping):
        arrays = {k: _as_array(v, f"[{k!r}]") for k, v in probe.items()}
    elif isinstance(probe, (list, tuple)) and len(probe) and not np.isscalar(probe[0]) and np.ndim(probe[0]) >= 2:
        arrays = [_as_array(v, f"[{i}]") for i, v in enumerate(probe)]
    else:
        return _as_array(probe, "")
    sizes = {a.shape[0] for a in (arrays.values() if isinstance(arrays, dict) else arrays)}
    if len(sizes) != 1:
        raise ValueError(
            f"All `probe_images` arrays must have the same number of samples. Received: {sorted(sizes)}"
        )
    return arrays


def _yields_batches(value: Any) -> bool:
    """A data source rather than data: a dataset, a data loader, a generator or iterator."""
    if isinstance(value, keras.utils.PyDataset) or isinstance(value, Iterator):
        return True
    return any(
        cls.__name__ in ("DatasetV2", "DistributedDataset", "DataLoader")
        and cls.__module__.startswith(("tensorflow.", "torch."))
        for cls in type(value).__mro__
    )  # recognised by name, as Keras' data adapters do: nothing is imported for it


def _first_batch(source: Any) -> Any:
    kind = type(source).__name__
    try:
        batch = source[0] if isinstance(source, keras.utils.PyDataset) else next(iter(source))
    except (StopIteration, IndexError):
        raise ValueError(
            f"`probe_images` is an empty {kind}; expected at least one batch."
        ) from None
    if isinstance(batch, tuple) and len(batch) in (2, 3):  # (x, y) or (x, y, sample_weight)
        return batch[0]
    return batch


def capped(probe: Any, max_probes: int) -> Any:
    """The probe cut to its first `max_probes` samples, with a warning if that cuts anything."""
    arrays = probe.values() if isinstance(probe, dict) else probe if isinstance(probe, list) else [probe]
    count = next(iter(arrays)).shape[0]
    if count <= max_probes:
        return probe
    warnings.warn(
        f"tbviz.ActivationLogger: `probe_images` has {count} samples; only the first "
        f"{max_probes} are pictured (max_probes={max_probes}), one picture per sample, layer "
        f"and epoch. Pass a few images (2-8 are plenty), or max_probes={count} to picture all.",
        UserWarning,
        stacklevel=3,
    )
    if isinstance(probe, dict):
        return {key: value[:max_probes] for key, value in probe.items()}
    if isinstance(probe, list):
        return [value[:max_probes] for value in probe]
    return probe[:max_probes]


def input_name(tensor: Any) -> str:
    """The name a user knows a model input by: its ``Input`` layer's (``"input_layer"``,
    or the ``name=`` it was given), not its symbolic tensor's (``"keras_tensor_9"``)."""
    history = getattr(tensor, "_keras_history", None)
    layer = getattr(history, "operation", None)
    return getattr(layer, "name", None) or getattr(tensor, "name", "") or "input"


def adjust_rank(array: np.ndarray, expected: tuple) -> np.ndarray:
    """`array` made to match an input of shape `expected` (batch axis included) as Keras does
    (``Functional._adjust_input_rank``): a missing last axis of size 1 is added, an extra
    one removed; otherwise `array` itself."""
    if array.ndim == len(expected) - 1 and expected[-1] == 1:
        return array[..., np.newaxis]
    if array.ndim == len(expected) + 1 and array.shape[-1] == 1:
        return array[..., 0]
    return array


def match_model_inputs(probe: Any, inputs: list | None, structure: Any = None) -> Any:
    """Checks the probe against the model's inputs; returns it as backend tensors of their dtypes.

    What Keras accepts is accepted: an array whose rank is one less than the
    input's, when the input's last axis is 1, gets that axis (``(N, 28, 28)``
    for ``Input((28, 28, 1))``), and one more, of size 1, loses it.

    Args:
        probe: what `as_probe` made: an array, a list or a dict of arrays.
        inputs: the model's symbolic inputs (``model.inputs``), or None for a
            subclassed model: then the probe keeps its structure, as tensors.
        structure: the model's input structure (``model.input``); when it is a
            dict, a dict probe is keyed like it (else by the inputs' names).

    Returns:
        One tensor for a model with one input, else a list in the order of `inputs`.
    """
    if inputs is None:
        return keras.tree.map_structure(keras.ops.convert_to_tensor, probe)
    names = [input_name(t) for t in inputs]
    if isinstance(probe, dict):
        if isinstance(structure, dict):
            key_of = {id(tensor): key for key, tensor in structure.items()}
            keys = [key_of.get(id(t), n) for t, n in zip(inputs, names, strict=True)]
        else:  # by the Input's name, or its tensor's
            keys = [n if n in probe else getattr(t, "name", n) for t, n in zip(inputs, names, strict=True)]
        missing = [k for k in keys if k not in probe]
        if missing:
            raise ValueError(
                f"`probe_images` is a dict; expected one array per model input {keys}. "
                f"Received keys: {sorted(probe)}"
            )
        pairs = [(probe[k], t, n, f"[{k!r}]") for k, t, n in zip(keys, inputs, names, strict=True)]
    else:
        arrays = probe if isinstance(probe, list) else [probe]
        if len(arrays) != len(inputs):
            raise ValueError(
                f"The model has {len(inputs)} inputs; expected `probe_images` to be "
                f"{'one array' if len(inputs) == 1 else f'a list of {len(inputs)} arrays'}. "
                f"Received: {len(arrays)} array(s)"
            )
        pairs = [
            (a, t, n, f"[{i}]" if len(inputs) > 1 else "")
            for i, (a, t, n) in enumerate(zip(arrays, inputs, names, strict=True))
        ]
    tensors = []
    for given, spec, input_layer, where in pairs:
        expected = tuple(spec.shape)
        array = adjust_rank(given, expected)
        received = array.shape[1:]
        if len(expected) - 1 != len(received) or any(
            e is not None and e != r for e, r in zip(expected[1:], received, strict=True)
        ):
            raise ValueError(
                f"`probe_images`{where} does not match the model's input '{input_layer}': "
                f"expected shape (N, {', '.join(str(e) for e in expected[1:])}), "
                f"received shape {given.shape}."
            )
        dtype = keras.backend.standardize_dtype(spec.dtype)
        if keras.backend.is_int_dtype(dtype) and array.dtype.kind == "f":
            raise ValueError(
                f"`probe_images`{where} is {given.dtype} but the model's input "
                f"'{input_layer}' takes {dtype}."
            )
        tensors.append(keras.ops.convert_to_tensor(array, dtype=dtype))
    return tensors[0] if len(tensors) == 1 else tensors


def sample_count(probe: Any) -> int:
    """Samples in the probe batch (tensors, a list or a dict of them)."""
    return int(keras.tree.flatten(probe)[0].shape[0])
