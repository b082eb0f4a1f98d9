"""A/B runs of tsops' server configurations, alternated to cancel out a busy machine.

Each experiment starts variant A, measures its cases, stops it, does the same for B, and
repeats that ``--rounds`` times; the servers, wrk and the measurements are ``run.py``'s.

- ``forecast-log``: the forecast log on (A) or off (B): what it costs on the request path;
- ``blas-threads``: defaults, with OpenBLAS' thread pool as it comes (A) or
  ``OPENBLAS_NUM_THREADS=1`` (B): whether BLAS worker threads hurt the history path;
- ``logging``: ``--request_logs`` (A) against the default (B): what the per-request
  log lines cost;
- ``workers``: ``--workers 1`` (A) against 2 (B).

Usage (from the repository root)::

    .venv/bin/python benchmarks/serving/ab.py --experiments forecast-log,blas-threads

Results: ``benchmarks/serving/results/ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run


def experiments(model_dir: Path, workdir: Path) -> dict:
    def tsops(name: str, *extra: str, **kwargs) -> run.Server:
        return run.tsops_server(name, model_dir, workdir, *extra, **kwargs)

    no_history = [c for c in run.TSOPS_CASES if not c[1]]
    v1_history = [c for c in run.TSOPS_CASES if c[1] and c[0] == "v1"]
    v1 = [c for c in run.TSOPS_CASES if c[0] == "v1"]
    return {
        "forecast-log": (
            tsops("forecast log on"),
            tsops("forecast log off", log_dir=""),
            no_history,
            [16],
        ),
        "blas-threads": (
            tsops("OpenBLAS default threads"),
            tsops("OPENBLAS_NUM_THREADS=1", env={"OPENBLAS_NUM_THREADS": "1"}),
            v1_history,
            [1, 16],
        ),
        "logging": (
            tsops("request log lines on", "--request_logs"),
            tsops("request log lines off"),
            no_history,
            [16],
        ),
        "workers": (tsops("1 worker"), tsops("2 workers", workers=2), v1, [16]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", default="forecast-log,blas-threads,logging")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=["shipped", "tiny"], default="shipped")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--out", type=Path, default=run.RESULTS / "ab.json")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.nice:
        run.NICE[:] = ["nice", "-n", str(args.nice)]
    workdir = Path(tempfile.mkdtemp(prefix="tsops-serving-ab-"))
    model_dir = run.build_model(workdir, args.model)
    for (dialect, history), body in run.request_bodies().items():
        (workdir / f"body-{dialect}-{history}.json").write_text(json.dumps(body))
    chosen = experiments(model_dir, workdir)
    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/serving/ab.py", *sys.argv[1:]]),
        "settings": vars(args) | {"out": str(args.out)},
        "machine": run.machine(),
        "git": run.git_state(),
        "experiments": {},
    }
    try:
        for name in args.experiments.split(","):
            a, b, cases, concurrency = chosen[name]
            exp = result["experiments"].setdefault(name, {})
            for round_ in range(args.rounds):
                for server in (a, b):
                    server.start(workdir)
                    try:
                        server.wait_ready()
                        for dialect, history, path in cases:
                            body = workdir / f"body-{dialect}-{history}.json"
                            for conc in concurrency:
                                hist = "history" if history else "no-history"
                                key = f"{dialect} {hist} c{conc}"
                                m = run.measure(server, path, body, conc, args)
                                exp.setdefault(key, {}).setdefault(server.name, []).append(m)
                                print(
                                    f"{name} round {round_ + 1} {server.name:28s} {key:20s} "
                                    f"{m['rps']:7.0f} req/s p50 {m['p50_ms']:6.2f} "
                                    f"p99 {m['p99_ms']:7.2f} ms other-cpu "
                                    f"{m['other_cpu_cores']:.2f}",
                                    flush=True,
                                )
                    finally:
                        server.stop()
            for per_variant in exp.values():
                for runs in per_variant.values():
                    rps = sorted(r["rps"] for r in runs)
                    runs.append({"median_rps": rps[len(rps) // 2]})
    finally:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.out)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
