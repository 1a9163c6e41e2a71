"""`tbviz board`: a real TensorBoard that keeps every logged epoch, queried over HTTP."""

from __future__ import annotations

import json
import socket

import pytest
from _cli_support import Board, assert_no_traceback, picture_png, run_tbviz, write_log

from tbviz import cli

pytestmark = pytest.mark.backend_independent  # not about the Keras backend: runs once (conftest.py)

STEPS = 12  # more than the 10 steps per image tag TensorBoard keeps by default


def test_board_serves_every_logged_epoch_and_stops_on_ctrl_c(tmp_path):
    """The board subprocess lists tbviz tags, keeps all 12 steps and serves the PNGs."""
    logdir = tmp_path / "logs"
    write_log(logdir / "activations", {"conv1": (24, 16), "outer/inner": (8, 8)}, range(STEPS))
    board = Board(logdir)
    try:
        assert board.url.startswith("http://localhost:")
        tags = board.wait_for("data/plugin/images/tags", lambda v: len(v.get("activations", {})) == 2)
        assert tags["activations"]["feature_maps/conv1"]["samples"] == 2
        assert "feature_maps/outer/inner" in tags["activations"]
        assert "activations" in json.loads(board.get("data/runs"))

        steps = json.loads(
            board.get("data/plugin/images/images?run=activations&tag=feature_maps/conv1&sample=1")
        )
        assert [s["step"] for s in steps] == list(range(STEPS))
        png = board.get("data/plugin/images/individualImage?" + steps[7]["query"])
        assert png == picture_png(24, 16, 7, 1)
    finally:
        status, out, err = board.stop()
    assert status == 0, err
    assert "Stopped." in out
    assert "Traceback" not in err


def test_board_prints_url_and_activations_link(tmp_path):
    """The board's first lines give the URL and the Images dashboard link."""
    write_log(tmp_path / "activations", {"conv1": (4, 4)}, [0])
    board = Board(tmp_path)
    try:
        second = board.readline()
        third = board.readline()
        # Nothing more comes: waiting for it is a failure that shows the output, not a hang.
        with pytest.raises(AssertionError, match=r"no line in 1 s; stdout so far: .*Press Ctrl\+C"):
            board.readline(timeout=1)
    finally:
        board.stop()
    assert board.first_line.startswith(f"TensorBoard serving {tmp_path} at {board.url} ")
    assert second == f"Feature maps: {board.url}#activations\n"
    assert third == "Press Ctrl+C to stop.\n"


def test_start_board_in_process_loads_the_log(tmp_path, tensorboard_servers):
    """start_board() can be called from Python and serves the same data."""
    import urllib.request

    write_log(tmp_path / "activations", {"conv1": (4, 4)}, range(STEPS))
    _, url = cli.start_board(
        str(tmp_path), 0, ["--load_fast=false", "--reload_task=blocking", "--reload_interval=0"]
    )
    assert len(tensorboard_servers) == 1  # shut down when the test ends
    query = "data/plugin/images/images?run=activations&tag=feature_maps/conv1&sample=0"
    with urllib.request.urlopen(url + query, timeout=10) as response:
        assert len(json.loads(response.read())) == STEPS


def test_missing_logdir_and_busy_port_are_one_line_errors(tmp_path, capsys):
    """A LOGDIR that does not exist, or a port in use: exit 2 with a message, no traceback."""
    assert cli.main(["board", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (
        f"tbviz board: error: LOGDIR must be a directory of TensorBoard logs; received "
        f"'{tmp_path / 'nope'}' (no such directory)\n"
    )
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # In a process of its own, as a user runs it: TensorBoard's data server, started
        # before the port is found taken, ends with that process.
        refused = run_tbviz("board", str(tmp_path), "--port", str(port))
    assert refused.returncode == 2 and refused.stdout == ""
    assert_no_traceback(refused)
    err = refused.stderr
    assert f"{port}" in err and "try another --port" in err
    assert err.startswith("tbviz: warning: no event files in")
