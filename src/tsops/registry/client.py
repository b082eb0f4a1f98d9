"""Connecting to the MLflow tracking and registry store.

A command builds one ``MlflowClient`` with :func:`connect` and passes it to every
registry function it calls. The store is named explicitly: the ``MLFLOW_TRACKING_URI``
that ``tsops.core.settings`` read, or, when that is unset, the embedded SQLite file
``mlflow.db`` with its artifact folder ``mlartifacts/`` at the repository root.

Nothing here touches process-wide state: MLflow's global tracking URI
(``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` to every child
process) and ``os.environ`` stay as they were, so two stores can be used side by side
and a test's temporary store never leaks into the next command.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import url2pathname

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from tsops.core.errors import TsopsError, UnavailableError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
#: seconds one reachability probe may take; MLflow's own client waits minutes (it
#: retries with backoff), a server that is down should fail a command fast
PING_TIMEOUT = 10.0


class RegistryError(TsopsError):
    """The registry refused: no such model, version, alias or release."""


class RegistryUnavailable(UnavailableError):
    """The tracking store did not answer (``UNAVAILABLE_EXIT``: running again later may
    succeed)."""


def tracking_uri(root: Path, configured: str | None = None) -> str:
    """``configured`` (``Settings.mlflow_tracking_uri``), else the embedded store at ``root``."""
    return configured or f"sqlite:///{(Path(root) / DB_FILE).resolve()}"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside the database for a SQLite
    store (MLflow's default, ``./mlruns``, would follow the current directory); a
    tracking server decides its own (``None``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    database = Path(url2pathname(parsed.path.removeprefix("/")) if parsed.path else DB_FILE)
    return (database.resolve().parent / ARTIFACTS_DIR).as_uri()


def connect(
    root: Path, configured: str | None = None, *, timeout: float = PING_TIMEOUT
) -> MlflowClient:
    """An ``MlflowClient`` on ``tracking_uri(root, configured)``, checked to answer.

    Raises ``RegistryUnavailable`` when the store cannot be reached.
    """
    from mlflow import MlflowClient

    uri = tracking_uri(root, configured)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    _check_reachable(client, uri, timeout)
    return client


def _check_reachable(client: MlflowClient, uri: str, timeout: float) -> None:
    """A tracking server must answer its ``/health`` endpoint within ``timeout`` (three
    tries), then accept a request; a local store must open. MLflow's HTTP client takes
    its timeout and retries only from environment variables (read at each request), so
    the server is first probed with a plain request that takes them as arguments."""
    from mlflow.exceptions import MlflowException

    server = urlparse(uri).scheme in ("http", "https")

    def probe() -> None:
        if server:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                pass
        else:
            client.search_experiments(max_results=1)

    try:
        retry(
            retry=retry_if_exception_type(Exception),
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.5, max=4),
            reraise=True,
        )(probe)()
    except Exception as exc:
        raise RegistryUnavailable(
            f"MLflow tracking store {uri} is not reachable ({_reason(exc)}). Start the "
            "server, fix MLFLOW_TRACKING_URI, or unset it to use the embedded SQLite store; "
            "nothing was read from or written to the registry."
        ) from exc
    if not server:
        return
    try:
        # the server answered; this says whether it lets tsops in (credentials, path)
        client.search_experiments(max_results=1)
    except MlflowException as exc:
        raise RegistryError(
            f"the MLflow server at {uri} answered but refused a request ({_reason(exc)}): "
            "check MLFLOW_TRACKING_URI's path and the credentials MLflow reads "
            "(MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and _PASSWORD); nothing "
            "was read from or written to the registry."
        ) from exc


def _reason(exc: Exception) -> str:
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of the experiment ``name``, created (artifacts per ``artifact_location``)
    if it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))
