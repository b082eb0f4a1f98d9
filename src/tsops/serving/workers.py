"""More than one server process: load once, then fork the workers.

``tsops serve --workers N`` loads the models in one process, then forks N workers from
it. Each worker serves the same loaded models (shared copy-on-write: ``gc.freeze()``
before the fork keeps the collector from touching, hence copying, them), through the
same kserve app with ``RequestGuard`` already in front (it is added before the fork),
and starts what must not cross a fork in itself: its forecast log's writer thread (its
part files named by its own pid), its event loop, its sockets. The first process
stays as the supervisor: it forwards SIGTERM/SIGINT to the workers, waits for them to
drain (kserve's grace period), and starts a new worker when one dies unexpectedly.

Why not kserve's own ``--workers``: it starts fresh ('spawn') processes that import
kserve's web app again without tsops' request checks, get the models by pickling (the
forecast log's thread cannot be) and count ``/metrics`` each for itself.

Sockets: each worker listens on its own socket bound with ``SO_REUSEPORT`` to the same
address, so the kernel spreads new connections evenly over the workers. With one
inherited listening socket, the worker that wakes first accepts every connection
waiting (asyncio and uvloop accept in a loop), and keep-alive clients that connect at
once (a load balancer's pool, a benchmark's 16 connections) would all stay on one
worker. gRPC servers listen with ``SO_REUSEPORT`` by default, so each worker's gRPC
server shares its port the same way. Before forking, the supervisor checks that the
address is free (a plain bind) and holds it with a bound, non-listening socket.

``/metrics``: ``prometheus_client``'s multiprocess mode. Every worker writes its counters
and histograms to files in one folder and any worker's ``/metrics`` sums them all
(``MultiProcessMetrics``). prometheus_client picks how a metric stores its value when
it is imported, from ``PROMETHEUS_MULTIPROC_DIR``; ``multiprocess_metrics`` sets it and,
if the library was imported already, switches the value class, which works because
every tsops and kserve metric has labels, so its values are made at the first request,
in the worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tsops.core.errors import TsopsError

#: a worker that dies more often than this, within RESPAWN_WINDOW_SECONDS, stops the
#: server (exit 1) instead of being restarted again: something is wrong with every worker
MAX_RESPAWNS = 5
RESPAWN_WINDOW_SECONDS = 60.0
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class WorkersError(TsopsError):
    """The workers cannot be started as asked; the message says why."""


# -- how many ------------------------------------------------------------------------------


def available_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """The CPUs this process may use: its CPU affinity, capped by its cgroup's CPU quota
    (a pod's CPU limit) rounded down, at least 1 (as Go's automaxprocs: a worker more
    than the quota would be throttled, which shows as tail latency)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path, proc_cgroup: Path) -> float | None:
    """The CPU quota in cores (quota / period) of this process's cgroup, v2
    (``cpu.max``) or v1 (``cpu.cfs_quota_us``), or None when there is none."""
    own = _own_cgroup_paths(proc_cgroup)
    candidates = []
    for path in own.get("", []):  # cgroup v2: "0::/path"
        candidates.append(("v2", cgroup_root / path.lstrip("/")))
    candidates.append(("v2", cgroup_root))
    for path in own.get("cpu", []):
        candidates.append(("v1", cgroup_root / "cpu" / path.lstrip("/")))
        candidates.append(("v1", cgroup_root / "cpu,cpuacct" / path.lstrip("/")))
    candidates += [("v1", cgroup_root / "cpu"), ("v1", cgroup_root / "cpu,cpuacct")]
    for version, folder in candidates:
        try:
            if version == "v2":
                quota, period = (folder / "cpu.max").read_text().split()[:2]
                if quota == "max":
                    return None
                return int(quota) / int(period)
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
            return None if quota <= 0 else quota / period
        except (OSError, ValueError):
            continue
    return None


def _own_cgroup_paths(proc_cgroup: Path) -> dict[str, list[str]]:
    """controller -> cgroup paths of this process ("" for cgroup v2's unified line)."""
    out: dict[str, list[str]] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out.setdefault(controller, []).append(parts[2])
    return out


# -- /metrics across processes ---------------------------------------------------------------


