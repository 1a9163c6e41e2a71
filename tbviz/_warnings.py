"""tbviz's warning classes, importable without Keras (to filter them: ``warnings.filterwarnings``)."""

from __future__ import annotations

import warnings


class TbvizWarning(RuntimeWarning):
    """Something tbviz could not do or wants the user to know while training goes on."""


class LayerHealthWarning(TbvizWarning):
    """A layer's health finding begins: dead, saturated, exploding, vanishing, NaN/Inf."""


def warn(message: str, category: type[Warning] = TbvizWarning, stacklevel: int = 3) -> None:
    """Warns as the logger does: ``tbviz.ActivationLogger: <message>``."""
    warnings.warn(f"tbviz.ActivationLogger: {message}", category, stacklevel=stacklevel)
