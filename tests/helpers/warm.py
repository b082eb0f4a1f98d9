"""A warm ``tsops``: the tests' ``tsops`` processes forked from one that has imported
everything, instead of each importing MLflow, pandas and statsmodels anew.

A ``tsops`` process spends 5-7 s of CPU importing before its command starts (MLflow
alone is ~4 s) and the command itself often takes a tenth of that; the story and
monitoring-loop tests run dozens, directly, from workflow scripts in bash, and as DVC's
stage commands. Here one server process per test run (the first pytest-xdist worker
to need it starts it, the others join it) imports once; a small
``tsops`` client on PATH hands it its arguments, environment, working directory and
standard streams (the file descriptors themselves), and the server forks a child
that runs ``tsops.cli.app`` exactly as the installed console script does, in that
directory, with that environment, writing to those streams. The client forwards
signals to the child and exits with its exit code. So a command still runs in a process
of its own, sees only what a fresh one would, and exits like one: only the imports
are shared. Every fork starts from the same state (the server runs no command itself).
``python()`` is the same for ``python -m tsops.serving``, the model server (~10 s of
imports before it answers).

``TSOPS_TEST_COLD=1`` runs every command in a fresh interpreter instead; so does the
client whenever the server cannot be reached.

Run as ``python -m tests.helpers.warm SOCKET``: it prints ``ready`` once imported.
The server, the client script it writes and their start live in this one module (a
little over 400 lines) so that the protocol between them is read in one place.
"""

from __future__ import annotations

import array
import atexit
import builtins
import contextlib
import importlib
import io
import json
import os
import pkgutil
import runpy
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path

#: imported lazily inside tsops' commands, so walking tsops' modules misses them
HEAVY = (
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.tracking",
    "mlflow.artifacts",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "alembic",
    "sqlalchemy",
    "pandas",
    "pyarrow.parquet",
    "statsmodels.api",
    "statsmodels.tsa.api",
    "scipy.stats",
    "joblib",
    "matplotlib",
    "evidently",
    "lightgbm",
    "httpx",
    "ruamel.yaml",
    "pydantic_settings",
)

COLD_ENV = "TSOPS_TEST_COLD"


# -- the server ------------------------------------------------------------------------


def preload() -> None:
    """Import tsops' modules and the libraries its commands import when they run.
    Modules that fail to import are skipped: the command that needs one fails in the
    child just as it would in a fresh process."""
    import tsops

    for name in HEAVY:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    for module in pkgutil.walk_packages(tsops.__path__, "tsops."):
        if module.name.endswith("__main__"):
            continue
        with contextlib.suppress(Exception):
            importlib.import_module(module.name)


def serve(path: str) -> None:
    preload()
    if threading.active_count() != 1:
        # forking a process with other threads could copy a lock one of them holds
        names = [t.name for t in threading.enumerate()]
        print(f"not warm: threads {names} started while importing", flush=True)
        print(
            f"tsops (warm test server): threads {names} started while importing; "
            "the tests run tsops cold",
            file=sys.stderr,
        )
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    server.settimeout(5)
    parent = os.getppid()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while os.getppid() == parent:  # the test process is gone: so is the server
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        try:
            request, fds = _receive(conn)
        except (OSError, ValueError):
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            server.close()
            _child(conn, request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        conn.close()
    # ended without the test process's cleanup: leave no folder behind
    shutil.rmtree(Path(path).parent, ignore_errors=True)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    size_data, ancillary, _, _ = conn.recvmsg(4, socket.CMSG_LEN(3 * 4))
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    try:
        (size,) = struct.unpack("!I", size_data)
        payload = b""
        while len(payload) < size:
            chunk = conn.recv(size - len(payload))
            if not chunk:
                raise ValueError("client went away")
            payload += chunk
        if len(fds) != 3:
            raise ValueError("expected stdin, stdout and stderr")
        return json.loads(payload), list(fds)
    except (OSError, ValueError, struct.error):
        for fd in fds:
            os.close(fd)
        raise ValueError("a bad request") from None


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the client's process, run the command, exit."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(
                sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler
            )
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _fresh_streams()
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        conn.sendall(f"pid {os.getpid()}\n".encode())
        if request.get("module"):
            code = _as_interpreter_exit(partial(_run_module, request["module"], request["argv"]))
        else:
            _as_the_console_script(request["main"], request["argv"][1:])
            code = _as_interpreter_exit(_run_app)
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(Exception):
            conn.sendall(f"exit {code}\n".encode())
        os._exit(code)


def _as_the_console_script(script: str, args: list[str]) -> None:
    """``__main__`` and ``sys.argv`` as when the installed ``tsops`` script runs: click
    names the program after them, and worker processes (joblib, multiprocessing)
    re-import ``__main__`` from its file."""
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__spec__ = None
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [script, *args]


