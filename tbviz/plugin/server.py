"""The Activations plugin's server side: runs, an index of every logged picture, HTTP routes.

Runs are found under TensorBoard's log directory at any depth: directories
named ``activations`` (where `ActivationLogger` writes) holding event files,
or, when there is none, every directory holding event files with tbviz
pictures. Each run is read with `tbviz.io.RunReader` without keeping the
PNGs in memory, and later only what was appended to it is read (a run still
being written shows its new epochs). A picture request reads its one record
back from the event file.

Routes, under ``/data/plugin/activations``:

    /index.js, /pictures.js, /viewer.js, /style.css
                            the page (static files of this package)
    /runs                   {"runs": [name, ...], "versions": {name: version},
                            "notices": [...]}; a run's version changes
                            whenever something new was read from it; a run
                            with event files but nothing readable is a notice
    /run?run=R              the run as the page draws it
                            (`tbviz.plugin.viewdata.run_answer`)
    /numbers?run=R&layer=L  the layer's numbers at each logged step
                            (`tbviz.plugin.viewdata.layer_numbers`)
    /picture?run=R&layer=L&step=S&sample=K
                            the logged PNG (cacheable: a logged step's picture
                            does not change; the ``v`` parameter the page adds
                            changes when a run gets a new event file)

The difference picture of the compare view is made by the page from the two
logged pictures, the same way in the tab and in the self-contained viewer.

Every parameter is checked against what is logged: an unknown run, layer,
step or sample is a 400 with a message naming what was wrong. Names are only
ever looked up, never joined to a path, so no request reads outside the runs
found.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tbviz.io import fs, runs, tags
from tbviz.io.reader import ImageStep, ReadResult, RunReader, event_files, read_pictures
from tbviz.io.tags import PLUGIN_NAME, epoch_number
from tbviz.plugin import viewdata
from tbviz.plugin.html import STATIC, static_file

logger = logging.getLogger(__name__)

_INTEGER = re.compile(r"[-+]?[0-9]{1,40}")
_PICTURE_CACHE_SECONDS = 365 * 24 * 3600


class _BadRequest(Exception):
    """What was wrong with the request: answered as a 400 with this message."""


@dataclass
class _Index:
    """What one read of a run gives the routes: layers in order, steps by layer."""

    result: ReadResult
    layers: list[str]
    steps: dict[str, dict[int, ImageStep]]
    token: str  # changes when the run gets another event file: in picture URLs, for caches
    version: str  # changes with anything new: the page fetches /run again when it does


@dataclass
class _Run:
    name: str
    path: str
    reader: RunReader
    lock: threading.Lock = field(default_factory=threading.Lock)
    index: _Index | None = None
    # The layers' numbers, read on the first /numbers request: the tab opens without them
    # (on a log of 150 layers x 100 epochs they are 120,000 scalars, a third of the first read).
    numbers: RunReader | None = None


class ActivationsPlugin(base_plugin.TBPlugin):
    """The ACTIVATIONS tab: layers x epochs, one slider for all layers, compare, change heat map."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._logdir = context.logdir or ""
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()  # guards _runs

    # -- TensorBoard's plugin interface ------------------------------------------

    def get_plugin_apps(self):
        routes = {route: self._serve_static for route in STATIC}
        routes.update(
            {
                "/runs": self._serve_runs,
                "/run": self._serve_run,
                "/numbers": self._serve_numbers,
                "/picture": self._serve_picture,
            }
        )
        return {route: _wsgi(handler) for route, handler in routes.items()}

    def is_active(self) -> bool:
        return bool(self._list_runs()[0])

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        # TensorBoard's reload button does not reach the iframe: the page polls on its own.
        return base_plugin.FrontendMetadata(
            es_module_path="/index.js", tab_name="Activations", disable_reload=True
        )

    # -- runs ----------------------------------------------------------------------

    def _discover(self) -> dict[str, str]:
        """Run name -> directory of the candidate runs (see `tbviz.io.runs`); a URL too."""
        if not self._logdir or not (fs.is_url(self._logdir) or os.path.isdir(self._logdir)):
            return {}
        return runs.candidate_runs(self._logdir)

    def _list_runs(self) -> tuple[list[str], list[str]]:
        """The runs with tbviz pictures, brought up to date, and notices about the log directory."""
        notices = []
        if not self._logdir:
            notices.append("TensorBoard was started without --logdir: no runs to show.")
        try:
            found = self._discover()
        except Exception as error:  # noqa: BLE001 -- a URL's server down: show what was read
            notices.append(
                f"Could not list {fs.redact(self._logdir)} "
                f"({fs.scrub(f'{type(error).__name__}: {error}', self._logdir)}); "
                "showing what was read before."
            )
            found = {run.name: run.path for run in self._runs.values()}
        with self._lock:
            for name, path in found.items():
                if name not in self._runs:
                    reader = RunReader(path, pictures=False, kinds=viewdata.ANSWER_KINDS)
                    self._runs[name] = _Run(name, path, reader)
            for name in list(self._runs):
                if name not in found:
                    del self._runs[name]
            runs = list(self._runs.values())
        names = []
        for run in sorted(runs, key=lambda r: r.name):
            index = self._index(run, refresh=True)
            if index.layers:
                names.append(run.name)
            elif index.result.problems:  # event files, and nothing readable in them
                notices.append(
                    f"{run.name}: no readable tbviz pictures; skipped while reading: "
                    + "; ".join(index.result.problems[:3])
                )
        return names, notices

    def _index(self, run: _Run, *, refresh: bool) -> _Index:
        """The run's index; with `refresh`, after reading what is new on disk."""
        with run.lock:
            if run.index is None or refresh:
                try:
                    changed = run.reader.update()
                except Exception:
                    if run.index is None or not fs.is_url(run.path):
                        raise
                    changed = False  # a URL's server did not answer: what was read stands
                if changed or run.index is None:
                    run.index = _make_index(run.reader)
            return run.index

    def _run(self, name: str | None) -> _Run:
        if not name:
            raise _BadRequest("missing parameter 'run'")
        run = self._runs.get(name)
        if run is None or not self._index(run, refresh=False).layers:
            names, _ = self._list_runs()
            run = self._runs.get(name) if name in names else None
            if run is None:
                listing = ", ".join(repr(n) for n in names[:20]) or "none"
                raise _BadRequest(f"unknown run {name!r}; runs with tbviz pictures: {listing}")
        return run

    # -- routes --------------------------------------------------------------------

    def _serve_static(self, request):
        name = request.path.rsplit("/", 1)[-1]
        try:
            content = static_file(name).encode()
        except OSError as error:
            message = f"tbviz activations: {name} is missing from the installed package ({error})"
            return _respond(message, "text/plain", request, code=404)
        return _respond(content, STATIC["/" + name], request)

    def _serve_runs(self, request):
        return _guarded(request, lambda: self._runs_json())

    def _runs_json(self) -> dict:
        names, notices = self._list_runs()
        if not names and not notices:
            notices.append(
                f"No tbviz pictures under {fs.redact(self._logdir)!r} yet: ActivationLogger(log_dir=...) "
                f"writes them to <log_dir>/{tags.RUN_NAME}; they show here as soon as the "
                "first epoch is logged."
            )
        versions = {
            name: self._index(self._runs[name], refresh=False).version
            for name in names
            if name in self._runs
        }
        return {"runs": names, "versions": versions, "notices": notices}

    def _serve_run(self, request):
        return _guarded(request, lambda: self._run_json(request.args.get("run")))

    def _run_json(self, name: str | None) -> dict:
        run = self._run(name)
        index = self._index(run, refresh=True)
        return viewdata.run_answer(
            run.name, index.result, index.layers, index.steps, version=index.version, token=index.token
        )

    def _serve_numbers(self, request):
        def numbers():
            run = self._run(request.args.get("run"))
            index = self._index(run, refresh=False)
            layer = request.args.get("layer")
            if not layer:
                raise _BadRequest("missing parameter 'layer'")
            if layer not in index.steps:
                raise _BadRequest(f"run {run.name!r} has no layer {layer!r}")
            with run.lock:
                if run.numbers is None:
                    run.numbers = RunReader(run.path, pictures=False, kinds=viewdata.NUMBER_KINDS)
                run.numbers.update()
                result = run.numbers.result()
            return viewdata.layer_numbers(result, layer, sorted(index.steps[layer]))

        return _guarded(request, numbers)

    def _serve_picture(self, request):
        def picture():
            args = request.args
            run = self._run(args.get("run"))
            item, tag = self._step(run, args.get("layer"), args.get("step"))
            sample = _sample(args.get("sample"), item)
            return _read(item, tag)[sample]

        return _guarded(request, picture, "image/png", _PICTURE_CACHE_SECONDS)

    def _step(self, run: _Run, layer: str | None, step: str | None) -> tuple[ImageStep, str]:
        index = self._index(run, refresh=False)
        if not layer:
            raise _BadRequest("missing parameter 'layer'")
        if layer not in index.steps:
            raise _BadRequest(f"run {run.name!r} has no layer {layer!r}")
        if step is None or not _INTEGER.fullmatch(step):
            raise _BadRequest(
                f"parameter 'step' must be an integer (a logged step: Keras' epoch index, "
                f"from 0); received {step!r}"
            )
        steps = index.steps[layer]
        if int(step) not in steps:
            first, last = min(steps), max(steps)
            raise _BadRequest(
                f"layer {layer!r} of run {run.name!r} has no logged step {int(step)}; its "
                f"{len(steps)} logged steps run from {first} to {last} (epochs "
                f"{epoch_number(first)} to {epoch_number(last)}, as Keras prints them)"
            )
        return steps[int(step)], tags.tag(tags.IMAGE, layer)


