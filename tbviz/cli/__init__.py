"""The ``tbviz`` command: ``tbviz demo``, ``tbviz board``, ``tbviz export`` and ``tbviz report``.

Heavy modules (Keras for the demo, TensorBoard's server for board) are
imported only by the sub-command that needs them. Mistakes in the input are
reported as one line on stderr with exit status 2, like argparse's own.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
import threading
import types
from collections.abc import Sequence

from tbviz import _missing_backend
from tbviz.io import tags

#: TensorBoard keeps only 10 steps per image tag unless told otherwise, and
#: ``images=0`` ("keep all") is broken (tensorflow/tensorboard#5550).
SAMPLES_PER_PLUGIN = "images=100000"
USAGE_ERROR = 2
_LOGDIR_HELP = "the log directory, e.g. logs/mnist, or its URL, e.g. s3://bucket/logs/mnist"

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # same format as argparse, for our own errors too
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, received {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port number from 0 to 65535 (0: any free port), received {text!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    from tbviz import __version__
    from tbviz.cli import export

    parser = _Parser(
        prog="tbviz",
        description="Watch a Keras model's feature maps learn, epoch by epoch, in TensorBoard.",
        epilog="Run 'tbviz COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"tbviz {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="train the article's MNIST CNN with ActivationLogger (offline)",
        description=(
            "Trains the article's MNIST CNN (two 2x2 convolutions with max-pooling, a "
            "500-unit dense layer, softmax) with tbviz.ActivationLogger, on the Keras backend "
            "KERAS_BACKEND names (losses as keras.callbacks.TensorBoard writes them), then "
            "prints the command to view the logs. Offline by "
            "default: it uses the MNIST test split shipped with tbviz (10,000 digits by "
            "Y. LeCun, C. Cortes and C. J. C. Burges, CC BY-SA 3.0), or Keras' full MNIST "
            "when it is already downloaded or asked for."
        ),
    )
    demo.add_argument(
        "--logdir", default="logs/mnist", help="where to write the logs (default: %(default)s)"
    )
    demo.add_argument(
        "--epochs", type=_positive_int, default=20, help="training epochs (default: %(default)s)"
    )
    demo.add_argument(
        "--source",
        choices=("auto", "shipped", "keras"),
        default="auto",
        help=(
            "which MNIST: 'shipped' (the test split in the package, 8,000 digits to train, "
            "2,000 to validate), 'keras' (keras.datasets.mnist, downloads it unless "
            "cached), 'auto' (Keras' copy if cached, else the shipped one; never uses "
            "the network) (default: %(default)s)"
        ),
    )
    demo.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=0.001,
        help=(
            "Adam's learning rate (default: %(default)s); 0.05 trains a network that does not "
            "learn, and 'tbviz report' says why"
        ),
    )
    demo.set_defaults(handler=_demo)

    board = commands.add_parser(
        "board",
        help="start TensorBoard with every logged epoch on the image step slider",
        description=(
            "Starts TensorBoard on localhost for LOGDIR with --samples_per_plugin "
            f"{SAMPLES_PER_PLUGIN}, so the Images dashboard keeps every logged epoch "
            "(TensorBoard's default keeps 10 per tag), prints its URL and serves until "
            "Ctrl+C. A LOGDIR URL (s3://, gs://, any fsspec URL) is read without "
            "TensorFlow's file systems, so s3:// works where TensorFlow is installed."
        ),
    )
    board.add_argument("logdir", metavar="LOGDIR", help=_LOGDIR_HELP)
    board.add_argument(
        "--port",
        type=_port,
        default=None,
        help="port to serve on; 0 picks a free one (default: 6006, or the next free one)",
    )
    board.set_defaults(handler=_board)

    exporting = commands.add_parser(
        "export",
        help="write logged feature maps as PNGs, animated GIFs, contact sheets or one HTML viewer",
        description=textwrap.fill(
            "Reads the event files under LOGDIR (no training, no model, no TensorFlow graph "
            "needed) and writes, for every layer and probe image, one PNG per epoch, an "
            "animated GIF across epochs and contact sheets (--out); or the ACTIVATIONS "
            "tab's viewer as one self-contained HTML file, to open offline in any "
            "browser (--html); or both.",
            width=79,
        ),
        epilog=export.FILES_WRITTEN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_logdir_and_run(exporting, "export")
    exporting.add_argument("--out", metavar="DIR", help="output directory of the PNGs, GIFs and sheets")
    exporting.add_argument(
        "--html",
        metavar="FILE",
        help="write the viewer (layers x epochs, one slider, compare, change heat map) with "
        "the pictures embedded to this one HTML file",
    )
    exporting.add_argument(
        "--max-mb",
        type=_non_negative_float,
        default=50,
        metavar="MB",
        help="--html: about how many megabytes of pictures the file may hold; past it the "
        "viewer holds fewer probe images, then epochs, then layers, and says so; 0: no "
        "limit (default: %(default)s)",
    )
    exporting.add_argument(
        "--layer",
        action="append",
        metavar="PATTERN",
        help="export only layers whose path matches this glob (e.g. 'conv*'); repeatable "
        "(default: all layers)",
    )
    exporting.add_argument(
        "--scale",
        type=_positive_int,
        default=1,
        metavar="N",
        help="enlarge pictures in GIFs and contact sheets N times (default: %(default)s)",
    )
    exporting.add_argument(
        "--duration",
        type=_positive_int,
        default=500,
        metavar="MS",
        help="GIF frame duration in milliseconds (default: %(default)s)",
    )
    exporting.set_defaults(handler=_export)

    reporting = commands.add_parser(
        "report",
        help="print which layers died, saturated, exploded or went NaN, and since which epoch",
        description=textwrap.fill(
            "Reads the event files under LOGDIR (no training, no model, no TensorFlow) and "
            "prints, per run, the layer-health findings ActivationLogger wrote while training: "
            "each layer that is dead, saturated, exploding, vanishing, stalled or has NaN/Inf, "
            "since which epoch (as Keras' progress bar numbers them: epoch 1 is TensorBoard's "
            "step 0), with the figure that says so. Exit status 0 whether or not there are "
            "findings.",
            width=79,
        ),
    )
    _add_logdir_and_run(reporting, "report")
    reporting.add_argument(
        "--json",
        action="store_true",
        help='print {"findings": [{"run", "layer", "kind", "since", "severity", "detail", '
        '...}], "runs": [...]} instead of tables',
    )
    reporting.set_defaults(handler=_report)
    return parser


def _add_logdir_and_run(command: argparse.ArgumentParser, verb: str) -> None:
    """The LOGDIR argument and the --run option of a command that reads logs."""
    command.add_argument("logdir", metavar="LOGDIR", help=_LOGDIR_HELP)
    command.add_argument(
        "--run",
        metavar="RUN",
        help=f"{verb} only this run (default: every run named '{tags.RUN_NAME}', or every "
        "run with tbviz images if none is)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``tbviz`` command; returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("\ntbviz: interrupted", file=sys.stderr)
        return 130
    except _UsageError as error:
        print(f"tbviz {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:  # `tbviz report LOGDIR | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0


class _UsageError(Exception):
    """A mistake in the command line or its input: reported in one line, exit status 2."""


def _warn(message: str) -> None:
    print(f"tbviz: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- demo


def _demo(args: argparse.Namespace) -> int:
    from tbviz import data
    from tbviz.io import fs

    logdir = args.logdir
    if fs.is_url(logdir):
        raise _UsageError(
            "--logdir must be a local directory: the demo writes its losses with Keras' "
            "TensorBoard callback, which writes through TensorFlow's file systems. "
            "ActivationLogger(log_dir=URL) in your own training logs to object storage "
            f"(docs/remote.md). Received: {fs.redact(logdir)!r}"
        )
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise _UsageError(f"--logdir must be a directory; received {logdir!r}, which is a file")
    if os.path.isdir(logdir) and os.listdir(logdir):
        _warn(
            f"{logdir!r} already holds logs; this run's epochs are written beside them "
            "(delete it, or pass another --logdir, for a clean run)"
        )
    try:  # Keras and its backend (KERAS_BACKEND): a missing one is said before training starts
        from tbviz.cli.demo import train
    except ModuleNotFoundError as error:
        explained = _missing_backend(error)
        if explained is None:
            raise
        print(f"tbviz demo: error: {explained}", file=sys.stderr)
        return 1
    if args.source == "keras" or (args.source == "auto" and data.keras_mnist_cached()):
        print("Data: Keras' MNIST (60,000 training and 10,000 validation digits).")
    else:
        print(
            "Data: the MNIST test split shipped with tbviz (8,000 training and 2,000 "
            "validation digits; MNIST by Y. LeCun, C. Cortes and C. J. C. Burges, CC BY-SA 3.0)."
        )
    print(f"Training the article's CNN for {args.epochs} epochs, logging to {logdir} ...")
    sys.stdout.flush()

    try:
        train(logdir, epochs=args.epochs, source=args.source, learning_rate=args.learning_rate)
    except KeyboardInterrupt:
        print(f"\ntbviz demo: interrupted; the epochs logged so far are in {logdir}")
        _print_view_commands(logdir)
        return 130
    except Exception as error:  # noqa: BLE001 -- e.g. no network for --source keras
        print(f"tbviz demo: error: training failed: {type(error).__name__}: {error}",
              file=sys.stderr)  # fmt: skip
        if args.source == "keras":
            print("tbviz demo: hint: --source shipped works offline", file=sys.stderr)
        return 1
    print(f"\nDone: feature maps of {args.epochs} epochs in {os.path.join(logdir, tags.RUN_NAME)}")
    _print_view_commands(logdir)
    return 0


def _print_view_commands(logdir: str) -> None:
    quoted = shlex.quote(logdir)
    print(
        "\nView them in TensorBoard's ACTIVATIONS tab (and its Images dashboard), every epoch:\n"
        f"    tensorboard --logdir {quoted}\n"
        "or, printing the URL:\n"
        f"    tbviz board {quoted}\n"
        "Export them as PNGs, GIFs and contact sheets:\n"
        f"    tbviz export {quoted} --out {shlex.quote(logdir.rstrip('/') + '-export')}\n"
        "Which layers died, saturated, exploded or went NaN, and since which epoch:\n"
        f"    tbviz report {quoted}",
        flush=True,
    )


# ---------------------------------------------------------------- board


def start_board(logdir: str, port: int | None = None, extra_flags: Sequence[str] = ()):
    """Starts TensorBoard for `logdir` in this process, in a background thread.

    The Images dashboard keeps every logged step (``--samples_per_plugin
    images=100000``). `port` None tries 6006 and the next free ones; 0 picks
    any free port. `extra_flags` are more TensorBoard flags, e.g.
    ``["--reload_task=blocking"]`` to load the data before returning.

    Returns:
        ``(tensorboard, url)``: the `tensorboard.program.TensorBoard` and the
        URL it serves, e.g. ``"http://localhost:6006/"``.

    A `logdir` URL is read by TensorBoard's TensorFlow-free file systems
    (`read_urls_without_tensorflow`), which open ``s3://`` where TensorFlow's do not.

    Raises:
        tensorboard.program.TensorBoardServerException: the server could not
            start, e.g. the port is in use.
    """
    from tbviz.io import fs

    if fs.is_url(logdir):
        read_urls_without_tensorflow()
    from tensorboard import program

    argv = [None, "--logdir", logdir, "--samples_per_plugin", SAMPLES_PER_PLUGIN]
    if port is not None:
        argv += ["--port", str(port)]
    tensorboard = program.TensorBoard()
    tensorboard.configure(argv=[*argv, *extra_flags])
    return tensorboard, tensorboard.launch()


def read_urls_without_tensorflow() -> None:
    """Makes TensorBoard, in this process, read log directories as it does where TensorFlow is
    not installed: ``s3://`` through boto3 (or s3fs), any other URL through fsspec.

    With TensorFlow installed, TensorBoard reads through ``tf.io.gfile``, which has
    no ``s3://`` (TensorFlow I/O, which had it, has no release for current
    TensorFlow). ``tensorboard.compat.notf`` is TensorBoard's own switch to its
    TensorFlow-free stub (``tensorboard.compat.tf``); it must be set before
    TensorBoard first needs TensorFlow, as it is in ``tbviz board``.
    """
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def _board(args: argparse.Namespace) -> int:
    from tbviz.io import fs, runs

    logdir, shown = args.logdir, fs.redact(args.logdir)
    if fs.is_url(logdir):
        read_urls_without_tensorflow()  # before TensorBoard is imported
    try:
        runs.check_logdir(logdir)
        empty = not runs.run_directories(logdir)
    except runs.LogdirError as error:
        raise _UsageError(str(error)) from None
    except Exception as error:  # noqa: BLE001 -- a URL's server went away after answering
        reason = fs.scrub(f"{type(error).__name__}: {error}", logdir)
        raise _UsageError(f"could not list {shown!r} ({reason})") from None
    if empty:
        _warn(
            f"no event files in {shown!r} yet; TensorBoard shows them as soon as training "
            f"writes them (ActivationLogger(log_dir={shown!r}))"
        )
    from tensorboard import program

    try:
        _, url = start_board(logdir, args.port)
    except program.TensorBoardServerException as error:
        raise _UsageError(f"{error.msg.rstrip('.')}; try another --port (0 picks a free one)") from None
    print(f"TensorBoard serving {shown} at {url} (every logged epoch on the step slider)")
    print(f"Feature maps: {url}#activations")
    print("Press Ctrl+C to stop.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("Stopped.", flush=True)
    return 0


# ---------------------------------------------------------------- export


def _export(args: argparse.Namespace) -> int:
    from tbviz.cli import export

    if args.out is None and args.html is None:
        raise _UsageError("say where to write: --out DIR (PNGs, GIFs, sheets), --html FILE, or both")
    progress = _progress_bar()
    try:
        with progress(total=None, desc="reading", unit=" run") as bar:
            runs, problems = export.load_runs(
                args.logdir, args.run, on_run=lambda _: bar.update(1), pictures=args.out is not None
            )
    except export.ExportError as error:
        raise _UsageError(str(error)) from None
    for problem in problems:
        _warn(f"damaged event file: {problem}")

    selections = []
    for run in runs:
        try:
            selections.append((run, export.select_layers(run, args.layer)))
        except export.ExportError as error:
            if len(runs) == 1:
                raise _UsageError(str(error)) from None
    if not selections:
        listing = "; ".join(f"run {r.name!r}: {', '.join(r.layers)}" for r in runs)
        raise _UsageError(f"no layer matches --layer {args.layer[0]!r}; layers in {listing}")
    if args.html is not None:
        try:
            written = export.write_html(
                args.html, args.logdir, selections, max_bytes=round(args.max_mb * 1e6) or None
            )
        except OSError as error:
            print(f"tbviz export: error: could not write {args.html!r}: {error.strerror or error}",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"viewer of {len(selections)} run(s) -> {args.html} ({written / 1e6:.1f} MB)")
        if args.out is None:
            return 0
    try:
        export.check_writable(args.out)
    except export.ExportError as error:
        raise _UsageError(str(error)) from None

    total = sum(export.work_units(run, layers) for run, layers in selections)
    try:
        with progress(total=total, desc="exporting", unit=" item") as bar:
            summaries = [
                export.export_run(
                    run,
                    export.run_out_dir(args.out, run, args.logdir),
                    layers,
                    scale=args.scale,
                    duration_ms=args.duration,
                    progress=bar.update,
                )
                for run, layers in selections
            ]
    except OSError as error:
        print(f"tbviz export: error: could not write {error.filename or args.out!r}: "
              f"{error.strerror or error}", file=sys.stderr)  # fmt: skip
        return 1
    for summary in summaries:
        for warning in summary.warnings:
            _warn(warning)
        print(
            f"run {summary.run!r}: {len(summary.layers)} layers x {len(summary.steps)} epochs -> "
            f"{summary.out_dir}: {len(summary.pngs)} PNGs, {len(summary.gifs)} GIFs, "
            f"{len(summary.sheets)} contact sheets"
            + (", a change heat map" if summary.heatmap else "")
        )
    return 0


# ---------------------------------------------------------------- report


def _report(args: argparse.Namespace) -> int:
    from tbviz.cli import export, report

    try:
        reports, problems = report.report(args.logdir, args.run)
    except export.ExportError as error:
        raise _UsageError(str(error)) from None
    for problem in problems:
        _warn(f"damaged event file: {problem}")
    print(report.as_json(reports) if args.json else report.as_text(reports), end="")
    return 0


def _progress_bar():
    """tqdm on an interactive stderr; a silent stand-in otherwise."""
    from tqdm import tqdm

    def make(**options):
        return tqdm(file=sys.stderr, disable=None, leave=False, **options)

    return make


if __name__ == "__main__":
    sys.exit(main())
