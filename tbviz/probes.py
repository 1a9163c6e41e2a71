"""The probe batch: made concrete once, checked against the model's inputs, capped.

Plain plumbing between what a user passes as ``probe_images`` and what the
logging step is called with; no pictures are made here.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np


def _as_array(value: Any, name: str) -> np.ndarray:
    array = np.asarray(value)
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
    """Makes the probe batch concrete: arrays, once, so every epoch sees the same samples."""
    if _is_tf_dataset(probe):
        for element in probe.take(1):
            probe = element[0] if isinstance(element, tuple) and len(element) in (2, 3) else element
            break
        else:
            raise ValueError("`probe_images` is an empty tf.data.Dataset; expected at least one batch.")
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


def _is_tf_dataset(value: Any) -> bool:
    """A ``tf.data.Dataset``; asked only if TensorFlow is imported already (it cannot be one else)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, tf.data.Dataset)


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


def match_model_inputs(probe: Any, inputs: list | None, structure: Any = None) -> Any:
    """Checks the probe against the model's inputs; returns it as backend tensors of their dtypes.

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
    if isinstance(probe, dict):
        if isinstance(structure, dict):
            key_of = {id(tensor): key for key, tensor in structure.items()}
            names = [key_of.get(id(t), getattr(t, "name", None)) for t in inputs]
        else:
            names = [getattr(t, "name", None) for t in inputs]
        missing = [n for n in names if n not in probe]
        if missing:
            raise ValueError(
                f"`probe_images` is a dict; expected one array per model input {names}. "
                f"Received keys: {sorted(probe)}"
            )
        pairs = [(probe[n], t, f"[{n!r}]") for n, t in zip(names, inputs, strict=True)]
    else:
        arrays = probe if isinstance(probe, list) else [probe]
        if len(arrays) != len(inputs):
            raise ValueError(
                f"The model has {len(inputs)} inputs; expected `probe_images` to be "
                f"{'one array' if len(inputs) == 1 else f'a list of {len(inputs)} arrays'}. "
                f"Received: {len(arrays)} array(s)"
            )
        pairs = [(a, t, f"[{i}]" if len(inputs) > 1 else "") for i, (a, t) in enumerate(zip(arrays, inputs, strict=True))]
    tensors = []
    for array, spec, name in pairs:
        expected = tuple(spec.shape)[1:]
        received = array.shape[1:]
        if len(expected) != len(received) or any(
            e is not None and e != r for e, r in zip(expected, received, strict=True)
        ):
            raise ValueError(
                f"`probe_images`{name} does not match the model's input "
                f"'{getattr(spec, 'name', '')}': expected shape (N, {', '.join(str(e) for e in expected)}), "
                f"received shape {array.shape}."
            )
        dtype = keras.backend.standardize_dtype(spec.dtype)
        if keras.backend.is_int_dtype(dtype) and array.dtype.kind == "f":
            raise ValueError(
                f"`probe_images`{name} is {array.dtype} but the model's input "
                f"'{getattr(spec, 'name', '')}' takes {dtype}."
            )
        tensors.append(keras.ops.convert_to_tensor(array, dtype=dtype))
    return tensors[0] if len(tensors) == 1 else tensors


def sample_count(probe: Any) -> int:
    """Samples in the probe batch (tensors, a list or a dict of them)."""
    return int(keras.tree.flatten(probe)[0].shape[0])
