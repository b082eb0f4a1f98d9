"""One HTTP client for the tests' requests to the servers they start on 127.0.0.1.

``httpx.get`` and ``httpx.post`` make a new client per call, and making one loads the
CA certificates (~30 ms of CPU); the monitoring loop alone sends over a hundred requests.
This client is made once per process and keeps no connection alive, so every request
still goes over a new connection, as with ``httpx.post``, and its timeouts are httpx's
defaults unless a call gives one.
"""

from __future__ import annotations

import functools

import httpx


@functools.cache
def http() -> httpx.Client:
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
