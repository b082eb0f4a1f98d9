"""Ask a running tsops model server for forecasts over HTTP and check the answers.

Used by scripts/test-container.sh against the container; works against any server:

    python scripts/container_smoke.py http://127.0.0.1:8080 --version 1 --registered tiny

Standard library only (urllib), so it runs with any Python 3. It waits (bounded) for
/v2/health/ready, then sends one V1 ``:predict`` and one V2 ``/infer`` request for the
series --ids (two M3 series of the test model by default), checks the shape and the model
version of the answers and prints them. Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def call(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")}


def wait_ready(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, _ = call(f"{base}/v2/health/ready", timeout=3)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:  # connection refused / reset while the server starts
            last = str(exc)
        time.sleep(1)
    raise SystemExit(f"FAIL: {base} not ready after {timeout:.0f} s ({last})")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"FAIL: {message}")
    print(f"ok: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--name", default=None, help="expected name of the served model")
    parser.add_argument("--version", default=None, help="expected model_version")
    parser.add_argument("--registered", default=None, help="expected registered_model")
    parser.add_argument("--ready-timeout", type=float, default=180)
    parser.add_argument("--h", type=int, default=4, help="horizon to ask for")
    parser.add_argument("--ids", default="N1402,N1403", help="series to forecast, comma-separated")
    args = parser.parse_args()
    base = args.url.rstrip("/")

    wait_ready(base, args.ready_timeout)
    check(call(f"{base}/v2/health/live")[0] == 200, "GET /v2/health/live is 200")
    status, listing = call(f"{base}/v1/models")
    check(status == 200 and listing.get("models"), f"GET /v1/models lists {listing}")
    name = listing["models"][0]
    if args.name:
        check(name == args.name, f"the model is served as {args.name!r}")
    status, meta = call(f"{base}/v2/models/{name}")
    check(status == 200 and meta.get("name") == name, f"GET /v2/models/{name} is 200")

    ids = args.ids.split(",")

    h = args.h
    status, v1 = call(
        f"{base}/v1/models/{name}:predict",
        {"instances": [{"unique_id": i} for i in ids], "parameters": {"h": h, "level": [80]}},
    )
    print("V1 answer:", json.dumps(v1)[:1500])
    check(status == 200, f"POST /v1/models/{name}:predict is 200")
    predictions = v1.get("predictions", [])
    check([p["unique_id"] for p in predictions] == ids, f"V1 forecasts the series asked: {ids}")
    for p in predictions:
        check(len(p["ds"]) == len(p["mean"]) == h, f"V1 {p['unique_id']}: {h} steps")
        bounds = zip(p["lo-80"], p["mean"], p["hi-80"], strict=True)
        check(all(lo <= m <= hi for lo, m, hi in bounds), f"V1 {p['unique_id']}: lo <= mean <= hi")
    if args.version:
        check(v1.get("model_version") == args.version, f"V1 model_version is {args.version}")
    if args.registered:
        check(
            v1.get("registered_model") == args.registered,
            f"V1 registered_model is {args.registered}",
        )

    status, v2 = call(
        f"{base}/v2/models/{name}/infer",
        {
            "inputs": [
                {"name": "unique_id", "datatype": "BYTES", "shape": [len(ids)], "data": ids}
            ],
            "parameters": {"h": h, "level": "80,95"},
        },
    )
    print("V2 answer:", json.dumps(v2)[:1500])
    check(status == 200, f"POST /v2/models/{name}/infer is 200")
    outputs = {o["name"]: o for o in v2.get("outputs", [])}
    check(
        outputs.get("mean", {}).get("shape") == [len(ids), h],
        f"V2 mean has shape [{len(ids)}, {h}]",
    )
    check({"lo-95", "hi-95", "cutoff"} <= set(outputs), "V2 answer has intervals and cutoff")
    if args.version:
        check(v2.get("model_version") == args.version, f"V2 model_version is {args.version}")
    print(f"PASS: {base} serves {name!r} and answers V1 and V2 forecasts")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as exc:  # any surprise in an answer is a failed check, with the cause
        sys.exit(f"FAIL: {type(exc).__name__}: {exc}")
