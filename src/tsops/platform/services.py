"""PostgreSQL and Redis as local processes on 127.0.0.1, for tests, ``make`` and people.

The servers are Debian's ``postgresql`` and ``redis-server`` packages (``make
platform-deps`` installs them). Each server lives in a folder of its own and keeps
running after the Python process that started it exits (``tsops platform up`` starts
them, ``tsops platform down`` stops them from another process), so everything needed
to find and stop it again is written into that folder:

- PostgreSQL: a new cluster (trust authentication for the superuser ``tsops``,
  listening on 127.0.0.1 only, no Unix socket), then ``pg_ctl start|stop|restart``.
  The cluster is a copy of one ``initdb`` made once per machine, user and PostgreSQL
  version (``$TMPDIR/tsops-pg-template-*``, never started): a copy takes a third of
  initdb's time, and the tests start several servers per run.
  PostgreSQL refuses to run as root, so when we are root its commands run as the
  ``postgres`` user (``runuser``), and its data folder is moved to a place that user
  can reach when ``folder`` is not (pytest's temporary folders are root-only).
- Redis: ``redis-server --daemonize yes`` with a pid file, no persistence.

Ports are free ones picked by the kernel unless given; ``port.txt`` in the folder
remembers them, so a restart comes back on the same port.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tsops.core.errors import UnavailableError

#: the database superuser every server is made with (trust authentication: local use only)
SUPERUSER = "tsops"
#: the operating-system user PostgreSQL runs as when we are root
_PG_OS_USER = "postgres"
#: initdb's options: superuser tsops, trust authentication (local use only), UTF-8, the
#: C locale (byte order: the same sort everywhere); no fsync of a cluster just made
_INITDB_OPTIONS = ("-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
#: seconds a server may take to accept connections
_START_TIMEOUT = 30.0


class ServiceError(UnavailableError):
    """A local server could not be found, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _remembered_port(folder: Path, port: int | None) -> int:
    saved = folder / "port.txt"
    if port is None and saved.exists():
        port = int(saved.read_text().strip())
    port = port or free_port()
    saved.write_text(f"{port}\n")
    return port


# ----------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """The folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``, ``postgres``):
    ``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += [
        Path(p)
        for p in sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
            reverse=True,
        )
    ]
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise ServiceError(
        "PostgreSQL's server programs (initdb, pg_ctl) were not found (looked at "
        "`pg_config --bindir` and /usr/lib/postgresql/*/bin); install them with "
        "`make platform-deps` (Debian: apt-get install postgresql)"
    )


