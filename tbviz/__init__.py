"""tbviz: watch a Keras model's feature maps learn, epoch by epoch, in TensorBoard."""

from importlib.metadata import PackageNotFoundError, version

from tbviz.activation_logger import ActivationLogger

try:
    __version__ = version("tbviz")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["ActivationLogger"]
