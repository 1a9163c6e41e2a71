"""The tbviz command as a user runs it: demo, export, help and bad input."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_support import (
    DEMO_EPOCHS,
    DEMO_LAYERS,
    DEMO_PROBES,
    assert_no_traceback,
    picture_png,
    quiet_env,
    run_tbviz,
    write_keras_log,
    write_log,
)
from PIL import Image

from tbviz import cli
from tbviz.cli import export
from tbviz.io import reader, tags


def test_demo_trains_offline_and_prints_the_commands_to_view_it(demo_log):
    """`tbviz demo` logs every epoch of every conv/pool layer and prints how to view them."""
    logdir, process = demo_log
    assert "MNIST test split shipped with tbviz" in process.stdout
    assert f"    tbviz board {shlex.quote(str(logdir))}\n" in process.stdout
    assert f"    tensorboard --logdir {shlex.quote(str(logdir))}\n" in process.stdout
    assert_no_traceback(process)
    result = reader.read_run(str(logdir / tags.RUN_NAME))
    assert result.problems == []
    for layer in DEMO_LAYERS:
        steps = result.images[tags.tag(tags.IMAGE, layer)]
        assert [s.step for s in steps] == list(range(DEMO_EPOCHS))
        assert all(len(s.pngs) == DEMO_PROBES for s in steps)
    assert sorted(os.listdir(logdir)) == ["activations", "train", "validation"]


@pytest.mark.backend_independent
def test_export_of_the_demo_log_writes_every_file_with_documented_sizes(demo_log, tmp_path):
    """`tbviz export` writes per-epoch PNGs, GIFs with a frame per epoch and contact sheets."""
    logdir, _ = demo_log
    out = tmp_path / "out"
    process = run_tbviz("export", str(logdir), "--out", str(out))
    assert process.returncode == 0, process.stderr
    assert_no_traceback(process)
    layers, epochs = len(DEMO_LAYERS), DEMO_EPOCHS
    assert process.stdout.strip() == (
        f"run 'activations': {layers} layers x {epochs} epochs -> {out / 'activations'}: "
        f"{layers * DEMO_PROBES * epochs} PNGs, {layers * DEMO_PROBES} GIFs, "
        f"{layers + DEMO_PROBES} contact sheets, a change heat map"
    )
    logged = reader.read_run(str(logdir / "activations")).images
    for layer in DEMO_LAYERS:
        first = logged[tags.tag(tags.IMAGE, layer)][0]
        for probe in range(DEMO_PROBES):
            for epoch in range(epochs):
                with Image.open(out / "activations" / layer / f"probe{probe}" / f"epoch{epoch + 1:04d}.png") as png:
                    assert png.size == (first.width, first.height)
            with Image.open(out / "activations" / layer / f"probe{probe}.gif") as gif:
                assert gif.n_frames == epochs
                assert gif.size == (
                    max(first.width, export.MIN_FRAME_WIDTH),
                    first.height + export.CAPTION_HEIGHT,
                )
                assert gif.info["loop"] == 0 and gif.info["duration"] == 500
        with Image.open(out / "activations" / layer / "sheet.png") as sheet:
            assert sheet.size == (
                export.LABEL_WIDTH + DEMO_PROBES * first.width + (DEMO_PROBES + 1) * export.GAP,
                export.HEADER_HEIGHT + epochs * first.height + (epochs + 1) * export.GAP,
            )
    for probe in range(DEMO_PROBES):
        with Image.open(out / "activations" / f"sheet_probe{probe}.png") as sheet:
            widths = [logged[tags.tag(tags.IMAGE, layer)][0].width for layer in DEMO_LAYERS]
            assert sheet.width == export.LABEL_WIDTH + sum(widths) + (layers + 1) * export.GAP


@pytest.mark.backend_independent
def test_export_layer_filter_scale_and_duration(demo_log, tmp_path, capsys):
    """--layer globs pick layers; --scale and --duration shape the GIFs."""
    logdir, _ = demo_log
    out = tmp_path / "out"
    status = cli.main(["export", str(logdir), "--out", str(out), "--layer", "conv*",
                       "--scale", "2", "--duration", "250"])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "activations").iterdir() if p.is_dir()) == ["conv1", "conv2"]
    first = reader.read_run(str(logdir / "activations")).images["feature_maps/conv1"][0]
    with Image.open(out / "activations" / "conv1" / "probe0.gif") as gif:
        assert gif.size == (2 * first.width, 2 * first.height + export.CAPTION_HEIGHT)
        assert gif.info["duration"] == 250


@pytest.mark.backend_independent
def test_every_command_has_help(capsys):
    """`tbviz --help` and each sub-command's --help exit 0 and describe their options."""
    process = run_tbviz("--help")
    assert process.returncode == 0
    for command in ("demo", "board", "export"):
        assert command in process.stdout
    expected = {
        "demo": ["--logdir", "--epochs", "--source", "Offline"],
        "board": ["LOGDIR", "--port", "images=100000"],
        "export": ["--out", "--layer", "--run", "--scale", "probe<i>.gif", "sheet_probe<i>.png",
                   "epoch<NNNN>.png", "16 px"],
    }  # fmt: skip
    for command, words in expected.items():
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        for word in words:
            assert word in text, f"{word!r} missing from 'tbviz {command} --help'"


