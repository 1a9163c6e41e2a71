"""The viewer in a notebook: `show` (a log directory, once) and `LiveView` (a run while it trains).

Both display the self-contained viewer of `tbviz.plugin.html` as an HTML
output: no server, no network, and it stays in the saved notebook, working
with no kernel. The live view is one output under the training cell,
replaced in place at each logged epoch through an IPython display handle
(``display(obj, display_id=True)``), not one output per epoch. Outside a
notebook (no IPython kernel) the live view does nothing and `show` warns.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

from tbviz._warnings import TbvizWarning
from tbviz.io import fs
from tbviz.io.reader import RunReader
from tbviz.plugin import html, logs, viewdata


def in_notebook() -> bool:
    """Whether this runs in an IPython kernel (Jupyter, Colab, VS Code...), which shows HTML."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show(
    log_dir: str | os.PathLike,
    *,
    run: str | None = None,
    layers: str | Sequence[str] | None = None,
    probes: Sequence[int] | None = None,
    max_bytes: int | None = html.NOTEBOOK_MAX_BYTES,
) -> None:
    """Shows the logged feature maps of `log_dir` in the notebook: the ACTIVATIONS tab's viewer.

    Layers x epochs, one slider with play for all layers, enlarge, compare
    (two epochs or two runs, with their difference) and the change heat map,
    as one self-contained HTML output: the pictures are embedded, nothing is
    served, and the output keeps working in the saved notebook with no kernel.

    Args:
        log_dir: the directory given to `ActivationLogger` (or any log
            directory holding its runs).
        run: show only this run (its name as TensorBoard gives it, e.g.
            ``"activations"`` or ``"exp1/activations"``). Defaults to `None`:
            every run with tbviz pictures.
        layers: a glob pattern or a list of them (``"conv*"``): only the
            layers matching one. Defaults to `None`: every logged layer.
        probes: the probe images to hold (their indices). Defaults to
            `None`: every one logged.
        max_bytes: about how many bytes of pictures the output may hold; past
            it the viewer holds fewer probe images, then fewer epochs, then
            fewer layers, and says so. None: everything. Defaults to
            `10_000_000`.

    Raises:
        ValueError: `log_dir` holds no tbviz pictures, or `run`, `layers` or
            `probes` name nothing logged (the message lists what is).
    """
    path = os.fspath(log_dir)
    patterns = [layers] if isinstance(layers, str) else layers
    runs, problems = logs.load_runs(path, run, pictures=False, kinds=viewdata.KINDS)
    chosen = {r.name: logs.select_layers(r, patterns, option="layers=") for r in runs}
    data = html.viewer(runs, chosen, title=fs.redact(path), probes=probes, max_bytes=_budget(max_bytes))
    _display(html.fragment(data))


class LiveView:
    """One viewer under the running cell, replaced in place each time `update` is called.

    Made by `ActivationLogger(..., notebook=True)` with the run directory it
    writes; `update` after each written epoch reads what is new there and
    shows every epoch so far. The last update stays in the output when
    training ends.
    """

    def __init__(self, run_dir: str, *, max_bytes: int | None = html.NOTEBOOK_MAX_BYTES) -> None:
        self.run_dir = run_dir
        self._reader = RunReader(run_dir, pictures=False, kinds=viewdata.KINDS)
        self._cache = html.PictureCache()
        self._max_bytes = max_bytes
        self._key = "live-" + uuid.uuid4().hex[:12]  # the viewer's state survives each update
        self._handle: Any = None

    @classmethod
    def start(cls, run_dir: str) -> LiveView | None:
        """A live view of `run_dir`, or None outside a notebook."""
        return cls(run_dir) if in_notebook() else None

    def update(self) -> None:
        """Shows the run as it is on disk now."""
        self._reader.update()
        result = self._reader.result()
        if not result.images:
            return
        run = logs.Run(os.path.basename(self.run_dir.rstrip("/\\")) or "run", self.run_dir, result)
        data = html.viewer(
            [run], title=fs.redact(self.run_dir), max_bytes=self._max_bytes, cache=self._cache
        )
        output = _html(html.fragment(data, key=self._key))
        if self._handle is None:
            from IPython.display import display

            self._handle = display(output, display_id=True)
        else:
            self._handle.update(output)


def _budget(max_bytes: Any) -> int | None:
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(
            f"`max_bytes` must be a positive integer or None (no limit). Received: max_bytes={max_bytes!r}"
        )
    return max_bytes


def _html(text: str) -> Any:
    from IPython.display import HTML

    return HTML(text)


def _display(text: str) -> None:
    if not in_notebook():
        warnings.warn(
            "tbviz.show displays the viewer in a notebook (an IPython kernel: Jupyter, Colab, "
            "VS Code); there is none here. Write it to a file instead: tbviz export LOGDIR "
            "--html report.html",
            TbvizWarning,
            stacklevel=3,
        )
        return
    from IPython.display import display

    display(_html(text))
