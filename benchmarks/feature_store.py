"""The feature store on the request path: an online lookup per request against history
sent in the request, and serving throughput with the feature store against without it.

One run, one machine, ratios taken within the run. The served model is the shipped
m3-monthly as ``make run`` registers it (``save_pyfunc`` of ``artifacts/m3-monthly``,
60 series); its data gets one new monthly actual for every series but the last
(``N1461``, whose latest actual stays the model's cutoff), materialised into a Redis
this script starts and into the default SQLite online store.

- **lookup** (in-process, ``--calls`` each, p50/p99): what a request that names only
  ``unique_id`` costs the server to fetch its history (``OnlineHistory.latest``: Feast's
  ``get_online_features`` + building the ``SeriesHistory``), against what history sent in
  the request costs it to read (``orjson.loads`` of the body + ``parse_v1``, the checks
  every request history goes through), with 1 new observation and with the 42 the store
  keeps per series;
- **throughput** (``tsops serve --workers 1`` on 127.0.0.1, ``wrk -t1 -cN``, V1, h=6):
  without the store, a request with no history (the precomputed table) and with the new
  actual sent as history; with the store (Redis, SQLite), a series whose latest actual
  is the model's cutoff (lookup, then the table) and a series with a newer actual in the
  store (lookup, then the forecast recomputed from it, the work history in the request
  causes). Every server's answers are checked first: the store's forecast equals the
  one from the same actual sent in the request.

    .venv/bin/python benchmarks/feature_store.py          # ~3 min: results/feature_store.json, .md
    .venv/bin/python benchmarks/feature_store.py --quick  # a check: fewer calls, 2 s per case
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks" / "serving"))

import run as serving  # noqa: E402  (benchmarks/serving/run.py: wrk and its Lua script)

RESULTS = REPO / "benchmarks" / "results"
MODEL = "m3-monthly"
NEW = "N1402"  # gets a new actual in the store
OLD = "N1461"  # does not: the store's latest actual is the model's cutoff
H = 6


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def timed(call, calls: int) -> dict[str, float]:
    for _ in range(min(50, calls)):
        call()
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return percentiles(out)


# -- setup ------------------------------------------------------------------------------------


def build_project(work: Path) -> tuple[Path, Path, pd.DataFrame]:
    """The served model folder, and a project whose data has the new actuals."""
    from tsops.registry.publish import read_stage_outputs
    from tsops.registry.pyfunc import save_pyfunc

    outputs = read_stage_outputs(REPO, MODEL)
    model_dir = work / "mlmodel"
    save_pyfunc(outputs.model_dir, outputs.spec, outputs.ids, model_dir)
    root = work / "project"
    (root / "models").mkdir(parents=True)
    shutil.copytree(REPO / "models" / MODEL, root / "models" / MODEL)
    frame = pd.read_parquet(REPO / "data" / MODEL / "series.parquet")
    last = frame.sort_values("ds").groupby("unique_id").tail(1)
    new = last[last["unique_id"] != OLD].assign(
        ds=lambda d: d["ds"] + pd.offsets.MonthBegin(), y=lambda d: d["y"] * 1.05
    )
    (root / "data" / MODEL).mkdir(parents=True)
    pd.concat([frame, new], ignore_index=True).sort_values(["unique_id", "ds"]).to_parquet(
        root / "data" / MODEL / "series.parquet", index=False
    )
    return model_dir, root, new.set_index("unique_id")


def repo_copy(root: Path, name: str) -> Path:
    repo = root / name
    repo.mkdir()
    shutil.copy(REPO / "features" / "feature_store.yaml", repo)
    return repo


# -- lookup -----------------------------------------------------------------------------------


def lookups(root: Path, redis_url: str, frame: pd.DataFrame, new: pd.DataFrame, calls: int):
    from tsops.platform.features import OnlineFeatures
    from tsops.serving.requests import parse_v1

    out = {}
    for name, repo, url in (
        ("redis", root / "features-redis", redis_url),
        ("sqlite", root / "features-sqlite", None),
    ):
        online = OnlineFeatures(repo, url).history_of(MODEL, "MS")
        found, problem = online.latest([NEW])
        assert problem is None and found[NEW].ds[-1] == new.loc[NEW, "ds"], (problem, found)
        out[f"lookup_{name}"] = timed(lambda o=online: o.latest([NEW]), calls)
    series = frame[frame["unique_id"] == NEW]
    for count in (1, 42):
        tail = pd.concat([series, new.loc[[NEW]].reset_index()], ignore_index=True).tail(count)
        body = orjson.dumps(
            {
                "instances": [
                    {
                        "unique_id": NEW,
                        "history": {
                            "ds": [d.strftime("%Y-%m-%d") for d in tail["ds"]],
                            "y": tail["y"].tolist(),
                        },
                    }
                ],
                "parameters": {"h": H},
            }
        )
        kwargs = {
            "default_h": 18,
            "max_h": 36,
            "default_levels": [80.0, 95.0],
            "freq": "MS",
            "request_id": "x",
        }

        def parse(b=body, k=kwargs):
            parse_v1(orjson.loads(b), **k)

        out[f"request_history_{count}"] = timed(parse, calls)
        out[f"request_history_{count}"]["body_bytes"] = len(body)
    return out


# -- throughput -------------------------------------------------------------------------------


class Server:
    def __init__(self, model_dir: Path, work: Path, name: str, extra: list[str], env: dict):
        self.port = serving.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / f"server-{name}.log"
        self._out = open(self.log, "w")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tsops.serving",
                "--http_port",
                str(self.port),
                "--workers",
                "1",
                "--forecast_log_dir",
                "",
                "--model",
                f"{MODEL}={model_dir}",
                *extra,
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-3000:])
            try:
                if httpx.get(f"{self.url}/v2/models/{MODEL}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(self.log.read_text()[-3000:])

    def predict(self, body: dict) -> dict:
        answer = httpx.post(f"{self.url}/v1/models/{MODEL}:predict", json=body, timeout=30)
        answer.raise_for_status()
        return answer.json()["predictions"][0]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        self._out.close()


def wrk(url: str, body_file: Path, connections: int, seconds: int) -> dict:
    """The serving benchmark's wrk run (benchmarks/serving/run.py), in milliseconds."""
    result = serving.wrk(url, body_file, connections, seconds)
    errors = sum(v for k, v in result.items() if k.startswith("err_"))
    if errors:
        raise RuntimeError(f"wrk saw {errors} errors: {result}")
    return {
        "requests_per_s": result["requests"] / (result["duration_us"] / 1e6),
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
    }


