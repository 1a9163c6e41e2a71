"""The README and the docs: what they point to exists, and the commands they give parse as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tbviz import cli

pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_lines(page: Path) -> list[str]:
    """The lines of the page's ```bash blocks, comments cut."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_exists(page):
    """Every link and picture that is not a URL names a file of the repository."""
    for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_runs_as_written(page):
    """Each ``tbviz ...`` line parses with the real command line; each script named exists."""
    parser = cli.build_parser()
    for line in code_lines(page):
        words = shlex.split(line)
        if words[0] == "tbviz" and "[" not in line:  # not a synopsis with [optional] parts
            parser.parse_args(words[1:])
        for word in words:
            if word.endswith(".py") or word.startswith((".ci/", "benchmarks/", "examples/")):
                assert (ROOT / word).exists(), f"{page.name}: {line!r} names {word}, which is missing"


def test_the_readme_is_a_front_door():
    """About 200 lines, its first usage example within its first 60, and the test command CI runs."""
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 250
    first_python = next(i for i, line in enumerate(lines) if line.startswith("```python"))
    assert first_python < 60
    assert "python -m pytest -q" in code_lines(ROOT / "README.md")
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
