"""The one parallel layer for per-series work.

Local processes (joblib's loky backend) by default; a Dask distributed cluster
when ``TSOPS_DASK_SCHEDULER`` (or ``--cluster``) names a scheduler address.
Callers never know which one ran their tasks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from joblib import Parallel, delayed, parallel_config

T = TypeVar("T")
R = TypeVar("R")

DASK_ENV = "TSOPS_DASK_SCHEDULER"
JOBS_ENV = "TSOPS_N_JOBS"


def default_n_jobs() -> int:
    value = os.environ.get(JOBS_ENV)
    if value:
        try:
            return int(value)
        except ValueError as exc:
            raise ValueError(f"{JOBS_ENV}={value!r} is not an integer; use e.g. 2 or -1") from exc
    return -1


@contextlib.contextmanager
def _backend(n_jobs: int) -> Iterator[int]:
    address = os.environ.get(DASK_ENV)
    if address:
        from dask.distributed import Client  # only needed when a cluster is configured

        with (
            Client(address) as client,
            parallel_config(backend="dask", wait_for_workers_timeout=60),
        ):
            yield len(client.scheduler_info().get("workers", {})) or 1
    else:
        with parallel_config(backend="loky", inner_max_num_threads=1):
            yield n_jobs


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


def parallel_map(
    fn: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    n_jobs: int | None = None,
    min_items_per_task: int = 8,
) -> list[R]:
    """Apply ``fn`` to chunks of ``items`` and concatenate the results in order.

    ``fn`` takes a chunk (a list) and returns one result per item: chunking keeps the
    per-task overhead of process pools low when each item is cheap.
    """
    n_jobs = default_n_jobs() if n_jobs is None else n_jobs
    if (n_jobs == 1 and not os.environ.get(DASK_ENV)) or len(items) <= min_items_per_task:
        return list(fn(items))
    with _backend(n_jobs) as workers:
        effective = (os.cpu_count() or 1) if workers == -1 else workers
        n_chunks = min(max(1, len(items) // min_items_per_task), 4 * effective)
        chunks = chunked(items, n_chunks)
        results = Parallel(n_jobs=workers)(delayed(fn)(chunk) for chunk in chunks)
    return [r for chunk_result in results for r in chunk_result]