def throughput(model_dir, work, root, redis_url, new, args) -> dict:
    period = new.loc[NEW, "ds"].strftime("%Y-%m-%d")
    bodies = {
        "no_history": {"instances": [{"unique_id": NEW}], "parameters": {"h": H}},
        "history_sent": {
            "instances": [
                {"unique_id": NEW, "history": {"ds": [period], "y": [float(new.loc[NEW, "y"])]}}
            ],
            "parameters": {"h": H},
        },
        "store_not_newer": {"instances": [{"unique_id": OLD}], "parameters": {"h": H}},
        "store_newer": {"instances": [{"unique_id": NEW}], "parameters": {"h": H}},
    }
    files = {}
    for name, body in bodies.items():
        files[name] = work / f"{name}.json"
        files[name].write_bytes(orjson.dumps(body))
    servers = {
        "without store": ([], {}, ["no_history", "history_sent"]),
        "store redis": (
            ["--feature_store", str(root / "features-redis")],
            {"TSOPS_FEATURE_STORE_REDIS_URL": redis_url},
            ["store_not_newer", "store_newer"],
        ),
        "store sqlite": (
            ["--feature_store", str(root / "features-sqlite")],
            {},
            ["store_not_newer", "store_newer"],
        ),
    }
    results: dict = {}
    answers: dict = {}
    for server_name, (extra, env, cases) in servers.items():
        server = Server(model_dir, work, server_name.replace(" ", "-"), extra, env)
        try:
            for case in cases:
                answer = server.predict(bodies[case])
                answers[f"{server_name}/{case}"] = answer
                url = f"{server.url}/v1/models/{MODEL}:predict"
                for connections in args.connections:
                    wrk(url, files[case], connections, args.warmup)
                    results[f"{server_name}/{case}/c{connections}"] = wrk(
                        url, files[case], connections, args.seconds
                    )
        finally:
            server.stop()
    # the checks: the store's forecast is the one from the actual sent in the request
    sent = answers["without store/history_sent"]
    for store in ("redis", "sqlite"):
        newer = answers[f"store {store}/store_newer"]
        assert newer["cutoff_source"] == "feature_store" and newer["cutoff"].startswith(period)
        assert newer["mean"] == sent["mean"], (newer["mean"], sent["mean"])
        older = answers[f"store {store}/store_not_newer"]
        assert older["cutoff_source"] == "model"
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--quick", action="store_true", help="--calls 500 --seconds 2")
    parser.add_argument("--out", type=Path, default=RESULTS / "feature_store.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.seconds = 500, 2

    from tsops.core.schema import ID_COL
    from tsops.platform.features import materialize
    from tsops.platform.services import start_redis

    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tsops-feature-bench-") as tmp:
        work = Path(tmp)
        model_dir, root, new = build_project(work)
        frame = pd.read_parquet(REPO / "data" / MODEL / "series.parquet")
        redis = start_redis(work / "redis")
        try:
            repos = {"redis": repo_copy(root, "features-redis")}
            repos["sqlite"] = repo_copy(root, "features-sqlite")
            materialized = {}
            for name, repo in repos.items():
                url = redis.url if name == "redis" else None
                done = materialize(root, MODEL, repo, redis_url=url)
                materialized[name] = {
                    "seconds": round(done.seconds, 2),
                    "series": done.series,
                    "periods": done.periods,
                    "views": done.views,
                }
            lookup = lookups(root, redis.url, frame, new, args.calls)
            served = throughput(model_dir, work, root, redis.url, new, args)
        finally:
            redis.remove()
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "versions": {
            p: version(p) for p in ("feast", "redis", "kserve", "pandas", "numpy", "pyarrow")
        },
        "redis_server": subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "model": MODEL,
        "series": int(frame[ID_COL].nunique()),
        "calls": args.calls,
        "seconds_per_case": args.seconds,
        "materialize": materialized,
        "lookup": lookup,
        "throughput": served,
    }
    result["ratios"] = ratios(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)


