"""Log directories given as URLs (``s3://``, ``gs://``, ``memory://``...): file systems by fsspec.

A path with ``://`` is a URL, opened through fsspec with the file system the
user installed for its protocol (s3fs, gcsfs, adlfs...). fsspec is optional
(``pip install 'tbviz[remote]'``); local paths never need it. Credentials are
the file system's business (its environment variables and config files):
tbviz never reads, logs or writes them, and every message names a URL by
`redact`, without the user name, password or query a URL may carry.

The functions below are the only ones in tbviz that touch a URL: listing,
reading ranges and writing whole objects. Listings are always fresh (fsspec
keeps a cache of them that a reader polling for new epochs must not see).
"""

from __future__ import annotations

import os
import re
from typing import Any


class RemoteUnavailable(ValueError):
    """A URL whose file system is not installed: the message names what to install."""


def is_url(path: str) -> bool:
    """Whether `path` is a URL (``protocol://...``) rather than a local path."""
    protocol, sep, _ = path.partition("://")
    return bool(sep) and protocol.isidentifier() and protocol.lower() != "file"


def local_path(path: str) -> str:
    """`path` without a ``file://`` prefix."""
    return path[len("file://") :] if path.lower().startswith("file://") else path


_USERINFO = re.compile(r"^([A-Za-z][\w+.-]*://)[^/@]*@")


def redact(path: str) -> str:
    """`path` as messages show it: a URL without user name, password, query or fragment."""
    if not is_url(path):
        return path
    return _USERINFO.sub(r"\1", path).split("?", 1)[0].split("#", 1)[0]


def scrub(text: str, url: str) -> str:
    """`text` (say, a file system's error about `url`) without the password `url` carries."""
    match = _USERINFO.match(url)
    if match is None:
        return text
    userinfo = url[len(match.group(1)) : match.end() - 1]
    password = userinfo.partition(":")[2]
    for secret in (userinfo, password):
        if secret:
            text = text.replace(secret, "***")
    return text


def join(directory: str, *names: str) -> str:
    """`names` under `directory`, a URL (joined with ``/``) or a local path."""
    if is_url(directory):
        return "/".join([directory.rstrip("/"), *names])
    return os.path.join(directory, *names)


def basename(path: str) -> str:
    """The last part of a URL or a local path (a trailing ``/`` ignored)."""
    if is_url(path):
        return path.rstrip("/").rsplit("/", 1)[-1]
    return os.path.basename(os.path.abspath(path))


def require(url: str) -> None:
    """Checks that `url`'s file system is installed, without creating it (no network).

    Raises:
        RemoteUnavailable: fsspec, or the package of `url`'s protocol, is not
            installed; the message says what to install.
    """
    protocol = url.partition("://")[0].lower()
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ModuleNotFoundError:
        raise RemoteUnavailable(
            f"{redact(url)!r} is a URL, which tbviz opens through fsspec, and fsspec is not "
            "installed; expected pip install 'tbviz[remote]' (fsspec, s3fs, gcsfs), or the "
            f"file system of the URL's protocol ({_PACKAGES.get(protocol, 'its fsspec implementation')}) "
            f"and fsspec. Received: {redact(url)!r}"
        ) from None
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as error:
        known = known_implementations.get(protocol)
        hint = (
            f"pip install {_PACKAGES[protocol]}"
            if protocol in _PACKAGES
            else (known or {}).get("err") or "a protocol fsspec knows (s3, gs, az, memory, ...)"
        )
        raise RemoteUnavailable(
            f"no file system for {protocol}:// URLs is installed ({error}); expected {hint}. "
            f"Received: {redact(url)!r}"
        ) from None


def filesystem(url: str) -> tuple[Any, str]:
    """``(file system, path in it)`` for `url`.

    Raises:
        RemoteUnavailable: see `require`.
    """
    require(url)
    import fsspec

    return fsspec.core.url_to_fs(url)


def list_files(directory: str) -> dict[str, tuple[int, Any]]:
    """The files directly in the URL `directory`: ``{url: (size, modification token)}``.

    An absent directory has none. Network failures raise whatever the file system raises.
    """
    filesystem_, root = filesystem(directory)
    root = root.rstrip("/")
    filesystem_.invalidate_cache(root)
    try:
        entries = filesystem_.ls(root, detail=True)
    except FileNotFoundError:
        return {}
    found = {}
    for entry in entries:
        if entry.get("type") != "file":
            continue
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        token = next((entry[k] for k in _MODIFIED if entry.get(k) is not None), None)
        found[join(directory, name)] = (int(entry.get("size") or 0), str(token))
    return found


def find_files(directory: str) -> list[str]:
    """Every file under the URL `directory`, at any depth, as URLs (one recursive listing)."""
    filesystem_, root = filesystem(directory)
    root = root.rstrip("/")
    filesystem_.invalidate_cache()  # find() may answer from listings cached under `root`
    try:
        paths = filesystem_.find(root)
    except FileNotFoundError:
        return []
    prefix = root + "/"
    return [join(directory, path[len(prefix) :]) for path in paths if path.startswith(prefix)]


def read(url: str, start: int = 0, end: int | None = None) -> bytes:
    """Bytes `start` to `end` (None: the end) of the object at `url`."""
    filesystem_, path = filesystem(url)
    return filesystem_.cat_file(path, start=start, end=end)


def size(url: str) -> int | None:
    """The size of the object at `url`, or None if there is none (asked afresh)."""
    filesystem_, path = filesystem(url)
    filesystem_.invalidate_cache(path)
    try:
        return int(filesystem_.info(path)["size"])
    except FileNotFoundError:
        return None


def write(url: str, data: bytes) -> None:
    """Writes `data` as the object at `url`, whole (a single upload where the store allows)."""
    filesystem_, path = filesystem(url)
    filesystem_.pipe_file(path, data)


def is_directory(url: str) -> bool | None:
    """Whether `url` holds objects (True), is one object (False) or is nothing yet (None)."""
    filesystem_, path = filesystem(url)
    path = path.rstrip("/")
    filesystem_.invalidate_cache(path)
    if filesystem_.isdir(path):
        return True
    return False if filesystem_.isfile(path) else None


# Where fsspec file systems say when an object last changed (s3fs, gcsfs, adlfs, local, memory).
_MODIFIED = ("LastModified", "updated", "last_modified", "mtime", "created")

_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
