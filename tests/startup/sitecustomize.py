"""Makes the packages named in ``TBVIZ_TEST_UNIMPORTABLE`` unimportable in this Python process.

``TBVIZ_TEST_UNIMPORTABLE`` is a comma-separated list of top-level package names
(say ``tensorflow``). Each is entered as `None` in ``sys.modules``, Python's own
way to block a module: importing it, or any of its submodules, raises
`ModuleNotFoundError` ("import of tensorflow halted; None in sys.modules"), and
``importlib.util.find_spec`` answers `None`, as if it were not installed. Code
that falls back when a package is missing (TensorBoard uses its TensorFlow stub;
Keras' and PyTorch's optional TensorFlow support stays off) takes that path,
and code that needs it fails loudly instead of quietly working because it
happens to be installed.

tests/conftest.py puts this directory on ``PYTHONPATH``: Python imports
``sitecustomize`` at start-up, so every Python process a test starts (the
``tbviz`` command, TensorBoard, a worker, a nested pytest run) gets the same
block before its first import. conftest installs it in the test process itself
by calling `install`.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "TBVIZ_TEST_UNIMPORTABLE"


def install() -> frozenset[str]:
    """Blocks the packages ``TBVIZ_TEST_UNIMPORTABLE`` names; returns them.

    Raises:
        RuntimeError: one of them was imported already, so blocking it now would prove nothing.
    """
    packages = frozenset(p.strip() for p in os.environ.get(VARIABLE, "").split(",") if p.strip())
    loaded = sorted(p for p in packages if sys.modules.get(p) is not None)
    if loaded:
        raise RuntimeError(
            f"{VARIABLE} names {loaded}, already imported in this process: blocking must come "
            "before the first import"
        )
    for package in packages:
        sys.modules[package] = None  # type: ignore[assignment]
    return packages


install()
