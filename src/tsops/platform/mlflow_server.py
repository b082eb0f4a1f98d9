"""The registry at scale: MLflow's own tracking server on a PostgreSQL backend store.

``tsops platform up --mlflow`` (and the tests) start it with this module; what it runs
is the command a team would run on a server of its own::

    mlflow server --backend-store-uri postgresql+psycopg://USER@HOST:5432/mlflow \\
        --artifacts-destination /srv/mlartifacts --serve-artifacts \\
        --host 127.0.0.1 --port 5000 --workers 1

Runs, registered models, versions, tags and aliases are rows in PostgreSQL; model files
and plots go through the server (``mlflow-artifacts:/`` URIs, ``--serve-artifacts``)
into ``--artifacts-destination``: a folder here, an object store (``s3://``,
``gs://``, ``wasbs://``) at scale. Clients (``tsops register``, ``tsops serve --model
models:/...``, the gate) set only ``MLFLOW_TRACKING_URI=http://HOST:PORT`` and need
neither the database's nor the object store's credentials.

The server runs in a session of its own and outlives the command that started it;
everything needed to find and stop it again is in its folder: ``port.txt`` (kept, so a
restart comes back on the same port), ``mlflow.pid``, ``mlflow.log`` and, unless
another destination is given, ``mlartifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from tsops.core.errors import TsopsError, UnavailableError
from tsops.platform.database import masked

#: seconds the server may take to answer /health: it imports MLflow twice (the CLI,
#: then the uvicorn worker), ~8 s of CPU each, and creates its tables on a new database
START_TIMEOUT = 180.0
#: seconds a SIGTERM may take before the process group is killed
STOP_TIMEOUT = 20.0
#: seconds to wait for the backend store to accept a connection
CONNECT_TIMEOUT = 10
#: tries at a backend store that refuses (one that is just starting answers on a later one)
CONNECT_ATTEMPTS = 3
PID_FILE = "mlflow.pid"
PORT_FILE = "port.txt"
LOG_FILE = "mlflow.log"
ARTIFACTS_DIR = "mlartifacts"
#: what the server's environment gets on top of ours: MLflow 3 starts a job runner (a
#: third process importing MLflow) for its GenAI jobs by default; tsops runs none
_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class MlflowServerError(TsopsError):
    """The mlflow server could not be started or stopped; the message says why."""


class BackendStoreUnavailable(UnavailableError):
    """The backend store's database did not accept a connection."""


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server`` started by :func:`start_mlflow_server`."""

    folder: Path
    port: int
    pid: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """The tracking URI clients use (``MLFLOW_TRACKING_URI``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.folder / LOG_FILE

    def stop(self) -> None:
        stop_mlflow_server(self.folder)


def mlflow_server_in(folder: Path, host: str = "127.0.0.1") -> MlflowServer:
    """The server :func:`start_mlflow_server` started from ``folder`` (from another
    process); ``MlflowServerError`` when none answers there."""
    server = _running_server(Path(folder).absolute(), host)
    if server is None:
        raise MlflowServerError(
            f"no mlflow server runs from {folder}; start one with `tsops platform up --mlflow`"
        )
    return server


def backend_store_uri(url: str) -> str:
    """``url`` as MLflow's backend store URI: a PostgreSQL URL without a driver
    (``postgresql://``, ``postgres://``) gets psycopg 3's (``postgresql+psycopg://``;
    SQLAlchemy's default for it is psycopg2, which tsops does not install)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def check_backend_store(
    uri: str, timeout: int = CONNECT_TIMEOUT, attempts: int = CONNECT_ATTEMPTS
) -> None:
    """Connect to ``uri`` once (``attempts`` tries, for a database that is just starting);
    ``BackendStoreUnavailable`` saying what to fix when it refuses. Cheaper and clearer
    than the server's own traceback seconds later."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

    connect_args = {"connect_timeout": timeout} if uri.startswith("postgresql") else {}
    try:
        engine = create_engine(uri, connect_args=connect_args, poolclass=NullPool)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise MlflowServerError(
            f"{masked(uri)} is not a backend store URL MLflow can use ({_first_line(exc)}); "
            "use postgresql+psycopg://USER[:PASSWORD]@HOST:PORT/DATABASE"
        ) from exc

    @retry(
        retry=retry_if_exception_type(SQLAlchemyError),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=True,
    )
    def probe() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        probe()
    except SQLAlchemyError as exc:
        raise BackendStoreUnavailable(
            f"the mlflow server's backend store {masked(uri)} does not accept a connection "
            f"({_first_line(exc)}): start PostgreSQL (`tsops platform up`), create the "
            "database, or fix the URL and its credentials; no server was started"
        ) from exc
    finally:
        engine.dispose()


def server_command(
    uri: str, artifacts_destination: str, *, host: str, port: int, workers: int = 1
) -> list[str]:
    """The ``mlflow server`` command line (MLflow of this interpreter's environment)."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--artifacts-destination", artifacts_destination,
        "--serve-artifacts",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip


def start_mlflow_server(
    folder: Path,
    backend_store_uri: str,
    *,
    port: int | None = None,
    artifacts_destination: str | None = None,
    host: str = "127.0.0.1",
    workers: int = 1,
    timeout: float = START_TIMEOUT,
    connect_attempts: int = CONNECT_ATTEMPTS,
) -> MlflowServer:
    """An ``mlflow server`` on ``backend_store_uri`` whose pid, port, log and (unless
    ``artifacts_destination`` names another place) artifacts are in ``folder``; returns
    once it answers ``/health``. A server already running from ``folder`` is kept.

    ``port``: default the one it had, else a free one. ``workers``: uvicorn worker
    processes (each imports MLflow; one is plenty for a team's registry traffic).
    ``connect_attempts``: tries at the backend store before it counts as refused.
    Raises ``BackendStoreUnavailable`` (the database refused) or ``MlflowServerError``
    (the server exited or did not answer in ``timeout`` s; the message has its log's end).
    """
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    running = _running_server(folder, host)
    if running is not None:
        return running

    uri = _backend_store_uri(backend_store_uri)
    check_backend_store(uri, attempts=connect_attempts)
    port = _port(folder, port, host)
    destination = artifacts_destination or str(folder / ARTIFACTS_DIR)
    command = server_command(uri, destination, host=host, port=port, workers=workers)
    log_file = folder / LOG_FILE
    with log_file.open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting on port {port}\n".encode())
        log.flush()
        # its own session: Ctrl-C in the terminal that ran `tsops platform up` does not
        # reach it, and stopping signals its whole group (the CLI and its uvicorn worker)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env={**os.environ, **_SERVER_ENV},
            start_new_session=True,
        )
    (folder / PID_FILE).write_text(f"{process.pid}\n")
    server = MlflowServer(folder, port, process.pid, host)
    try:
        _wait_until_healthy(server, process, timeout)
    except BaseException:
        stop_mlflow_server(folder)
        raise
    return server


def stop_mlflow_server(folder: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the server started from ``folder`` (SIGTERM to its process group, SIGKILL
    after ``timeout`` s); ``False`` when none was running. Its data and log stay."""
    folder = Path(folder).absolute()
    pid = _pid(folder)
    if pid is None:
        return False
    stopped = False
    if _is_mlflow_server(pid):
        _signal_group(pid, signal.SIGTERM)
        if not _gone(pid, timeout):
            _signal_group(pid, signal.SIGKILL)
            if not _gone(pid, 5.0):
                raise MlflowServerError(
                    f"the mlflow server (process group {pid}) did not stop; kill it with "
                    f"`kill -9 -- -{pid}`"
                )
        stopped = True
    (folder / PID_FILE).unlink(missing_ok=True)
    return stopped


# ----------------------------------------------------------------------------- helpers


def _backend_store_uri(url: str) -> str:
    try:
        return backend_store_uri(url)
    except Exception as exc:  # sqlalchemy's ArgumentError: not a URL at all
        raise MlflowServerError(
            f"{masked(url)} is not a backend store URL ({_first_line(exc)}); use "
            "postgresql+psycopg://USER[:PASSWORD]@HOST:PORT/DATABASE"
        ) from exc


def _port(folder: Path, port: int | None, host: str) -> int:
    saved = folder / PORT_FILE
    if port is None and saved.exists():
        port = int(saved.read_text().strip())
        if _port_open(host, port):  # someone else took it since: a new one
            port = None
    elif port is not None and _port_open(host, port):
        raise MlflowServerError(
            f"port {port} on {host} is already in use; stop what listens there or pick another port"
        )
    port = port or _free_port(host)
    saved.write_text(f"{port}\n")
    return port


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_until_healthy(server: MlflowServer, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(server.url):
        if process.poll() is not None:
            raise MlflowServerError(
                f"mlflow server exited with code {process.returncode} before answering; "
                f"the end of its log ({server.log_file}):\n{_log_tail(server.log_file)}"
                f"{_hint(server.log_file)}"
            )
        if time.monotonic() > deadline:
            raise MlflowServerError(
                f"mlflow server did not answer {server.url}/health within {timeout:.0f} s "
                f"(stopped); the end of its log ({server.log_file}):\n"
                f"{_log_tail(server.log_file)}"
            )
        time.sleep(0.2)


def _hint(log_file: Path) -> str:
    text = _log_tail(log_file, 200)
    if "out-of-date database schema" in text or "mlflow db upgrade" in text:
        return (
            "\nthe database holds an older MLflow's tables: back it up, then run "
            "`mlflow db upgrade <backend store URL>`"
        )
    return ""


def _log_tail(log_file: Path, lines: int = 15) -> str:
    try:
        with log_file.open(errors="replace") as log:
            return "".join(deque(log, maxlen=lines)).rstrip()
    except FileNotFoundError:
        return "(no log)"


def _pid(folder: Path) -> int | None:
    try:
        return int((folder / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _group(pgid: int) -> list[int] | None:
    """The live processes of the process group ``pgid`` (``None`` without /proc).
    Zombies do not count: the server's first process stays one until the process that
    started it reaps it, and that may be a pytest worker waiting for this very stop."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, _ppid, group = stat[stat.rfind(")") + 2 :].split()[:3]
        if state != "Z" and int(group) == pgid:
            members.append(int(entry.name))
    return members


def _is_mlflow_server(pgid: int) -> bool:
    """Whether the group ``pgid`` still runs the server (not processes that reused the
    number): one of its live processes is MLflow's."""
    members = _group(pgid)
    if members is None:  # no /proc: trust the pid file
        return _group_alive(pgid)
    for pid in members:
        with contextlib.suppress(OSError):
            if b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
    return False


def _group_alive(pgid: int) -> bool:
    # our own child's zombie is reaped here (a command that started and stops the server)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)
    members = _group(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _running_server(folder: Path, host: str) -> MlflowServer | None:
    pid = _pid(folder)
    if pid is None or not _is_mlflow_server(pid):
        return None
    with contextlib.suppress(FileNotFoundError, ValueError):
        port = int((folder / PORT_FILE).read_text().strip())
        server = MlflowServer(folder, port, pid, host)
        if _healthy(server.url):
            return server
    return None


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy wraps the driver's error and repeats its name: say the driver's
    exc = getattr(exc, "orig", None) or exc
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
