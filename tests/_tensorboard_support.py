"""A real TensorBoard server for the tests: in this process (and shut down), or as the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from _cli_support import quiet_env
from tensorboard import program

TENSORBOARD = str(Path(sys.executable).with_name("tensorboard"))


class Server:
    """``tensorboard --logdir LOGDIR`` with `flags`, served from a thread of this process.

    The data are loaded before the constructor returns (``--reload_task=blocking``);
    `close` stops the server. No sampling flag unless the test gives one.
    """

    def __init__(self, logdir, *flags: str) -> None:
        self._servers = []

        def make_server(app, server_flags):
            server = program.WerkzeugServer(app, server_flags)
            self._servers.append(server)
            return server

        board = program.TensorBoard(server_class=make_server)
        board.configure(argv=[None, "--logdir", os.fspath(logdir), "--port", "0",
                              "--reload_interval=0", "--reload_task=blocking", *flags])  # fmt: skip
        self.url = board.launch().rstrip("/")
        self.flags = board.flags

    def get(self, path: str) -> tuple[int, dict, bytes]:
        """``(status, headers, body)`` of a GET; HTTP errors are returned, not raised."""
        return fetch(self.url + path)

    def json(self, path: str):
        status, _, body = self.get(path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


def fetch(url: str, timeout: float = 60) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class CommandLineServer:
    """The ``tensorboard`` command itself, as a user types it, in a subprocess."""

    def __init__(self, logdir, *flags: str, timeout: float = 120) -> None:
        self.process = subprocess.Popen(
            [TENSORBOARD, "--logdir", os.fspath(logdir), "--port", "0", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=quiet_env(),
        )  # fmt: skip
        lines: list[str] = []
        found = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                lines.append(line)
                if re.search(r"TensorBoard \S+ at http://", line):
                    found.set()
            found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        found.wait(timeout)
        match = next((re.search(r"at (http://\S+?)/? ", line) for line in lines if " at http://" in line), None)
        if match is None:
            self.close()
            raise AssertionError("tensorboard printed no URL:\n" + "".join(lines[-30:]))
        self.url = match.group(1).rstrip("/")
        self.output = lines

    def get(self, path: str) -> tuple[int, dict, bytes]:
        return fetch(self.url + path)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=30)  # the output ends with the process
        self.process.stdout.close()