def _fresh_streams() -> None:
    """sys.stdin/stdout/stderr on the received descriptors, buffered as a fresh
    interpreter would buffer them (line by line on a terminal)."""
    # they live as long as the process: no context manager
    stdin, stdout, stderr = (
        open(fd, mode, closefd=False)  # noqa: SIM115
        for fd, mode in ((0, "rb"), (1, "wb"), (2, "wb"))
    )
    sys.stdin = io.TextIOWrapper(stdin, encoding="utf-8")
    sys.stdout = io.TextIOWrapper(stdout, encoding="utf-8", line_buffering=os.isatty(1))
    sys.stderr = io.TextIOWrapper(
        stderr, encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def _run_app() -> None:
    """What the installed console script does."""
    from tsops.cli import app

    sys.exit(app())


def _run_module(module: str, args: list[str]) -> None:
    """What ``python -m module args`` does once the interpreter is up."""
    sys.argv = ["-m", *args]  # runpy puts the module's file in place of "-m"
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _as_interpreter_exit(main: Callable[[], None]) -> int:
    """Run ``main`` as the interpreter runs a program: its exit code, a traceback and
    1 for an uncaught exception, then threads joined and atexit functions run."""
    try:
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads, as at exit
        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = _exit_code(exc.code)
    return code


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


# -- the client and its start ------------------------------------------------------------

CLIENT = """\
#!{python} -S
# For the tests: `tsops ARGS`, or `tsops-python -m MODULE ARGS`, run in a child of the
# warm server at {socket} (tests/helpers/warm.py); the installed tsops, or python, when
# the server is not there.
import array, json, os, signal, socket, struct, sys

request = {{"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd()}}
if os.path.basename(sys.argv[0]) == "tsops-python":
    fresh = [{python!r}, *sys.argv[1:]]
    if sys.argv[1:2] == ["-m"] and len(sys.argv) > 2:
        request.update(module=sys.argv[2], argv=sys.argv[3:])
    else:
        os.execv(fresh[0], fresh)
else:
    fresh = [{tsops!r}, *sys.argv[1:]]
    request.update(main={tsops!r})

def cold():
    os.execv(fresh[0], fresh)

if os.environ.get({cold!r}):
    cold()
try:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect({socket!r})
except OSError:
    cold()
payload = json.dumps(request).encode()
conn.sendmsg(
    [struct.pack("!I", len(payload))],
    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))],
)
conn.sendall(payload)
reader = conn.makefile("r")
pid = None
forwarded = None
def forward(signum, frame):
    global forwarded
    if pid is None:
        sys.exit(128 + signum)
    forwarded = signum
    os.kill(pid, signum)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, forward)
code = None
for line in reader:
    word, _, value = line.strip().partition(" ")
    if word == "pid":
        pid = int(value)
    elif word == "exit":
        code = int(value)
        break
if code is None and forwarded:
    # the child was ended by the signal it was sent: end the same way
    signal.signal(forwarded, signal.SIG_DFL)
    os.kill(os.getpid(), forwarded)
if code is None:
    sys.stderr.write("tsops (warm test server): the command ended without an exit code\\n")
    code = 1
sys.exit(code)
"""


class Warm:
    """The warm server of this process and the folder with its ``tsops`` client."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.shims = folder / "bin"
        self.shims.mkdir(exist_ok=True)
        self.socket = str(folder / "tsops.sock")
        self.log = folder / "server.log"
        root = Path(__file__).resolve().parents[2]
        self._log = open(self.log, "w")  # noqa: SIM115 - lives as long as the server
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.warm", self.socket],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=root,
        )
        client = self.shims / "tsops"
        python = self.shims / "tsops-python"
        client.write_text(
            CLIENT.format(
                python=sys.executable,
                socket=self.socket,
                tsops=str(Path(sys.executable).parent / "tsops"),
                cold=COLD_ENV,
            )
        )
        client.chmod(0o755)
        python.symlink_to(client.name)
        self.ready = False

    def wait(self, timeout: float = 300) -> bool:
        """Whether the server came up (else the client runs cold commands)."""
        waiting = not self.ready and self.proc.poll() is None and self.proc.stdout
        if waiting and select.select([self.proc.stdout], [], [], timeout)[0]:
            self.ready = self.proc.stdout.readline().strip() == "ready"
            # what the other workers of the run wait for (Joined.wait)
            (self.folder / ("ready" if self.ready else "not-ready")).touch()
        return self.ready

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class Joined:
    """The warm server another pytest-xdist worker of this run started (one per run: its
    imports are seconds of CPU), used through the client in its folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.shims = folder / "bin"
        self.ready = False

    def wait(self, timeout: float = 300) -> bool:
        """Whether that server came up; False when it did not, or has ended since."""
        import time

        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            if (self.folder / "not-ready").exists() or not self.folder.exists():
                return False
            self.ready = (self.folder / "ready").exists()
            if not self.ready:
                time.sleep(0.1)
        return self.ready and (self.folder / "tsops.sock").exists()


_warm: Warm | Joined | None = None


def _start_or_join() -> Warm | Joined:
    """The server of this process, or of this test run when pytest-xdist runs it
    (PYTEST_XDIST_TESTRUNUID, the same in every worker): the first worker to get here
    starts it, the others join it. It ends with the worker that started it, which
    xdist ends with the others at the end of the run; a client that finds it gone runs
    its command cold."""
    import tempfile

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        started = Warm(Path(tempfile.mkdtemp(prefix="tsops-warm-")))
        atexit.register(started.stop)
        return started
    from filelock import FileLock

    folder = Path(tempfile.gettempdir()) / f"tsops-warm-{run}"
    with FileLock(f"{folder}.lock"):
        if folder.exists():
            return Joined(folder)
        started = Warm(folder)
    atexit.register(started.stop)
    atexit.register(lambda: Path(f"{folder}.lock").unlink(missing_ok=True))
    return started


def python() -> str:
    """The Python to run ``python -m tsops.serving`` (or any ``-m`` module of tsops)
    with: warm when the tests' warm server is up, this interpreter otherwise."""
    shims = shim_dir()
    return str(shims / "tsops-python") if shims is not None else sys.executable


def shim_dir(start: bool = True) -> Path | None:
    """The folder to put first on PATH for warm ``tsops`` commands, starting the server
    on first use (once per process) if ``start``; None when cold commands were asked
    for, or the server is not started."""
    global _warm
    if os.environ.get(COLD_ENV) or (_warm is None and not start):
        return None
    if _warm is None:
        _warm = _start_or_join()
    return _warm.shims if _warm.wait() else None


if __name__ == "__main__":
    serve(sys.argv[1])
