"""A real model server around the test model folder (``build_model_dir``, from
``tests.helpers.tiny``; conftest's ``tiny_model_dir`` builds it once per run)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.helpers import warm
from tests.helpers.http import http
from tests.helpers.tiny import build_model_dir

__all__ = ["Server", "build_model_dir", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m tsops.serving`` as a child process on ``host`` (127.0.0.1)."""

    def __init__(
        self, args: list[str], log_dir: Path, env: dict | None = None, host: str = "127.0.0.1"
    ):
        self.port = free_port()
        self.host = host
        self.url = f"http://{host}:{self.port}"
        self.log_dir = log_dir
        self.output = log_dir.parent / f"server-{self.port}.log"
        cmd = [
            warm.python(),
            "-m",
            "tsops.serving",
            "--http_host",
            host,
            "--http_port",
            str(self.port),
            "--forecast_log_dir",
            str(log_dir),
            "--max_body_bytes",
            "200000",
            # one process unless a test asks for workers (the default is one per CPU)
            *([] if "--workers" in args else ["--workers", "1"]),
            *args,
        ]
        self._out = open(self.output, "w")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            cmd, stdout=self._out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def wait_ready(self, model: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.output.read_text()[-3000:]}")
            try:
                if http().get(f"{self.url}/v2/models/{model}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready:\n{self.output.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode
