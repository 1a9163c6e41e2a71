"""tbviz: watch a Keras model's feature maps learn, epoch by epoch, in TensorBoard."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tbviz")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["ActivationLogger"]


def __getattr__(name: str):
    # Imported on first use, so that `tbviz export` and `tbviz board` never load TensorFlow.
    if name == "ActivationLogger":
        from tbviz.activation_logger import ActivationLogger

        return ActivationLogger
    raise AttributeError(f"module 'tbviz' has no attribute {name!r}")