def _as_root() -> bool:
    return os.geteuid() == 0


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` run as the user PostgreSQL runs as (``postgres`` when we are root)."""
    return ["runuser", "-u", _PG_OS_USER, "--", *command] if _as_root() else command


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can walk down to ``path`` (every ancestor
    searchable by others)."""
    for part in [path, *path.parents]:
        if part.exists() and not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


@dataclass
class PostgresServer:
    """A PostgreSQL server in ``folder`` (see the module docstring)."""

    folder: Path
    port: int
    bindir: Path
    durable: bool = True

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``postgres`` database as the superuser."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    @property
    def data_dir(self) -> Path:
        link = self.folder / "pgdata"
        return link.resolve() if link.is_symlink() else link

    @property
    def log_file(self) -> Path:
        # next to the data: the server (the postgres user when we are root) writes it
        return (self.data_dir.parent if self._moved else self.folder) / "postgres.log"

    @property
    def _moved(self) -> bool:
        return (self.folder / "pgdata").is_symlink()

    def _command(self, program: str, *args: str) -> list[str]:
        """One of PostgreSQL's programs, as the user the server runs as."""
        return _as_server_user([str(self.bindir / program), *args])

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._execute(self._command(program, *args), check)

    def _execute(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise ServiceError(
                f"`{' '.join(command)}` failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}\n"
                f"see {self.log_file} for the server's log"
            )
        return done

    def _options(self) -> str:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=''",
            "-c max_connections=200",
        ]
        if not self.durable:  # throwaway servers (tests): no flush to disk, ~10x faster DDL
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        return " ".join(options)

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and _port_open(self.port)

    def start(self) -> None:
        """Start the server (after ``stop``); waits until it accepts connections."""
        if self.running():
            return
        self._run(
            "pg_ctl", "start", "-w", "-t", str(int(_START_TIMEOUT)), "-D", str(self.data_dir),
            "-l", str(self.log_file), "-o", self._options(),
        )  # fmt: skip
        _wait_for_port(self.port, f"PostgreSQL (log: {self.log_file})")

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed); its data stays."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir), check=False)

    def restart(self) -> None:
        """Stop and start again on the same port (clients see their connections drop)."""
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its data (the folder it was moved to as well)."""
        self.stop()
        for path in self._paths():
            shutil.rmtree(path, ignore_errors=True)

    def _paths(self) -> list[Path]:
        return [self.data_dir.parent, self.folder] if self._moved else [self.folder]

    def remove_when_gone(self, owner_pid: int) -> None:
        """Stop the server and delete its data once process ``owner_pid`` has exited,
        however it exits (a test run killed mid-way leaves no server behind)."""
        _when_gone(
            owner_pid,
            self._command("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data_dir)),
            self._paths(),
        )

    def create_database(self, name: str, template: str = "template1") -> str:
        """Create the database ``name`` (an empty copy of ``template``) and return its URL."""
        import psycopg
        from psycopg import sql

        # FILE_COPY checkpoints twice: cheap without fsync, ~10x WAL_LOG's time with it
        strategy = sql.SQL("WAL_LOG" if self.durable else "FILE_COPY")
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres", autocommit=True
        ) as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY {}").format(
                    sql.Identifier(name), sql.Identifier(template), strategy
                )
            )
        return self.database_url(name)

    def _init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.folder / "pgdata"
        if _as_root():
            pg_user = pwd.getpwnam(_PG_OS_USER)
            if _reachable_by_others(self.folder):
                data.mkdir()
            else:  # e.g. pytest's /tmp/pytest-of-root (mode 700): data in a folder it can reach
                moved = Path(tempfile.mkdtemp(prefix="tsops-pg-"))
                os.chmod(moved, 0o755)
                os.chown(moved, pg_user.pw_uid, pg_user.pw_gid)
                (moved / "pgdata").mkdir()
                data.symlink_to(moved / "pgdata")
            for path in (self.data_dir, self.data_dir.parent):
                os.chown(path, pg_user.pw_uid, pg_user.pw_gid)
            # the log is written by the server, as the postgres user
            self.log_file.touch()
            os.chown(self.log_file, pg_user.pw_uid, pg_user.pw_gid)
        else:
            data.mkdir()
        os.chmod(self.data_dir, 0o700)
        # a copy of a cluster initdb made once (initdb costs ~1 s of CPU; a copy a third)
        self._execute(_as_server_user(["cp", "-a", f"{self._template()}/.", str(self.data_dir)]))

    def _template(self) -> Path:
        """An empty cluster as ``initdb`` makes it with tsops' options, made once per
        machine, user and PostgreSQL version, in the temporary folder (never started)."""
        key = hashlib.sha256(f"{self.bindir}|{' '.join(_INITDB_OPTIONS)}".encode()).hexdigest()
        owner = _PG_OS_USER if _as_root() else str(os.geteuid())
        template = Path(tempfile.gettempdir()) / f"tsops-pg-template-{owner}-{key[:12]}"
        if (template / "PG_VERSION").exists():
            return template
        staging = Path(tempfile.mkdtemp(prefix=f"{template.name}.", dir=template.parent))
        try:
            if _as_root():
                pg_user = pwd.getpwnam(_PG_OS_USER)
                os.chown(staging, pg_user.pw_uid, pg_user.pw_gid)
            self._run("initdb", "-D", str(staging), *_INITDB_OPTIONS)
            with contextlib.suppress(OSError):  # another process made it first: use theirs
                staging.rename(template)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return template


def start_postgres(folder: Path, port: int | None = None, durable: bool = True) -> PostgresServer:
    """A running PostgreSQL server whose files are in ``folder`` (made with ``initdb``
    the first time; started again from its data afterwards), on ``port`` (default: the
    one it had, else a free one). ``durable=False`` turns off flushing to disk: for
    throwaway servers (tests), never for data you keep."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(folder, _remembered_port(folder, port), postgres_bindir(), durable)
    (folder / "durable.txt").write_text(f"{durable}\n")  # for postgres_in (another process)
    if not (folder / "pgdata").exists():
        server._init()
    server.start()
    return server


def postgres_in(folder: Path) -> PostgresServer:
    """The server ``start_postgres(folder)`` made, running or not (to stop it from
    another process)."""
    folder = Path(folder).absolute()
    if not (folder / "pgdata").exists() or not (folder / "port.txt").exists():
        raise ServiceError(f"no PostgreSQL server in {folder}; start one with `tsops platform up`")
    port = int((folder / "port.txt").read_text())
    durable = folder / "durable.txt"
    return PostgresServer(
        folder,
        port,
        postgres_bindir(),
        durable=not durable.exists() or durable.read_text().strip() != "False",
    )


# ----------------------------------------------------------------------------- Redis


@dataclass
class RedisServer:
    """A Redis server in ``folder``: no persistence (a cache), 1,024 databases so that
    every test can have its own."""

    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.folder / "redis.pid"

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        return _alive(pid) and _port_open(self.port)

    def start(self) -> None:
        if self.running():
            return
        program = shutil.which("redis-server")
        if program is None:
            raise ServiceError(
                "redis-server was not found on PATH; install it with `make platform-deps` "
                "(Debian: apt-get install redis-server)"
            )
        done = subprocess.run(
            [
                program, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.folder), "--daemonize", "yes",
                "--pidfile", str(self.pid_file), "--logfile", str(self.folder / "redis.log"),
                "--save", "", "--appendonly", "no", "--databases", "1024",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ServiceError(
                f"redis-server did not start: {(done.stderr or done.stdout).strip()}; "
                f"see {self.folder / 'redis.log'}"
            )
        _wait_for_port(self.port, f"Redis (log: {self.folder / 'redis.log'})")

    def stop(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        # Redis removes its pid file and closes its port as it exits; the process itself
        # may linger a moment as a zombie until its (re)parent reaps it
        deadline = time.monotonic() + _START_TIMEOUT
        while (self.pid_file.exists() and _alive(pid)) or _port_open(self.port):
            if time.monotonic() > deadline:
                raise ServiceError(f"Redis (pid {pid}) did not stop within {_START_TIMEOUT:.0f} s")
            time.sleep(0.01)
        self.pid_file.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def remove_when_gone(self, owner_pid: int) -> None:
        """As ``PostgresServer.remove_when_gone``."""
        pid = self._pid()
        _when_gone(owner_pid, ["kill", str(pid)] if pid else ["true"], [self.folder])


def start_redis(folder: Path, port: int | None = None) -> RedisServer:
    """A running Redis server whose files are in ``folder``, on ``port`` (default: the
    one it had, else a free one)."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisServer(folder, _remembered_port(folder, port))
    server.start()
    return server


def redis_in(folder: Path) -> RedisServer:
    """The server ``start_redis(folder)`` made, running or not."""
    folder = Path(folder).absolute()
    if not (folder / "port.txt").exists():
        raise ServiceError(f"no Redis server in {folder}; start one with `tsops platform up`")
    return RedisServer(folder, int((folder / "port.txt").read_text()))


def _when_gone(owner_pid: int, stop: list[str], paths: list[Path]) -> None:
    """A detached shell that waits for ``owner_pid`` to exit, then runs ``stop`` and
    deletes ``paths`` (harmless when they were stopped and deleted already)."""
    script = (
        f"while kill -0 {owner_pid} 2>/dev/null; do sleep 1; done; "
        f"{shlex.join(stop)} >/dev/null 2>&1; rm -rf {shlex.join(str(p) for p in paths)}"
    )
    # started in the background by a shell that exits at once: the watchdog is nobody's
    # child here (no zombie, no "still running" warning), in a session of its own (a
    # Ctrl-C in the terminal stops the run, not its watchdog)
    subprocess.run(
        ["sh", "-c", f"({script}) </dev/null >/dev/null 2>&1 &"],
        check=True,
        start_new_session=True,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_port(port: int, what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while not _port_open(port):
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not accept connections on 127.0.0.1:{port}")
        time.sleep(0.02)
