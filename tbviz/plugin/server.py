"""The Activations plugin's server side: runs, an index of every logged picture, HTTP routes.

Runs are found under TensorBoard's log directory at any depth: directories
named ``activations`` (where `ActivationLogger` writes) holding event files,
or, when there is none, every directory holding event files with tbviz
pictures. Each run is read with `tbviz.io.RunReader` without keeping the
PNGs in memory, and later only what was appended to it is read (a run still
being written shows its new epochs). A picture request reads its one record
back from the event file.

Routes, under ``/data/plugin/activations``:

    /index.js, /style.css   the page (static files of this package)
    /runs                   {"runs": [name, ...], "versions": {name: version},
                            "notices": [...]}; a run's version changes
                            whenever something new was read from it
    /run?run=R              the run's layers in model order, each with its
                            logged steps, picture count and size, its
                            ``change/<layer>`` values (one per step, null
                            where there is none), how it was normalised and
                            the health findings holding at each step; the
                            run's findings (`tbviz.io.reader.Judged`);
                            notices (damaged files, what was skipped)
    /picture?run=R&layer=L&step=S&sample=K
                            the logged PNG (cacheable: a logged step's picture
                            does not change; the ``v`` parameter the page adds
                            changes when a run gets a new event file)
    /difference?run=R&layer=L&step=S&sample=K&run_b=R2&step_b=S2
                            the difference picture B - A (`difference`)

Every parameter is checked against what is logged: an unknown run, layer,
step or sample is a 400 with a message naming what was wrong. Names are only
ever looked up, never joined to a path, so no request reads outside the runs
found.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tbviz.io import fs, runs, tags
from tbviz.io.reader import ImageStep, ReadResult, RunReader, event_files, read_pictures
from tbviz.io.tags import PLUGIN_NAME
from tbviz.plugin.difference import PictureMismatch, difference_png
from tbviz.plugin.heat import HeatScale, hex_colour, ramp

logger = logging.getLogger(__name__)

_STATIC = {"/index.js": "text/javascript", "/style.css": "text/css"}
_INTEGER = re.compile(r"[-+]?[0-9]{1,40}")
_PICTURE_CACHE_SECONDS = 365 * 24 * 3600
_KINDS = (tags.IMAGE, tags.CHANGE, tags.LAYER, tags.HEALTH)  # what the tab shows


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


class ActivationsPlugin(base_plugin.TBPlugin):
    """The ACTIVATIONS tab: layers x epochs, one slider for all layers, compare, change heat map."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._logdir = context.logdir or ""
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()  # guards _runs

    # -- TensorBoard's plugin interface ------------------------------------------

    def get_plugin_apps(self):
        routes = {route: self._serve_static for route in _STATIC}
        routes.update(
            {
                "/runs": self._serve_runs,
                "/run": self._serve_run,
                "/picture": self._serve_picture,
                "/difference": self._serve_difference,
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
                    reader = RunReader(path, pictures=False, kinds=_KINDS)
                    self._runs[name] = _Run(name, path, reader)
            for name in list(self._runs):
                if name not in found:
                    del self._runs[name]
            runs = list(self._runs.values())
        names = [run.name for run in runs if self._index(run, refresh=True).layers]
        return sorted(names), notices

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
            content = (resources.files(__package__) / "static" / name).read_bytes()
        except OSError as error:
            message = f"tbviz activations: {name} is missing from the installed package ({error})"
            return _respond(message, "text/plain", request, code=404)
        return _respond(content, _STATIC["/" + name], request)

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
        result = index.result
        layers = []
        heat = HeatScale.of(
            value
            for layer in index.layers
            for _, value in result.scalars.get(tags.tag(tags.CHANGE, layer), [])
        )
        for layer in index.layers:
            tag = tags.tag(tags.IMAGE, layer)
            steps = index.steps[layer]
            last = steps[max(steps)]
            description = result.descriptions.get(tag, "")
            info = result.info(layer)
            changes = dict(result.scalars.get(tags.tag(tags.CHANGE, layer), []))
            health = dict(result.health.get(layer, []))
            layers.append(
                {
                    "name": layer,
                    "steps": sorted(steps),
                    "samples": max(item.count for item in steps.values()),
                    "width": last.width,
                    "height": last.height,
                    "description": description,
                    "normalize": info.normalize if info else None,
                    "info": dataclasses.asdict(info) if info else None,
                    "change": [_number(changes.get(step)) for step in sorted(steps)],
                    "change_colour": [
                        hex_colour(heat.colour(changes.get(step))) for step in sorted(steps)
                    ],
                    # the findings that hold at each step: [{"kind", "severity"}, ...]
                    "health": [
                        [{"kind": f.kind, "severity": f.severity} for f in health.get(step, [])]
                        for step in sorted(steps)
                    ],
                }
            )
        all_steps = sorted({step for layer in index.steps.values() for step in layer})
        return {
            "run": run.name,
            "version": index.version,
            "token": index.token,
            "steps": all_steps,
            "layers": layers,
            "change_scale": {"low": heat.low, "high": heat.high, "ramp": ramp()},
            "coarse_size": tags.COARSE_SIZE,
            "judged": bool(result.health),
            "findings": [judged.to_dict(run.name) for judged in result.findings()],
            "notices": [f"Skipped while reading: {p}" for p in result.problems],
        }

    def _serve_picture(self, request):
        def picture():
            args = request.args
            run = self._run(args.get("run"))
            item, tag = self._step(run, args.get("layer"), args.get("step"))
            sample = _sample(args.get("sample"), item)
            return _read(item, tag)[sample]

        return _guarded(request, picture, "image/png", _PICTURE_CACHE_SECONDS)

    def _serve_difference(self, request):
        def difference():
            args = request.args
            run_a = self._run(args.get("run"))
            run_b = self._run(args.get("run_b") or args.get("run"))
            layer = args.get("layer")
            item_a, tag = self._step(run_a, layer, args.get("step"))
            item_b, _ = self._step(run_b, layer, args.get("step_b"), what="step_b")
            sample = args.get("sample")
            png_a = _read(item_a, tag)[_sample(sample, item_a)]
            png_b = _read(item_b, tag)[_sample(sample, item_b)]
            try:
                return difference_png(png_a, png_b)[0]
            except PictureMismatch as error:
                raise _BadRequest(f"cannot compare layer {layer!r}: {error}") from None

        return _guarded(request, difference, "image/png", _PICTURE_CACHE_SECONDS)

    def _step(
        self, run: _Run, layer: str | None, step: str | None, what: str = "step"
    ) -> tuple[ImageStep, str]:
        index = self._index(run, refresh=False)
        if not layer:
            raise _BadRequest("missing parameter 'layer'")
        if layer not in index.steps:
            raise _BadRequest(f"run {run.name!r} has no layer {layer!r}")
        if step is None or not _INTEGER.fullmatch(step):
            raise _BadRequest(
                f"parameter {what!r} must be an integer (a logged epoch); received {step!r}"
            )
        steps = index.steps[layer]
        if int(step) not in steps:
            first, last = min(steps), max(steps)
            raise _BadRequest(
                f"layer {layer!r} of run {run.name!r} has no logged epoch {int(step)}; "
                f"its {len(steps)} logged epochs run from {first} to {last}"
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


def _number(value: float | None) -> float | None:
    """A change value for JSON: 4 significant digits (a colour on a log scale needs no more)."""
    return float(f"{value:.4g}") if value is not None and math.isfinite(value) else None


def _sample(sample: str | None, item: ImageStep) -> int:
    if sample is None or not _INTEGER.fullmatch(sample):
        raise _BadRequest(
            f"parameter 'sample' must be an integer (a probe image); received {sample!r}"
        )
    value = int(sample)
    if not 0 <= value < item.count:
        raise _BadRequest(
            f"no probe image {value} at epoch {item.step}: there are {item.count} "
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
