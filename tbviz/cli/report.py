"""``tbviz report``: the layer-health findings of a log directory, from its event files alone.

The findings are the ones `ActivationLogger` judged while training and wrote
beside the pictures (``health/<layer>``, see `tbviz.io.tags`): no model, no
Keras, no TensorFlow is needed to read them, and every reader (this command,
the ACTIVATIONS tab) sees the same verdict. See docs/health.md for what each
kind means and the thresholds behind it.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from typing import Any

from tbviz.cli.export import Run, load_runs
from tbviz.io import tags
from tbviz.io.reader import Judged


@dataclass(frozen=True)
class RunReport:
    """One run's findings, and whether it was judged at all (logged with ``health=True``)."""

    run: str
    steps: list[int]  # the logged steps
    judged: bool
    findings: list[Judged]

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "steps": len(self.steps), "judged": self.judged}


def report(logdir: str, run: str | None = None) -> tuple[list[RunReport], list[str]]:
    """Each run's findings, and the problems met reading (damaged event files).

    Raises:
        tbviz.cli.export.ExportError: `logdir` holds no tbviz run (the message says why).
    """
    found, problems = load_runs(logdir, run, pictures=False)
    return [_run_report(r) for r in found], problems


def _run_report(run: Run) -> RunReport:
    result = run.result
    steps = sorted({s.step for series in result.images.values() for s in series})
    return RunReport(run.name, steps, bool(result.health), result.findings())


def as_json(reports: list[RunReport]) -> str:
    """``{"findings": [...], "runs": [...]}``: every finding with its run, then each run read."""
    findings = [j.to_dict(r.run) for r in reports for j in r.findings]
    return json.dumps({"findings": findings, "runs": [r.to_dict() for r in reports]}, indent=2) + "\n"


def as_text(reports: list[RunReport], width: int = 100) -> str:
    """The findings as a person reads them in a terminal: a table per run."""
    lines: list[str] = []
    for r in reports:
        first, last = (tags.epoch_number(s) for s in (r.steps[0], r.steps[-1]))
        span = f"epochs {first}-{last}" if len(r.steps) > 1 else f"epoch {first}"
        head = f"run {r.run!r} ({len(r.steps)} logged, {span})"
        if not r.judged:
            lines += [f"{head}: not judged (logged with health=False, or by a tbviz without it)", ""]
            continue
        warnings = sum(j.finding.severity == "warning" for j in r.findings)
        if not r.findings:
            lines += [f"{head}: no findings", ""]
            continue
        lines.append(f"{head}: {warnings} {'warning' if warnings == 1 else 'warnings'}, "
                     f"{len(r.findings) - warnings} info")  # fmt: skip
        rows = [("severity", "layer", "kind", "since", "until", "")]
        for j in r.findings:
            f = j.finding
            until = "now" if j.ongoing else str(tags.epoch_number(j.until))
            rows.append((f.severity, f.layer, f.kind, str(tags.epoch_number(f.since)), until, f.explained()))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        indent = 2 + sum(w + 2 for w in widths)
        for row in rows:
            cells = "".join(cell.ljust(w + 2) for cell, w in zip(row[:5], widths, strict=True))
            detail = textwrap.wrap(row[5], max(30, width - indent)) or [""]
            lines.append(f"  {cells}{detail[0]}".rstrip())
            lines += [" " * indent + more for more in detail[1:]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
