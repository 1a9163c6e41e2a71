"""tbviz: watch a Keras model's feature maps learn, epoch by epoch, in TensorBoard."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

from tbviz._warnings import LayerHealthWarning, TbvizWarning

try:
    __version__ = version("tbviz")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["ActivationLogger", "LayerHealthWarning", "TbvizWarning", "show"]

#: Keras' backends: each is also the name of its package and of tbviz's install extra.
_BACKENDS = ("tensorflow", "jax", "torch")


def __getattr__(name: str):
    # Imported on first use, so that `tbviz export` and `tbviz board` never load Keras
    # (and `import tbviz` no viewer).
    if name == "show":
        from tbviz.plugin.notebook import show

        return show
    if name == "ActivationLogger":
        try:
            from tbviz.callback import ActivationLogger
        except ModuleNotFoundError as error:
            explained = _missing_backend(error)
            if explained is None:
                raise
            raise explained from error
        return ActivationLogger
    raise AttributeError(f"module 'tbviz' has no attribute {name!r}")


def _missing_backend(error: ModuleNotFoundError) -> ModuleNotFoundError | None:
    """The error to raise when importing Keras failed because its backend is not installed.

    ``import keras`` raises ``ModuleNotFoundError: No module named 'tensorflow'``
    (or ``'jax'``, ``'torch'``) when the package of its backend is missing:
    TensorFlow unless ``KERAS_BACKEND`` or ``keras.json`` says otherwise. This
    says what to install instead. Returns `None` when `error` is about another
    module (which includes another backend's package than ``KERAS_BACKEND``'s).
    """
    missing = (error.name or "").partition(".")[0]
    chosen = os.environ.get("KERAS_BACKEND")
    if missing not in _BACKENDS or (chosen and missing != chosen):
        return None  # not the backend's package: the error says it as it is
    setting = (
        f"KERAS_BACKEND={chosen}"
        if chosen
        else "KERAS_BACKEND is not set, so Keras takes the backend from ~/.keras/keras.json, "
        "else tensorflow"
    )
    return ModuleNotFoundError(
        f"tbviz needs Keras with its backend installed, and the backend's package {missing!r} "
        f"is not installed ({setting}). Install one backend: pip install 'tbviz[tensorflow]' "
        "(the default backend), or pip install 'tbviz[jax]' and set KERAS_BACKEND=jax, or "
        "pip install 'tbviz[torch]' and set KERAS_BACKEND=torch. "
        f"Received: ModuleNotFoundError: {error}",
        name=error.name,
    )