def multiprocess_metrics(directory: Path | None = None) -> Path:
    """Put prometheus_client in multiprocess mode, its files in ``directory`` (a new
    temporary folder by default, which the caller removes); returns the folder.
    Call before any metric has a value (before the first request)."""
    if "prometheus_client" in sys.modules:
        from prometheus_client import REGISTRY

        early = _values_made_before(REGISTRY)
        if early:
            raise WorkersError(
                f"metrics {early} were counted before the workers' metrics were set up, and "
                "would not be summed across workers; start the server in a fresh process"
            )
    folder = Path(directory or tempfile.mkdtemp(prefix="tsops-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # a previous server's counts are not ours
        stale.unlink()
    os.environ[METRICS_ENV] = str(folder)
    if "prometheus_client" in sys.modules:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()
    return folder


def end_multiprocess_metrics(folder: Path) -> None:
    """Undo ``multiprocess_metrics`` for a folder it made, and remove the folder: a
    process that goes on after the server (a program or test calling ``main``) must not
    hand the variable to the processes it starts next, whose metrics would then look for
    a folder that is gone."""
    if os.environ.get(METRICS_ENV) == str(folder):
        del os.environ[METRICS_ENV]
        if "prometheus_client" in sys.modules:
            from prometheus_client import values

            values.ValueClass = values.get_value_class()
    shutil.rmtree(folder, ignore_errors=True)


def _values_made_before(registry) -> list[str]:
    """Metrics in ``registry`` holding a value of the single-process kind (a labelled
    metric's values are its children's; a histogram's, its sum)."""
    from prometheus_client.metrics import MetricWrapperBase

    early = []
    for metric in list(registry._collector_to_names):  # no public list of metrics
        if not isinstance(metric, MetricWrapperBase):
            continue  # process, platform, gc collectors: they hold no values
        labelled = metric._metrics if metric._labelnames else None
        holders = list(labelled.values()) if labelled is not None else [metric]
        for holder in holders:
            value = getattr(holder, "_value", None) or getattr(holder, "_sum", None)
            if value is not None and not getattr(value, "_multiprocess", False):
                early.append(getattr(metric, "_name", repr(metric)))
                break
    return early


class MultiProcessMetrics:
    """ASGI middleware answering ``GET /metrics`` with every worker's metrics summed
    (kserve's own handler would show only the worker that happens to answer)."""

    def __init__(self, app, directory: Path):
        self.app = app
        self.directory = str(directory)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/metrics":
            await self.app(scope, receive, send)
            return
        from prometheus_client import CollectorRegistry, exposition, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        accept = dict(scope["headers"]).get(b"accept", b"").decode()
        encoder, content_type = exposition.choose_encoder(accept)
        body = encoder(registry)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# -- sockets -------------------------------------------------------------------------------


def _address(host: str, port: int) -> tuple[int, tuple]:
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, address


def reserve_port(host: str, port: int, what: str) -> socket.socket:
    """Check ``host:port`` is free (nobody listens there, SO_REUSEPORT or not), then hold
    it with a bound socket the workers can share; close it when the server ends."""
    family, address = _address(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise WorkersError(
                f"cannot listen for {what} on {host}:{port} ({exc.strerror}); stop what "
                "listens there or choose another port"
            ) from exc
    held = socket.socket(family, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    held.bind(address)
    return held


def worker_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening socket of this worker's own on ``host:port`` (SO_REUSEPORT)."""
    family, address = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit it: without, a response's header and body writes
    # wait on the client's delayed ACK (~40 ms a request). uvloop sets it on the
    # listening sockets it binds itself, not on one it is given.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(address)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


# -- the supervisor --------------------------------------------------------------------------


def run_workers(count: int, work: Callable[[int], None], grace_seconds: float) -> int:
    """Fork ``count`` workers, each running ``work(index)``; return the exit code once
    all have ended. SIGTERM/SIGINT go on to the workers; one still running
    ``grace_seconds`` later is killed. A worker that dies on its own is replaced (with
    the same index), up to ``MAX_RESPAWNS`` within ``RESPAWN_WINDOW_SECONDS``."""
    children: dict[int, int] = {}
    stopping = False
    failed = False
    deaths: deque[float] = deque()

    def stop_all(signum: int, _frame=None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            signal.signal(signal.SIGALRM, kill_all)
            signal.alarm(max(1, math.ceil(grace_seconds)))
        for pid in list(children):
            _signal(pid, signal.SIGTERM)

    def kill_all(_signum: int, _frame=None) -> None:
        for pid in list(children):
            _log(f"worker {pid} still running {grace_seconds:g} s after SIGTERM: killed", True)
            _signal(pid, signal.SIGKILL)

    def spawn(index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            os._exit(_worker_main(work, index, supervisor))
        children[pid] = index
        _log(f"worker {index} started: pid {pid}")

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for index in range(count):
        spawn(index)
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            failed |= code != 0
            continue
        _log(f"worker {pid} exited unexpectedly (exit code {code}); starting another", True)
        now = time.monotonic()
        deaths.append(now)
        while deaths and now - deaths[0] > RESPAWN_WINDOW_SECONDS:
            deaths.popleft()
        if len(deaths) > MAX_RESPAWNS:
            _log(
                f"{len(deaths)} workers died within {RESPAWN_WINDOW_SECONDS:g} s: stopping "
                "the server (see the workers' errors above)",
                True,
            )
            failed = True
            stop_all(signal.SIGTERM)
            continue
        spawn(index)
    signal.alarm(0)
    return 1 if failed else 0


def _worker_main(work: Callable[[int], None], index: int, supervisor: int) -> int:
    """In the forked worker: the exit code of ``work(index)``; never returns to the
    supervisor's code (the caller ``os._exit``s)."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(supervisor)
        work(index)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _die_with_parent(supervisor: int) -> None:
    """SIGTERM this worker when the supervisor dies (killed with SIGKILL, say): a worker
    must not serve on without it. Linux only; elsewhere workers are left to be ended."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _log(message: str, problem: bool = False) -> None:
    from kserve.logging import logger

    (logger.warning if problem else logger.info)("tsops serve: %s", message)