def ratios(result: dict) -> dict:
    lookup, served = result["lookup"], result["throughput"]
    out = {}
    for store in ("redis", "sqlite"):
        for history in (1, 42):
            for p in ("p50_ms", "p99_ms"):
                out[f"lookup_{store}_vs_history_{history}_{p[:3]}"] = round(
                    lookup[f"lookup_{store}"][p] / lookup[f"request_history_{history}"][p], 2
                )
    for key, value in served.items():
        server, case, conn = key.split("/")
        if server == "without store":
            continue
        base = "no_history" if case == "store_not_newer" else "history_sent"
        out[f"rps_{server.replace(' ', '_')}_{case}_vs_{base}_{conn}"] = round(
            value["requests_per_s"] / served[f"without store/{base}/{conn}"]["requests_per_s"], 3
        )
    return out


def markdown(result: dict) -> str:
    lines = [
        f"# Feature store on the request path ({result['when']}, commit {result['commit']})",
        "",
        f"Model {result['model']} ({result['series']} series), feast "
        f"{result['versions']['feast']}, {result['redis_server'].split(' sha')[0]}, "
        f"{result['machine']['cpus']} CPUs, load average before "
        f"{result['machine']['load_average_before'][0]:.1f}, after "
        f"{result['machine']['load_average_after'][0]:.1f}.",
        "",
        f"## Per request, in-process ({result['calls']} calls each)",
        "",
        "| what the server does | p50 ms | p99 ms |",
        "| --- | ---: | ---: |",
    ]
    names = {
        "lookup_redis": "online lookup, Redis (Feast get_online_features + SeriesHistory)",
        "lookup_sqlite": "online lookup, SQLite",
        "request_history_1": "history in the request, 1 observation (orjson + parse_v1)",
        "request_history_42": "history in the request, 42 observations",
    }
    for key, label in names.items():
        row = result["lookup"][key]
        lines.append(f"| {label} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} |")
    lines += [
        "",
        f"## Throughput, tsops serve --workers 1, V1, h={H} ({result['seconds_per_case']:g} s "
        "per case)",
        "",
        "| server | request | connections | requests/s | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for key, row in result["throughput"].items():
        server, case, conn = key.split("/")
        lines.append(
            f"| {server} | {case} | {conn[1:]} | {row['requests_per_s']:.0f} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} |"
        )
    lines += ["", "## Ratios", "", "| ratio | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in result["ratios"].items()]
    materialized = result["materialize"]
    lines += [
        "",
        f"Materialisation (apply + offline tables + load, in-process): Redis "
        f"{materialized['redis']['seconds']} s (the first: it includes importing Feast), "
        f"SQLite {materialized['sqlite']['seconds']} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