@pytest.mark.backend_independent
def test_logdir_without_tbviz_images_is_a_one_line_error(tmp_path):
    """Exporting a log dir that has only other runs says so, with exit status 2."""
    write_keras_log(tmp_path / "keras" / "train", "epoch_loss", [0.9, 0.5])
    process = run_tbviz("export", str(tmp_path / "keras"), "--out", str(tmp_path / "out"))
    assert process.returncode == 2
    assert_no_traceback(process)
    assert process.stderr.strip().endswith("run directories read: train")
    assert f"tbviz export: error: no tbviz images in '{tmp_path / 'keras'}'" in process.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.backend_independent
def test_corrupted_event_file_exports_what_is_readable_and_warns(tmp_path):
    """A damaged event file: the readable epochs are exported and the file is named."""
    path = write_log(tmp_path / "logs" / "activations", {"conv": (16, 16)}, range(4))
    data = bytearray(Path(path).read_bytes())
    data[data.find(picture_png(16, 16, 1, 0)) + 30] ^= 0xFF
    Path(path).write_bytes(bytes(data[: data.find(picture_png(16, 16, 3, 0)) + 5]))
    process = run_tbviz("export", str(tmp_path / "logs"), "--out", str(tmp_path / "out"))
    assert process.returncode == 0, process.stderr
    assert_no_traceback(process)
    warnings = [line for line in process.stderr.splitlines() if line.startswith("tbviz: warning:")]
    assert len(warnings) == 2
    assert all(path in line for line in warnings)
    assert "corrupted record" in warnings[0] and "ends inside a record" in warnings[1]
    with Image.open(tmp_path / "out" / "activations" / "conv" / "probe0.gif") as gif:
        assert gif.n_frames == 2  # epochs 0 and 2; 1 is corrupted, 3 truncated
    assert sorted(os.listdir(tmp_path / "out" / "activations" / "conv" / "probe0")) == [
        "epoch0001.png",
        "epoch0003.png",
    ]  # Keras' epochs 1 and 3: steps 0 and 2


@pytest.fixture
def small_log(tmp_path) -> Path:
    write_log(tmp_path / "logs" / "activations", {"conv1": (8, 8), "pool1": (4, 4)}, [0, 1])
    return tmp_path / "logs"


@pytest.mark.backend_independent
def test_unknown_layer_pattern_lists_the_layers(small_log, tmp_path, capsys):
    """--layer matching nothing: exit 2 and the layers there are."""
    status = cli.main(["export", str(small_log), "--out", str(tmp_path / "out"), "--layer", "dense"])
    assert status == 2
    assert capsys.readouterr().err == (
        "tbviz export: error: no layer matches --layer 'dense'; layers in run 'activations': "
        "conv1, pool1\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.backend_independent
def test_unwritable_out_is_a_one_line_error(small_log, tmp_path, capsys):
    """--out that is a file (unwritable even for root): exit 2, naming it and why."""
    (tmp_path / "taken").write_text("a file")
    status = cli.main(["export", str(small_log), "--out", str(tmp_path / "taken")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tbviz export: error: cannot write to --out '{tmp_path / 'taken'}': ")
    assert err.count("\n") == 1


@pytest.mark.backend_independent
def test_unknown_run_and_missing_logdir_are_one_line_errors(small_log, tmp_path, capsys):
    """--run naming no run lists the runs; a missing LOGDIR is named."""
    assert cli.main(["export", str(small_log), "--out", str(tmp_path / "o"), "--run", "x"]) == 2
    assert capsys.readouterr().err.endswith("runs with tbviz images: activations\n")
    assert cli.main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "(no such directory)" in capsys.readouterr().err
    assert cli.main(["export", str(small_log), "--out", str(tmp_path / "o"), "--run", "activations"]) == 0


@pytest.mark.backend_independent
def test_bad_numbers_are_refused_by_the_parser(capsys):
    """Non-positive --epochs/--scale and bad ports exit 2 with what was received."""
    for argv in (["demo", "--epochs", "0"], ["export", "x", "--out", "y", "--scale", "-1"],
                 ["board", "x", "--port", "70000"]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
        assert "received" in capsys.readouterr().err


@pytest.mark.tensorflow_only  # Keras' own TensorBoard callback, beside the logger, needs TensorFlow
def test_the_example_script_runs_as_written(tmp_path):
    """examples/mnist_activations.py, run as the README says (two epochs here): losses and the four layers' pictures."""
    script = Path(__file__).resolve().parent.parent / "examples" / "mnist_activations.py"
    process = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=600, env={**quiet_env(), "KERAS_MAX_EPOCHS": "2"},
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    assert "tensorboard --logdir logs/mnist" in process.stdout
    result = reader.read_run(str(tmp_path / "logs" / "mnist" / "activations"))
    assert sorted(t.split("/", 1)[1] for t in result.images) == sorted(DEMO_LAYERS)
    assert [s.step for s in result.images["feature_maps/conv1"]] == [0, 1]
    assert (tmp_path / "logs" / "mnist" / "train").is_dir()
