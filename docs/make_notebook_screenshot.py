"""The README's notebook picture, and the size of the demo's notebook: run it, measure it, shoot it.

A real kernel (nbclient) runs a notebook that trains the demo's CNN with
``ActivationLogger(..., notebook=True)`` (one live viewer under the cell) and
then calls ``tbviz.show`` on the log; the script prints the saved notebook's
size with the live viewer alone and with both, renders the notebook with
nbconvert's JupyterLab template, as a notebook opened later with no kernel,
and saves a headless-Chromium screenshot of the live viewer to
``docs/notebook.png``.

    python docs/make_notebook_screenshot.py [--epochs 20] [--out docs/notebook.png]

Needs tbviz's test extra (nbclient, nbformat, ipykernel, selenium), Debian's
chromium and chromium-driver, and nbconvert (only here: ``pip install nbconvert``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default=str(HERE / "notebook.png"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tbviz-notebook-"))
    logdir = str(work / "logs" / "mnist")
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# The article's MNIST CNN, watched while it trains"),
        nbformat.v4.new_code_cell(
            "import tbviz\n"
            "from tbviz.cli.demo import train  # the article's CNN on the MNIST test split shipped with tbviz\n\n"
            f"train({logdir!r}, epochs={args.epochs}, source='shipped', verbose=0, notebook=True);"
        ),
        nbformat.v4.new_code_cell(f"tbviz.show({logdir!r})"),
    ]
    started = time.monotonic()
    NotebookClient(notebook, timeout=1800, kernel_name="python3").execute()
    print(f"ran the notebook in {time.monotonic() - started:.0f} s")
    for cell in notebook.cells:  # the kernel's start-up chatter on stderr is not the viewer
        cell.outputs = [o for o in cell.get("outputs", []) if o["output_type"] != "stream"]
    both = nbformat.writes(notebook)
    shown = notebook.cells[2].outputs
    notebook.cells[2].outputs = []
    live_only = nbformat.writes(notebook)
    print(f"the notebook saved: {len(live_only) / 1e6:.2f} MB with the live viewer, "
          f"{len(both) / 1e6:.2f} MB with tbviz.show's too")  # fmt: skip
    notebook.cells[2].outputs = shown
    (work / "demo.ipynb").write_text(both)
    screenshot(notebook, work, args.out)
    print(f"wrote {args.out}; the notebook is {work / 'demo.ipynb'}")


def screenshot(notebook, work: Path, out: str) -> None:
    """The notebook as nbconvert's JupyterLab template renders it, in headless Chromium, offline."""
    from nbconvert import HTMLExporter
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    notebook.cells = notebook.cells[:2]  # the live viewer's cell
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    page = work / "demo.html"
    page.write_text(body)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1000",
                 "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={work / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(page.as_uri())
        time.sleep(3)
        browser.execute_script("document.querySelector('.jp-Cell:nth-of-type(2)').scrollIntoView()")
        browser.execute_script("window.scrollBy(0, -16)")
        time.sleep(1)
        browser.save_screenshot(out)
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
