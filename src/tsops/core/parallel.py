"""The one parallel layer for per-series work.

Local processes (joblib's loky backend) by default; a Dask distributed cluster
inside a ``use_cluster(address)`` block (the commands open one for ``--cluster`` or
``TSOPS_DASK_SCHEDULER``, read by ``tsops.core.settings``). Callers never know which
one ran their tasks, and get the same results from either: items are split into
contiguous chunks, every item's result depends on that item only, and results come
back in the order of ``items``. Nothing here reads the environment: the number of
processes, the scheduler's address and its timeout are arguments.

Only the chunks travel: the caller's data stays in its process, each task carries
its chunk of series (and the function, pickled by reference, so workers need the
same tsops installed). Completed items are reported to ``tsops.core.progress`` as
chunks finish. joblib and dask are imported on first use: commands that never fit a
model (the CLI imports this module for ``--cluster``) do not pay for them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from tsops.core import progress
from tsops.core.errors import UnavailableError

if TYPE_CHECKING:
    from dask.distributed import Client

T = TypeVar("T")
R = TypeVar("R")

#: the variable commands read the scheduler's address from (named in messages)
DASK_ENV = "TSOPS_DASK_SCHEDULER"
#: seconds to reach the scheduler: a wrong address should fail fast, not hang
DEFAULT_CONNECT_TIMEOUT = 10.0
#: seconds to wait for a first worker (a Kubernetes cluster may still be starting them)
WAIT_FOR_WORKERS = 60.0
#: chunks per worker: small enough to balance slow and fast series, big enough that
#: the per-task overhead stays small; also how often progress is reported
CHUNKS_PER_WORKER = 4
#: chunks of an in-process run, only so that progress is reported as it goes
INLINE_CHUNKS = 16
#: seconds of work below which a local map stays in this process: about what starting
#: the worker processes costs, the first time and after they idled out
INLINE_BELOW_SECONDS = 3.0


class ClusterError(UnavailableError, ConnectionError):
    """The configured Dask cluster cannot run work; the message says how to fix it."""


def _how_to_fix(address: str) -> str:
    return (
        f"is a scheduler running there (`dask scheduler`, workers started with "
        f"`dask worker {address}`) and reachable from here? Fix the address given by "
        f"--cluster or {DASK_ENV}, or unset {DASK_ENV} (and drop --cluster) to fit on "
        f"local processes"
    )


def connect(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Client:
    """A client of the scheduler at ``address``; ``ClusterError`` if it is unreachable."""
    from dask.distributed import Client  # only needed when a cluster is configured

    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s ({exc}): "
            f"{_how_to_fix(address)}"
        ) from exc


# The client of the active ``use_cluster`` block. A plain global, not a context
# variable: the block is meant for the whole process (a CLI command), and threads
# started inside it should use the cluster too.
_session: Client | None = None
_session_lock = threading.Lock()


@contextlib.contextmanager
def use_cluster(address: str | None, timeout: float | None = None) -> Iterator[Client | None]:
    """Run every ``parallel_map`` of the block on the Dask cluster at ``address``.

    Without an address the block runs on local processes and yields ``None``. The
    scheduler is contacted on entry (one connection for the whole block, within
    ``timeout`` seconds, default ``DEFAULT_CONNECT_TIMEOUT``), so a wrong address fails
    before any work starts.
    """
    global _session
    if not address:
        yield None
        return
    client = connect(address, DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout)
    with _session_lock:
        previous, _session = _session, client
    try:
        yield client
    finally:
        with _session_lock:
            _session = previous
        client.close()


def cluster_threads(client: Client) -> int:
    """Worker threads the cluster offers, waiting a while for a first worker."""
    threads = sum(client.nthreads().values())
    if threads:
        return threads
    try:
        client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS)
    except (TimeoutError, OSError) as exc:
        raise ClusterError(
            f"the Dask scheduler at {client.scheduler.address!r} has no worker after "
            f"{WAIT_FOR_WORKERS:g} s: start workers (`dask worker {client.scheduler.address}`, "
            f"or scale the DaskCluster's worker group) or unset {DASK_ENV}"
        ) from exc
    return sum(client.nthreads().values()) or 1


@contextlib.contextmanager
def _backend(n_jobs: int) -> Iterator[int]:
    """Configure joblib for the block; yields the number of tasks that run at once."""
    from joblib import effective_n_jobs, parallel_config

    client = _session
    if client is not None:
        with _dask(client) as workers:
            yield workers
    else:
        with parallel_config(backend="loky", inner_max_num_threads=1):
            yield effective_n_jobs(n_jobs)


@contextlib.contextmanager
def _dask(client: Client) -> Iterator[int]:
    from joblib import parallel_config

    workers = cluster_threads(client)
    with parallel_config(backend="dask", client=client, wait_for_workers_timeout=WAIT_FOR_WORKERS):
        yield workers


def chunked(items: Sequence[T], n_chunks: int) -> list[Sequence[T]]:
    """Split into at most ``n_chunks`` contiguous pieces of near-equal size."""
    n_chunks = max(1, min(n_chunks, len(items)))
    size, extra = divmod(len(items), n_chunks)
    out, start = [], 0
    for i in range(n_chunks):
        stop = start + size + (1 if i < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out


def n_chunks_for(n_items: int, workers: int, min_items_per_task: int) -> int:
    return max(1, min(n_items // max(min_items_per_task, 1), CHUNKS_PER_WORKER * max(workers, 1)))


def _indexed(fn: Callable[[Sequence[T]], list[R]], index: int, chunk: Sequence[T]):
    return index, list(fn(chunk))


def _checked(results: list[R], chunk: Sequence[T], fn: Callable) -> list[R]:
    if len(results) != len(chunk):
        raise ValueError(
            f"{getattr(fn, '__name__', fn)!r} returned {len(results)} results for a chunk of "
            f"{len(chunk)} items; parallel_map needs one result per item, in order"
        )
    return results


def _inline(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T], min_items: int) -> list[R]:
    out: list[R] = []
    n_chunks = max(1, min(len(items) // max(min_items, 1), INLINE_CHUNKS))
    for chunk in chunked(items, n_chunks):
        out.extend(_checked(list(fn(chunk)), chunk, fn))
        progress.advance(len(chunk))
    return out


def parallel_map(
    fn: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    n_jobs: int | None = None,
    min_items_per_task: int = 8,
) -> list[R]:
    """Apply ``fn`` to chunks of ``items`` and concatenate the results in order.

    ``fn`` takes a chunk (a list) and returns one result per item, each depending on
    its item only: chunking keeps the per-task overhead of process pools low when each
    item is cheap, and where the chunks are cut never changes a result. ``n_jobs`` is
    the number of local processes (``None`` or -1: all cores), started only when a
    first chunk, timed in this process, says the rest needs more than
    ``INLINE_BELOW_SECONDS``; inside ``use_cluster`` the cluster's workers run the
    chunks instead.
    """
    from joblib import Parallel, delayed

    n_jobs = -1 if n_jobs is None else n_jobs
    on_cluster = _session is not None
    if (n_jobs == 1 and not on_cluster) or len(items) <= min_items_per_task:
        return _inline(fn, items, min_items_per_task)
    done: list[R] = []
    if not on_cluster:
        # A first chunk runs here and is timed: when the rest would take less than
        # starting worker processes costs (each imports tsops and its model libraries),
        # it runs here too. Small panels of cheap models (a hundred intermittent series)
        # took twice as long on two processes as in this one. Results are the same
        # either way: each item's result depends on that item only.
        head = items[:min_items_per_task]
        started = time.perf_counter()
        done = _checked(list(fn(head)), head, fn)
        progress.advance(len(head))
        items = items[len(head) :]
        seconds_per_item = (time.perf_counter() - started) / len(head)
        if seconds_per_item * len(items) < INLINE_BELOW_SECONDS:
            return done + _inline(fn, items, min_items_per_task)
    with _backend(n_jobs) as workers:
        chunks = chunked(items, n_chunks_for(len(items), workers, min_items_per_task))
        results: list[list[R] | None] = [None] * len(chunks)
        # Unordered, so progress counts chunks as they finish; put back in order below.
        finished = Parallel(n_jobs=workers, return_as="generator_unordered", batch_size=1)(
            delayed(_indexed)(fn, i, chunk) for i, chunk in enumerate(chunks)
        )
        for index, result in finished:
            results[index] = _checked(result, chunks[index], fn)
            progress.advance(len(chunks[index]))
    return done + [r for chunk_result in results for r in chunk_result]
