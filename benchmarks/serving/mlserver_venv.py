"""MLServer + mlserver-mlflow in their own venv, and a model repository that serves a
tsops model with the stock ``mlserver_mlflow.MLflowRuntime`` (what KServe's
``modelFormat: mlflow`` runs): no shim, the registered model as it is.

mlserver 1.7.1 pins a fastapi below what kserve 0.21 needs, so MLServer cannot live in
requirements.lock; ``requirements-mlserver.txt`` pins it with the model's runtime
packages at the lock's versions, and ``requirements-mlserver.lock`` (``make lock``) is
what gets installed: every package pinned with its sha256, as ``make install`` does.
``make test`` makes the venv, so the MLServer tests run there too. Standard library
only: runs on any Python 3.11.

    python3 benchmarks/serving/mlserver_venv.py            # make/refresh the venv (minutes, once)
    python3 benchmarks/serving/mlserver_venv.py --serve models:/m3-monthly@champion \\
        --name m3-monthly --port 8080                      # then serve a model with it
    curl -s localhost:8080/invocations -H 'content-type: application/json' \\
        -d '{"dataframe_records": [{"unique_id": "N1402"}], "params": {"h": 6}}'

``--serve`` takes a ``models:/`` reference (with MLFLOW_TRACKING_URI set, e.g.
``sqlite:///$PWD/mlflow.db``) or a local MLflow model folder (``tsops export``).
``run.py`` imports ``ensure`` and ``write_repository``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-mlserver.lock"
DEFAULT_VENV = HERE / ".venv-mlserver"
#: mlserver-mlflow's runtime, unchanged
RUNTIME = "mlserver_mlflow.MLflowRuntime"


def ensure(venv: Path = DEFAULT_VENV, requirements: Path = REQUIREMENTS) -> Path:
    """``venv`` made from ``requirements`` unless it already is (a sha256 marker);
    returns its ``mlserver`` executable."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    marker = venv / ".requirements.sha256"
    mlserver = venv / "bin" / "mlserver"
    if marker.exists() and marker.read_text().strip() == digest and mlserver.exists():
        return mlserver
    base = getattr(sys, "_base_executable", None) or shutil.which("python3")
    if base is None:
        raise SystemExit("no python3 on PATH to make MLServer's venv with; install Python 3.11")
    print(f"creating {venv} (MLServer's own venv)", flush=True)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # uv from the project's .venv when there is one (seconds from its cache), else pip
    uv = shutil.which("uv") or next(
        (str(c) for c in (HERE.parents[1] / ".venv" / "bin" / "uv",) if c.exists()), None
    )
    if uv:
        # bytecode compiled once here, not by every MLServer start (see the Makefile)
        install = [uv, "pip", "sync", "--quiet", "--compile-bytecode", "--python", python]
        install.append("--require-hashes")
    else:
        install = [python, "-m", "pip", "install", "--quiet", "--require-hashes", "-r"]
    subprocess.run([*install, str(requirements)], check=True)
    marker.write_text(digest + "\n")
    return mlserver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_repository(
    repo: Path,
    name: str,
    model_uri: str,
    http_port: int,
    *,
    host: str = "127.0.0.1",
    parallel_workers: int | None = None,
) -> Path:
    """An MLServer model repository at ``repo``: ``settings.json`` (server) and
    ``<name>/model-settings.json`` (the stock MLflow runtime on ``model_uri``).
    gRPC and metrics get free ports, so several servers can run side by side.
    ``parallel_workers=0`` runs inference in the server process (MLServer's default
    is one separate worker process)."""
    (repo / name).mkdir(parents=True, exist_ok=True)
    settings: dict = {
        "debug": False,
        "host": host,
        "http_port": http_port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (repo / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    model = {"name": name, "implementation": RUNTIME, "parameters": {"uri": model_uri}}
    (repo / name / "model-settings.json").write_text(json.dumps(model, indent=2) + "\n")
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--serve", metavar="MODEL_URI", help="models:/... or a model folder")
    parser.add_argument("--name", help="the model's name in V2 paths (default: from the URI)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    mlserver = ensure(args.venv)
    print(f"MLServer: {mlserver}", flush=True)
    if not args.serve:
        return
    uri = args.serve
    if not uri.startswith("models:/"):
        uri = str(Path(uri).resolve())
        if not (Path(uri) / "MLmodel").exists():
            raise SystemExit(f"{args.serve} is not an MLflow model folder (no MLmodel file)")
    elif not os.environ.get("MLFLOW_TRACKING_URI"):
        raise SystemExit(
            f"{uri} names a registry: set MLFLOW_TRACKING_URI (e.g. sqlite:///$PWD/mlflow.db)"
        )
    name = args.name or uri.rstrip("/").split("/")[-1].split("@")[0]
    repo = write_repository(
        Path(tempfile.mkdtemp(prefix="mlserver-")), name, uri, args.port, host=args.host
    )
    print(f"serving {uri} as {name} on http://{args.host}:{args.port} (repository {repo})")
    os.execv(str(mlserver), [str(mlserver), "start", str(repo)])


if __name__ == "__main__":
    main()
