"""Log directories given as URLs (``s3://``, ``gs://``, ``memory://``...): file systems by fsspec.

A path with ``://`` is a URL, opened through fsspec with the file system the
user installed for its protocol (s3fs, gcsfs, adlfs...). fsspec is optional
(``pip install 'tbviz[remote]'``); local paths never need it. Credentials are
the file system's business (its environment variables and config files):
tbviz never reads, logs or writes them.
"""

from __future__ import annotations

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


def filesystem(url: str) -> tuple[Any, str]:
    """``(file system, path in it)`` for `url`.

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
            f"{url!r} is a URL, which tbviz opens through fsspec, and fsspec is not installed; "
            "expected pip install 'tbviz[remote]' (fsspec) and the file system of the URL's "
            f"protocol ({_PACKAGES.get(protocol, 'its fsspec implementation')}). Received: {url!r}"
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
            f"Received: {url!r}"
        ) from None
    return fsspec.core.url_to_fs(url)


_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
