"""Runs in a log directory: which directories hold tbviz's pictures, and their layers' order.

A *run* is a directory holding event files, named as TensorBoard names it:
its path relative to the log directory (``"."`` for the log directory
itself). tbviz's runs are the directories named ``activations`` (where
`ActivationLogger` writes), or, in a log directory with none, every run (the
caller keeps those with tbviz pictures). The same rule serves the
ACTIVATIONS tab and the commands, for a local log directory and for a URL
(`tbviz.io.fs`; one recursive listing finds its runs).
"""

from __future__ import annotations

import os

from tbviz.io import fs, tags
from tbviz.io.reader import ReadResult, event_files


class LogdirError(ValueError):
    """The log directory cannot be read: the message says what was wrong and what was received."""


def check_logdir(logdir: str) -> None:
    """Raises `LogdirError` unless `logdir` is a directory, or a URL that can be read.

    Raises:
        LogdirError: `logdir` is a file or does not exist; a URL whose file
            system is not installed (the message names the package), that is
            one object, or whose listing failed (the server's answer).
    """
    if fs.is_url(logdir):
        try:
            kind = fs.is_directory(logdir)
        except fs.RemoteUnavailable as error:
            raise LogdirError(str(error)) from None
        except Exception as error:  # noqa: BLE001 -- whatever the file system raises
            raise LogdirError(
                f"LOGDIR {fs.redact(logdir)!r} could not be read "
                f"({fs.scrub(f'{type(error).__name__}: {error}', logdir)}); expected a URL of a directory of TensorBoard logs that this "
                "machine can list (credentials and endpoint as for the file system's own tools)"
            ) from None
        if kind is False:
            raise LogdirError(
                "LOGDIR must be a directory of TensorBoard logs; received "
                f"{fs.redact(logdir)!r} (an object, not a directory)"
            )
        return
    if not os.path.isdir(logdir):
        what = "a file" if os.path.exists(logdir) else "no such directory"
        raise LogdirError(
            f"LOGDIR must be a directory of TensorBoard logs; received {logdir!r} ({what})"
        )


def run_directories(logdir: str) -> list[str]:
    """Every directory under `logdir` (itself included) that holds event files, sorted.

    Symbolic links to directories are followed, as TensorBoard does: a run
    reached through a link, or through two links, is listed under each path
    (TensorBoard lists it so); only a link back up the tree is not followed. A
    URL is listed once, at every depth.
    """
    if fs.is_url(logdir):
        prefix = logdir.rstrip("/")
        holding = {
            url.rsplit("/", 1)[0]
            for url in fs.find_files(logdir)
            if fs.basename(url).startswith("events.out.tfevents.")
        }
        return sorted(holding, key=lambda d: d[len(prefix) :].split("/"))
    found = []
    above: dict[str, frozenset[str]] = {}  # directory -> the real paths of the directories above it
    for directory, subdirs, _ in os.walk(logdir, followlinks=True):
        real = os.path.realpath(directory)
        ancestors = above.pop(directory, frozenset())
        if real in ancestors:  # a cycle
            subdirs.clear()
            continue
        subdirs.sort()
        for subdir in subdirs:
            above[os.path.join(directory, subdir)] = ancestors | {real}
        if event_files(directory):
            found.append(directory)
    return found


def run_name(logdir: str, run_dir: str) -> str:
    """TensorBoard's name for a run: its path relative to `logdir`, "." for `logdir` itself."""
    if fs.is_url(logdir):
        return run_dir.rstrip("/")[len(logdir.rstrip("/")) :].strip("/") or "."
    return os.path.relpath(run_dir, logdir).replace(os.sep, "/")


def candidate_runs(logdir: str) -> dict[str, str]:
    """Run name -> directory of the runs that may hold tbviz pictures (see the module doc)."""
    names = {run_name(logdir, d): d for d in run_directories(logdir)}
    named = {n: d for n, d in names.items() if fs.basename(d) == tags.RUN_NAME}
    return named or names


def all_runs(logdir: str) -> dict[str, str]:
    """Run name -> directory of every run in `logdir`."""
    return {run_name(logdir, d): d for d in run_directories(logdir)}


def layer_order(result: ReadResult) -> list[str]:
    """The layer paths with images, in model order.

    The order is the writing order of the step that holds the most layers
    (layers are written in model order each epoch); layers missing from it
    follow in order of first appearance.
    """
    layers = []
    for tag in result.images:
        parsed = tags.parse_tag(tag)
        if parsed is not None and parsed[0] == tags.IMAGE:
            layers.append(parsed[1])
    by_step: dict[int, list[tuple[float, str]]] = {}
    for layer in layers:
        for item in result.images[tags.tag(tags.IMAGE, layer)]:
            by_step.setdefault(item.step, []).append((item.wall_time, layer))
    if not by_step:
        return layers
    fullest = max(by_step.values(), key=len)
    ordered = [layer for _, layer in sorted(fullest, key=lambda pair: pair[0])]
    return ordered + [layer for layer in layers if layer not in ordered]
