"""`ActivationLogger`'s arguments, checked in one place, each with one default.

Every mistake is a `ValueError` or `TypeError` raised when the logger is made,
naming the argument, what was expected and what was received.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import keras

from tbviz.io import fs
from tbviz.model.selection import LayerSelection
from tbviz.numerics.pictures import PictureOptions

#: Pixels of all pictures of one logged epoch: about 4 to 5 MB of event file for every
#: layer of a ResNet-50 at 8 probes; the 12-layer default at 8 probes stays under it.
DEFAULT_MAX_PIXELS_PER_EPOCH = 3_500_000
DEFAULT_MAX_LAYERS = 12
DEFAULT_MAX_PROBES = 16

# Matplotlib's diverging colour maps: their range is made symmetric around 0.
_DIVERGING = {
    "BrBG", "PRGn", "PiYG", "PuOr", "RdBu", "RdGy", "RdYlBu", "RdYlGn", "Spectral",
    "bwr", "coolwarm", "seismic", "berlin", "managua", "vanimo",
}  # fmt: skip


@dataclass(frozen=True)
class LoggerConfig:
    """What `ActivationLogger` was asked to do, checked (see its docstring for each argument)."""

    log_dir: str
    layers: LayerSelection
    freq: int
    pictures: PictureOptions
    value_range: tuple[float, float] | None
    max_layers: int
    max_pixels_per_epoch: int | None
    stats: bool
    histograms: bool
    health: bool
    max_probes: int
    model: keras.Model | None
    notebook: bool = False

    @classmethod
    def checked(
        cls,
        *,
        log_dir: Any,
        layers: LayerSelection,
        freq: Any,
        normalize: Any,
        clip_percentile: Any,
        value_range: Any,
        cmap: Any,
        max_channels: Any,
        max_size: Any,
        max_layers: Any,
        max_pixels_per_epoch: Any,
        stats: Any,
        histograms: Any,
        health: Any,
        max_probes: Any,
        model: Any,
        notebook: Any = False,
    ) -> LoggerConfig:
        """The config, or the first mistake in the arguments as a `ValueError` or `TypeError`."""
        if model is not None and not isinstance(model, keras.Model):
            raise TypeError(
                "`model` must be a keras.Model (the model to picture, e.g. a GAN's generator). "
                f"Received: model={model!r} of type {type(model).__name__}"
            )
        for name, value in (
            ("stats", stats), ("histograms", histograms), ("health", health), ("notebook", notebook)
        ):  # fmt: skip
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
        if not isinstance(cmap, str):
            raise TypeError(f"`cmap` must be a colour-map name. Received: cmap={cmap!r}")
        if isinstance(clip_percentile, bool) or not isinstance(clip_percentile, (int, float)):
            raise TypeError(
                f"`clip_percentile` must be a number. Received: clip_percentile={clip_percentile!r}"
            )
        if value_range is not None:
            if normalize != "fixed":
                raise ValueError(
                    "`value_range` is only used with normalize='fixed'. "
                    f"Received: value_range={value_range!r}, normalize={normalize!r}"
                )
            try:
                low, high = (float(v) for v in value_range)
            except (TypeError, ValueError):
                low = high = float("nan")
            if not low < high:
                raise ValueError(
                    "`value_range` must be (low, high) with low < high. "
                    f"Received: value_range={value_range!r}"
                )
            value_range = (low, high)
        return cls(
            log_dir=checked_log_dir(log_dir),
            layers=layers,
            freq=positive_int("freq", freq),
            pictures=PictureOptions(
                normalize=normalize,
                clip_percentile=float(clip_percentile),
                cmap=cmap,
                symmetric=cmap.removesuffix("_r") in _DIVERGING,
                max_channels=positive_int("max_channels", max_channels),
                max_size=positive_int("max_size", max_size),
            ),
            value_range=value_range,
            max_layers=positive_int("max_layers", max_layers),
            max_pixels_per_epoch=positive_int(
                "max_pixels_per_epoch", max_pixels_per_epoch, none="no budget"
            ),
            stats=stats,
            histograms=histograms,
            health=health,
            max_probes=positive_int("max_probes", max_probes),
            model=model,
            notebook=notebook,
        )


def positive_int(name: str, value: Any, *, none: str | None = None) -> Any:
    """`value` if it is a positive integer (or None, when `none` says what None means)."""
    if value is None and none is not None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        also = f" or None ({none})" if none else ""
        raise ValueError(f"`{name}` must be a positive integer{also}. Received: {name}={value!r}")
    return value


def checked_log_dir(log_dir: Any) -> str:
    """`log_dir` as a string, refused if it can never be written (checked without creating it)."""
    try:
        path = os.fspath(log_dir)
    except TypeError:
        raise TypeError(
            f"`log_dir` must be a path (str or os.PathLike) or a URL. Received: log_dir={log_dir!r}"
        ) from None
    if isinstance(path, bytes) or not path:
        raise ValueError(f"`log_dir` must be a non-empty path. Received: log_dir={path!r}")
    if fs.is_url(path):
        fs.require(path)  # RemoteUnavailable (a ValueError) names the package to install
        return path
    # Check without creating anything: the writer makes the directories when it first writes.
    existing = os.path.abspath(fs.local_path(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"`log_dir` cannot be created: {existing!r} is a file, not a directory. "
            f"Received: log_dir={path!r}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"`log_dir` is not writable: no write permission on {existing!r}. "
            f"Received: log_dir={path!r}"
        )
    return path

