"""Makes the packages named in ``TBVIZ_TEST_UNIMPORTABLE`` look uninstalled in this Python process.

``TBVIZ_TEST_UNIMPORTABLE`` is a comma-separated list of top-level package names
(say ``tensorflow``). The import system's finders are wrapped so that they no
longer find those packages, nor their installed distributions: importing one
(or a submodule) raises ``ModuleNotFoundError: No module named 'tensorflow'``,
``importlib.util.find_spec`` answers `None`, ``importlib.metadata`` does not
know it, and it never appears in ``sys.modules`` — all as on a machine where it
is not installed. Code that falls back when a package is missing (TensorBoard
uses its TensorFlow stub; Keras and PyTorch leave their TensorFlow support off)
takes that path, and code that needs it fails loudly instead of quietly
working because it happens to be installed. (Entering `None` in
``sys.modules``, Python's own way to block an import, is not the same: Keras
takes ``"tensorflow" in sys.modules`` to mean TensorFlow is loaded.)

tests/conftest.py puts this directory on ``PYTHONPATH``: Python imports
``sitecustomize`` at start-up, so every Python process a test starts (the
``tbviz`` command, TensorBoard, a worker, a nested pytest run) gets the same
block before its first import. conftest installs it in the test process itself
by calling `install`.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

VARIABLE = "TBVIZ_TEST_UNIMPORTABLE"


class Hiding(importlib.abc.MetaPathFinder):
    """Wraps one of ``sys.meta_path``'s finders; finds what it finds, less `packages`."""

    def __init__(self, finder, packages: frozenset[str]) -> None:
        self.finder = finder
        self.packages = packages

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.packages:
            return None
        find_spec = getattr(self.finder, "find_spec", None)
        return None if find_spec is None else find_spec(fullname, path, target)

    def find_distributions(self, *args, **kwargs):
        find_distributions = getattr(self.finder, "find_distributions", None)
        if find_distributions is None:
            return
        for distribution in find_distributions(*args, **kwargs):
            name = (distribution.metadata["Name"] or "").lower().replace("_", "-")
            if name not in self.packages:
                yield distribution

    def invalidate_caches(self) -> None:
        if hasattr(self.finder, "invalidate_caches"):
            self.finder.invalidate_caches()


def install() -> frozenset[str]:
    """Hides the packages ``TBVIZ_TEST_UNIMPORTABLE`` names (once per process); returns them.

    Raises:
        RuntimeError: one of them was imported already, so hiding it now would prove nothing.
    """
    packages = frozenset(p.strip() for p in os.environ.get(VARIABLE, "").split(",") if p.strip())
    if not packages or any(isinstance(f, Hiding) for f in sys.meta_path):
        return packages
    loaded = sorted(p for p in packages if p in sys.modules)
    if loaded:
        raise RuntimeError(
            f"{VARIABLE} names {loaded}, already imported in this process: hiding must come "
            "before the first import"
        )
    sys.meta_path[:] = [Hiding(finder, packages) for finder in sys.meta_path]
    importlib.invalidate_caches()
    return packages


install()
