"""The runs of a log directory as the viewers and the commands read them, and their layers by glob.

`load_runs` reads tbviz's runs of a local log directory (`tbviz.io.runs`'
rule: the ``activations`` directories, else every run with tbviz pictures);
`select_layers` picks layers by glob. ``tbviz export``, ``tbviz report``,
``tbviz.show`` and ``tbviz export --html`` all read through them, so a
wrong log directory, run or layer pattern is the same message everywhere.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tbviz.io import fs, reader, runs, tags


class LogError(ValueError):
    """A problem with the caller's input: what was wrong, expected and received."""


@dataclass
class Run:
    """One run directory of a log directory and the tbviz summaries read from it."""

    name: str
    path: str
    result: reader.ReadResult

    @property
    def layers(self) -> list[str]:
        return runs.layer_order(self.result)


def load_runs(
    logdir: str,
    run: str | None = None,
    *,
    on_run: Callable[[str], None] | None = None,
    pictures: bool = True,
    kinds: Iterable[str] | None = None,
) -> tuple[list[Run], list[str]]:
    """Reads the runs of `logdir` (a local path or a URL) that hold tbviz images.

    Without `run`, tbviz's runs (`tbviz.io.runs.candidate_runs`) are read.
    `pictures`: False leaves the PNGs on disk (`tbviz.io.reader.RunReader`);
    `kinds`: the tag kinds to read (None: all). Returns the runs with
    images, in name order, and the problems met while reading (damaged
    files: what was skipped).

    Raises:
        LogError: `logdir` is not a directory, holds no tbviz images, or
            has no run named `run`; a URL could not be read.
    """
    try:
        runs.check_logdir(logdir)
    except runs.LogdirError as error:
        raise LogError(str(error)) from None
    try:
        return _load(logdir, run, on_run, pictures, kinds)
    except LogError:
        raise
    except Exception as error:
        if not fs.is_url(logdir):
            raise
        raise LogError(  # the server went away while reading
            f"could not read {fs.redact(logdir)!r} "
            f"({fs.scrub(f'{type(error).__name__}: {error}', logdir)})"
        ) from None


def _load(
    logdir: str,
    run: str | None,
    on_run: Callable[[str], None] | None,
    pictures: bool,
    kinds: Iterable[str] | None,
) -> tuple[list[Run], list[str]]:
    shown = fs.redact(logdir)
    if run is not None:
        names = runs.all_runs(logdir)
        wanted = run.strip("/") or "."
        if wanted not in names:
            with_images = [r.name for r in _read(runs.candidate_runs(logdir), None, False, kinds)[0]]
            raise LogError(
                f"no run {run!r} in {shown!r}; runs with tbviz images: "
                + (", ".join(with_images) or "none")
            )
        candidates = {wanted: names[wanted]}
    else:
        candidates = runs.candidate_runs(logdir)
    found, problems = _read(candidates, on_run, pictures, kinds)
    if not found:
        scanned = ", ".join(sorted(candidates)) if candidates else "none"
        raise LogError(
            f"no tbviz images in {shown!r}: expected event files with "
            f"'{tags.tag(tags.IMAGE, '<layer>')}' image tags, as "
            f"ActivationLogger(log_dir=LOGDIR) writes to LOGDIR/{tags.RUN_NAME}; "
            f"run directories read: {scanned}"
            + (f" ({len(problems)} damaged: {problems[0]})" if problems else "")
        )
    return found, problems


def _read(
    candidates: dict[str, str],
    on_run: Callable[[str], None] | None,
    pictures: bool,
    kinds: Iterable[str] | None,
) -> tuple[list[Run], list[str]]:
    found, problems = [], []
    for name in sorted(candidates):
        run_reader = reader.RunReader(candidates[name], pictures=pictures, kinds=kinds)
        run_reader.update()
        result = run_reader.result()
        problems.extend(result.problems)
        if result.images:
            found.append(Run(name, candidates[name], result))
        if on_run is not None:
            on_run(name)
    return found, problems


def select_layers(run: Run, patterns: Sequence[str] | None, *, option: str = "--layer") -> list[str]:
    """The run's layers that match any of the glob `patterns` (all of them for None).

    Raises:
        LogError: a pattern matches no layer; the message names `option` and
            lists the layers.
    """
    layers = run.layers
    if not patterns:
        return layers
    unmatched = [p for p in patterns if not any(_matches(layer, p) for layer in layers)]
    if unmatched:
        raise LogError(
            f"no layer matches {option} {unmatched[0]!r}; layers in run {run.name!r}: "
            + ", ".join(layers)
        )
    return [layer for layer in layers if any(_matches(layer, p) for p in patterns)]


def _matches(layer: str, pattern: str) -> bool:
    return layer == pattern or fnmatch.fnmatchcase(layer, pattern)