def _wsgi(handler: Callable[[wrappers.Request], wrappers.Response]):
    """A WSGI application (what TensorBoard routes to) answering with ``handler(request)``."""

    def application(environ, start_response):
        return handler(wrappers.Request(environ))(environ, start_response)

    return application


def _make_index(reader: RunReader) -> _Index:
    result = reader.result()
    layers = runs.layer_order(result)
    steps = {
        layer: {item.step: item for item in result.images[tags.tag(tags.IMAGE, layer)]}
        for layer in layers
    }
    # Changes when a run gets another event file (a resumed run may log a step again).
    token = hashlib.sha1(
        "\n".join(os.path.basename(p) for p in event_files(reader.run_dir)).encode()
    ).hexdigest()[:12]
    items = sum(map(len, result.images.values())) + sum(map(len, result.scalars.values()))
    items += sum(map(len, result.health.values()))
    return _Index(result, layers, steps, token, f"{token}.{items}.{len(result.problems)}")


def _sample(sample: str | None, item: ImageStep) -> int:
    if sample is None or not _INTEGER.fullmatch(sample):
        raise _BadRequest(
            f"parameter 'sample' must be an integer (a probe image); received {sample!r}"
        )
    value = int(sample)
    if not 0 <= value < item.count:
        raise _BadRequest(
            f"no probe image {value} at step {item.step} (epoch {epoch_number(item.step)}): "
            f"there are {item.count} "
            f"(0 to {item.count - 1})"
        )
    return value


def _read(item: ImageStep, tag: str) -> list[bytes]:
    pictures = read_pictures(item, tag)
    if len(pictures) != item.count:
        raise OSError(f"the record of epoch {item.step} changed on disk")
    return pictures


def _guarded(request, make, content_type: str = "application/json", cache_seconds: int = 0):
    """Answers with ``make()``; a bad request is a 400, any failure a message, never a trace."""
    try:
        content = make()
    except _BadRequest as error:
        return _respond(f"tbviz activations: {error}", "text/plain", request, code=400)
    except OSError as error:
        return _respond(
            f"tbviz activations: the picture is no longer readable ({error}); reload the page",
            "text/plain", request, code=404,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 -- never a traceback to the browser
        logger.exception("tbviz activations: %s failed", request.path)
        return _respond(
            f"tbviz activations: internal error ({type(error).__name__}: {error})",
            "text/plain", request, code=500,
        )  # fmt: skip
    if content_type == "application/json":
        content = json.dumps(content, allow_nan=False)
    return _respond(content, content_type, request, expires=cache_seconds)


def _respond(content, content_type: str, request, *, code: int = 200, expires: int = 0):
    from tensorboard.backend import http_util

    return http_util.Respond(request, content, content_type, code=code, expires=expires)
