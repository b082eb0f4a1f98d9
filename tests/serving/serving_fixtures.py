"""A small trained model as an MLflow model folder, and a real model server around it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import TINY_MODEL
from tsops.core.config import parse_model_config
from tsops.pipeline.ingest import load_source
from tsops.pipeline.selection import Selection
from tsops.pipeline.train import save_trained, spec_of, train
from tsops.pipeline.validate import check_frame
from tsops.registry.pyfunc import save_pyfunc


def build_model_dir(tmp: Path) -> Path:
    """Six M3 monthly series, a median of seasonal naive and Theta, saved as a pyfunc."""
    config = parse_model_config(
        TINY_MODEL.replace("  ets: {kind: ets}\n", ""), expected_name="tiny"
    )
    raw = load_source(config.source, config.freq)
    df = check_frame(raw, freq=config.freq, min_length=config.min_length)
    selection = Selection("median_ensemble", ["seasonal_naive", "theta"])
    fitted = train(df, config, selection, n_jobs=1)
    spec = spec_of(config, selection, df)
    save_trained(fitted, spec, tmp / "trained")
    out = tmp / "mlmodel"
    save_pyfunc(tmp / "trained", spec, sorted(df["unique_id"].unique()), out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m tsops.serving`` as a child process on 127.0.0.1."""

    def __init__(self, args: list[str], log_dir: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.output = log_dir.parent / f"server-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "tsops.serving",
            "--http_port",
            str(self.port),
            "--forecast_log_dir",
            str(log_dir),
            "--max_body_bytes",
            "200000",
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
                if httpx.get(f"{self.url}/v2/models/{model}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
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
