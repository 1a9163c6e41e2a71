"""The house's rooms keep to their boundaries: read from the code's own imports, and run.

CONTRIBUTING.md's layout table is the map: event I/O (`tbviz.io`) imports no
Keras and no other room; the plugin stands on I/O only; only `tbviz.step`'s
backend modules import ``tensorflow``, ``jax`` or ``torch``; no module imports
itself through others. And what must run without Keras does: the readers, the
tab and the commands, in a process where Keras and every backend are
unimportable (tests/startup/sitecustomize.py).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_support import TBVIZ, quiet_env, write_log
from conftest import STARTUP

pytestmark = pytest.mark.backend_independent  # reads code and starts processes: runs once

PACKAGE = Path(__file__).resolve().parent.parent / "tbviz"
BACKEND_PACKAGES = {"tensorflow", "jax", "torch"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The modules `path` imports (``from a import b`` counts as ``a`` and, if it is one, ``a.b``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def tbviz_imports(name: str, **options) -> set[str]:
    """The tbviz modules `name` imports; a package only for what its ``__init__`` itself holds
    (``from tbviz.io import tags`` imports `tbviz.io.tags`)."""
    found = {m for m in imports(MODULES[name], **options) if m in MODULES and m != name}
    return {m for m in found if not any(other.startswith(m + ".") for other in found)}


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_event_io_imports_no_keras_and_no_other_room():
    """tbviz.io imports tbviz.io only, and neither Keras nor a Keras backend."""
    for name in (n for n in MODULES if room(n) == "io"):
        outside = {m for m in tbviz_imports(name) if room(m) != "io"}
        heavy = {m for m in imports(MODULES[name]) if m.split(".")[0] in {"keras", *BACKEND_PACKAGES}}
        assert not outside and not heavy, f"{name} imports {sorted(outside | heavy)}"


def test_the_plugin_stands_on_event_io_only():
    """The viewers (the tab's server, the notebook and HTML viewers) import tbviz.io, themselves
    and tbviz's warning classes, no Keras."""
    for name in (n for n in MODULES if room(n) == "plugin"):
        outside = {m for m in tbviz_imports(name) if room(m) not in ("io", "plugin", "_warnings")}
        heavy = {m for m in imports(MODULES[name]) if m.split(".")[0] in {"keras", *BACKEND_PACKAGES}}
        assert not outside and not heavy, f"{name} imports {sorted(outside | heavy)}"


def test_the_callback_reaches_the_notebook_viewer_only_when_asked():
    """The callback imports the viewer (tbviz.plugin) inside the function that shows a notebook's
    live view only: notebook=False never loads it."""
    for name in (n for n in MODULES if room(n) == "callback"):
        top = {m for m in tbviz_imports(name, top_level_only=True) if room(m) == "plugin"}
        assert not top, f"{name} imports {sorted(top)} at module level"


def test_only_the_step_backends_import_a_backend():
    """tensorflow, jax and torch are imported by tbviz/step/<backend>.py alone, each its own."""
    for name, path in MODULES.items():
        backends = {m.split(".")[0] for m in imports(path)} & BACKEND_PACKAGES
        expected = {name.rsplit(".", 1)[-1]} if name.startswith("tbviz.step.") else set()
        assert backends <= expected, f"{name} imports {sorted(backends)}"
    assert {"tbviz.step.tensorflow", "tbviz.step.jax", "tbviz.step.torch"} <= set(MODULES)


def test_numerics_and_the_model_walk_keep_below_the_step():
    """The numerics import only numerics and the on-disk contract; the walk no step, callback or command."""
    for name in MODULES:
        used = {room(m) for m in tbviz_imports(name)}
        if room(name) == "numerics":
            assert used <= {"numerics", "io"}, f"{name} imports rooms {sorted(used)}"
            assert {m for m in tbviz_imports(name) if room(m) == "io"} <= {"tbviz.io.tags", "tbviz.io.png"}
        if room(name) == "model":
            assert used <= {"model", "numerics"}, f"{name} imports rooms {sorted(used)}"


def test_no_import_cycle():
    """No module imports itself through others (module-level imports, as Python runs them)."""
    graph = {name: tbviz_imports(name, top_level_only=True) for name in MODULES}
    # A package's __init__ importing its own modules is not a cycle through them.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_every_package_is_in_the_wheel():
    """Every folder with modules under tbviz/ is a package (has __init__.py), so setuptools' discovery puts it in the wheel."""
    for folder in {p.parent for p in PACKAGE.rglob("*.py")}:
        assert (folder / "__init__.py").exists(), f"{folder} has modules but no __init__.py"


def test_readers_the_tab_and_export_run_with_keras_and_every_backend_unimportable(tmp_path):
    """With keras, tensorflow, jax and torch unimportable: tbviz.io, the plugin, tbviz export and
    tbviz report all work."""
    logdir = tmp_path / "logs"
    write_log(logdir / "activations", {"conv": (12, 8)}, range(3))
    env = {
        **quiet_env(),
        "TBVIZ_TEST_UNIMPORTABLE": "keras,tensorflow,jax,torch",
        "PYTHONPATH": STARTUP,
    }
    code = (
        "import sys\n"
        "import tbviz, tbviz.io.reader, tbviz.io.runs, tbviz.io.writer, tbviz.plugin.server\n"
        "from tbviz.io.reader import read_run\n"
        f"result = read_run({str(logdir / 'activations')!r})\n"
        "print(sorted(result.images), [s.step for s in result.images['feature_maps/conv']])\n"
        "import warnings; warnings.simplefilter('error')\n"
        "try:\n"
        f"    tbviz.show({str(logdir)!r})  # no notebook here: it says so\n"
        "except tbviz.TbvizWarning as warning:\n"
        "    print('show:', str(warning)[:40])\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))\n"
        "import keras\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    lines = process.stdout.splitlines()
    assert lines == [
        "['feature_maps/conv'] [0, 1, 2]", "show: tbviz.show displays the viewer in a note", "[]",
    ], process.stderr  # fmt: skip
    assert "ModuleNotFoundError: No module named 'keras'" in process.stderr  # truly unimportable
    exported = subprocess.run(
        [TBVIZ, "export", str(logdir), "--out", str(tmp_path / "out"), "--html", str(tmp_path / "r.html")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert "Traceback" not in exported.stderr
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    assert sorted(os.listdir(tmp_path / "out" / "activations" / "conv" / "probe0")) == [
        "epoch0001.png", "epoch0002.png", "epoch0003.png",
    ]  # fmt: skip
    reported = subprocess.run(
        [TBVIZ, "report", str(logdir), "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert reported.returncode == 0 and "Traceback" not in reported.stderr, reported.stderr
    assert json.loads(reported.stdout) == {
        "findings": [], "runs": [{"run": "activations", "steps": 3, "judged": False}]
    }
