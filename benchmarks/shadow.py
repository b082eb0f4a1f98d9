"""Shadow traffic's cost on the champion: p99, throughput and CPU per request at
concurrency 16, with and without forwarding copies to a real tsops shadow server.

What runs (``benchmarks/serving/run.py``'s servers, wrk runner and model), each on a
free 127.0.0.1 port:

- ``champion``: ``python -m tsops.serving --workers 1`` with ``--shadow_url`` pointing at
  the shadow, its forecast log on (as in production);
- ``baseline``: the same command without ``--shadow_url``; measured twice per repeat:
  ``baseline`` with the shadow idle and ``busy`` while a second wrk (4 connections,
  requests marked as copies) keeps the shadow working as the champion's copies do;
- ``down``: the champion's command with ``--shadow_url`` at a port bound and never
  listened on (every copy is counted ``unreachable``);
- ``shadow``: a plain ``python -m tsops.serving --workers 1`` serving the same model
  under the same name (the copies' target; it logs them with role shadow).

CPU isolation, on a 2-core machine: the champions and wrk run on one CPU (``taskset -c
<champion CPU>``, default 0; wrk inherits this script's affinity), the shadow alone on
the other (``--other-cpu``, default 1). The shadow's own work therefore never runs on
the champion's CPU and never slows the load generator (with wrk beside the shadow, the
shadow's work throttled wrk, which shortens the champion's queue and flatters its
p99); wrk's own CPU is the same in every case, so it weighs on the ratios alike.
Niceness: wrk and the champions at ``--nice``, the shadow (and the ``busy`` load) at
``--shadow-nice``. Each server's affinity is read back from
``/proc/<pid>/task/*/status`` (every thread of its process tree) and recorded. What
taskset cannot separate: two vCPUs of a virtual machine may share a physical core (or
memory bandwidth), and the shadow's work on the other CPU then slows the champion's;
the ``busy`` baseline measures that, so ``champion`` against ``busy`` is forwarding's
own cost and ``champion`` against ``baseline`` its cost with that interference.

The cases alternate (baseline, busy, champion, down, baseline, ...) ``--repeats``
times, each ``--warmup`` seconds discarded then ``--duration`` seconds measured with
``wrk -t1 -c16``. On a machine shared with other work, bursts of that work hit single
runs: the medians over repeats, and the median of the ratios of runs seconds apart
(same repeat), are reported, with the CPU other programs used during each run. CPU per
request is the steadier measure (it does not count time spent waiting for the CPU).
``cpu_ms_per_sent_copy`` puts the champion's extra CPU on the copies actually sent.
Requests: V1 for one series (N1402), h 6, without history (the cheapest request:
forwarding's cost is largest relative to it) and with 12 points of history.

    .venv/bin/python benchmarks/shadow.py --nice -20 --shadow-nice -5 \\
        --duration 3 --warmup 1 --repeats 8 --max-load 99 --load-wait 0   # ~7 min
    .venv/bin/python benchmarks/shadow.py --duration 2 --repeats 1 --model tiny  # a quick check

Results: benchmarks/results/shadow.json and shadow.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "serving"))

import run as serving  # noqa: E402  (benchmarks/serving/run.py: servers, wrk, the model)

RESULTS = HERE / "results"
CONCURRENCY = 16
TARGET_P99_COST = 0.10
_COUNTER = re.compile(r'^tsops_shadow_requests_total\{model="[^"]*",outcome="(\w+)"\} (\S+)$')
REQUESTS = {"no-history": ("v1", False), "history": ("v1", True)}
#: case -> the champion server it measures; "busy" is the baseline measured while the
#: shadow is kept busy by another load generator (see ``busy``)
SERVER_OF = {"baseline": "baseline", "busy": "baseline", "champion": "champion", "down": "down"}


def busy(shadow: serving.Server, path: str, body: Path, nice: int, cpus: str):
    """A second wrk loading the shadow directly (4 connections, requests marked as
    copies), on the shadow's CPU at its niceness: the baseline's control for what the
    shadow's work on the other CPU does to the champion (two vCPUs of a virtual machine
    may share a physical core; taskset cannot separate those)."""
    import subprocess

    return subprocess.Popen(
        [
            "taskset",
            "-c",
            cpus,
            "nice",
            "-n",
            str(nice),
            "wrk",
            "-t1",
            "-c4",
            "-d600s",
            "-H",
            "tsops-shadow: 1",
            "-s",
            str(HERE / "serving" / "post.lua"),
            shadow.url + path,
        ],
        env={**os.environ, "BODY_FILE": str(body)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def pinned(server: serving.Server, cpus: str, nice: int = 0) -> serving.Server:
    """``server`` started under ``taskset -c cpus`` (and ``nice -n nice``)."""
    command = server.cmd_fn
    prefix = ["taskset", "-c", cpus, *(["nice", "-n", str(nice)] if nice else [])]
    server.cmd_fn = lambda port: [*prefix, *command(port)]
    return server


def affinity(root: int) -> list[str]:
    """The distinct CPU lists of every thread of ``root``'s process tree."""
    stats = serving._proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            found.add(re.search(r"Cpus_allowed_list:\s*(\S+)", status)[1])
    return sorted(found)


def copies(server: serving.Server) -> dict[str, float]:
    """The champion's ``tsops_shadow_requests_total`` by outcome."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _COUNTER.match(line)
        if match:
            out[match[1]] = out.get(match[1], 0.0) + float(match[2])
    return out


def measure(
    server: serving.Server, shadow: serving.Server, path: str, body: Path, args
) -> dict[str, Any]:
    url = server.url + path
    serving.wrk(url, body, CONCURRENCY, args.warmup)
    time.sleep(0.5)  # the warm-up's last copies answered or abandoned
    before = copies(server)
    cpu = serving.tree_cpu_seconds(server.proc.pid), serving.tree_cpu_seconds(shadow.proc.pid)
    busy0, wrk0 = serving.busy_cpu_seconds(), serving._children_cpu()
    raw = serving.wrk(url, body, CONCURRENCY, args.duration)
    seconds = raw["duration_us"] / 1e6
    cpu = (
        serving.tree_cpu_seconds(server.proc.pid) - cpu[0],
        serving.tree_cpu_seconds(shadow.proc.pid) - cpu[1],
    )
    # what else ran meanwhile (other programs; and the neighbour load of "busy")
    others = serving.busy_cpu_seconds() - busy0 - (serving._children_cpu() - wrk0) - sum(cpu)
    time.sleep(0.5)
    after = copies(server)
    sent = {k: round(after.get(k, 0) - before.get(k, 0)) for k in after}
    requests = raw["requests"]
    return {
        "requests": requests,
        "rps": round(requests / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": sum(v for k, v in raw.items() if k.startswith("err_")),
        "cpu_ms_per_request": round(1000 * cpu[0] / max(requests, 1), 4),
        "shadow_cpu_cores": round(cpu[1] / seconds, 2),
        "other_cpu_cores": round(max(0.0, others) / seconds, 2),
        "copies": sent,
        "load1": round(os.getloadavg()[0], 2),
    }


def summary(runs: list[dict]) -> dict[str, Any]:
    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 4)

    outcomes: dict[str, int] = {}
    for run in runs:
        for k, v in run["copies"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    return {
        "rps": med("rps"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "cpu_ms_per_request": med("cpu_ms_per_request"),
        "other_cpu_cores": med("other_cpu_cores"),
        "errors": sum(r["errors"] for r in runs),
        "copies": outcomes,
        "p99_ms_runs": [r["p99_ms"] for r in runs],
        "rps_runs": [r["rps"] for r in runs],
    }


def markdown(result: dict) -> str:
    lines = [
        f"Shadow forwarding's cost on the champion (c{CONCURRENCY}, {result['settings']['model']}"
        f"; {result['settings']['isolation']}).",
        "",
        "| request | case | req/s | p50 ms | p99 ms (runs) | CPU ms/req | copies "
        "(ok/dropped/other) | other CPU (cores) | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for request, cases in result["cases"].items():
        for case, s in cases.items():
            c = s["copies"]
            other = sum(v for k, v in c.items() if k not in ("ok", "dropped"))
            shown = f"{c.get('ok', 0)}/{c.get('dropped', 0)}/{other}" if c else "-"
            runs = " / ".join(f"{x:.1f}" for x in s["p99_ms_runs"])
            lines.append(
                f"| {request} | {case} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | "
                f"**{s['p99_ms']:.1f}** ({runs}) | {s['cpu_ms_per_request']:.3f} | {shown} | "
                f"{s['other_cpu_cores']:.2f} | {s['errors']} |"
            )
    lines += [
        "",
        "baseline: no --shadow_url, the shadow idle; busy: the same server while another "
        "load keeps the shadow working on its CPU (no forwarding); champion: forwarding "
        "every answered request to the shadow; down: forwarding to a port nobody listens "
        "on. champion against busy is forwarding's own cost; champion against baseline "
        "adds what the shadow's work on the other vCPU does to the champion's (busy "
        "against baseline). Other CPU: cores other programs used meanwhile (the machine "
        f"is shared). Command: `{result['command']}`.",
        "",
        "| request | case | against | p99 ratio (medians) | p99 ratio (median of pairs) "
        "| req/s ratio | CPU/req ratio | extra CPU ms per sent copy | p99 cost < 10 % (pairs) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in result["cost"]:
        per_copy = row["cpu_ms_per_sent_copy"]
        lines.append(
            f"| {row['request']} | {row['case']} | {row['against']} | {row['p99_ratio']:.3f} | "
            f"{row['p99_ratio_paired_median']:.3f} | "
            f"{row['rps_ratio']:.3f} | {row['cpu_ratio']:.3f} | "
            f"{'-' if per_copy is None else f'{per_copy:.3f}'} | "
            f"{'yes' if row['met'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def cost_rows(cases: dict) -> list[dict]:
    """Each forwarding case against the baseline, and against the busy baseline (the
    same neighbour load on the shadow's CPU: the forwarding's own cost)."""
    rows = []
    for request, by_case in cases.items():
        for case, against in (
            ("champion", "baseline"),
            ("champion", "busy"),
            ("down", "baseline"),
        ):
            s, base = by_case.get(case), by_case.get(against)
            if not s or not base:
                continue
            extra_cpu = s["cpu_ms_per_request"] - base["cpu_ms_per_request"]
            sent = s["copies"].get("ok", 0) + s["copies"].get("error", 0)
            sent += s["copies"].get("timeout", 0)
            requests = sum(r["requests"] for r in s["_runs"])
            share = sent / requests if requests else 0
            ratio = s["p99_ms"] / base["p99_ms"]
            # the same repeat's runs, seconds apart: a burst of other work on the
            # machine hits both (the medians above may come from different repeats)
            paired = [
                a["p99_ms"] / b["p99_ms"]
                for a, b in zip(s["_runs"], base["_runs"], strict=True)
                if b["p99_ms"] > 0
            ]
            rows.append(
                {
                    "request": request,
                    "case": case,
                    "against": against,
                    "p99_ratio": round(ratio, 3),
                    "p99_ratio_paired_median": round(statistics.median(paired), 3),
                    "p99_ratios_paired": [round(x, 3) for x in paired],
                    "rps_ratio": round(s["rps"] / base["rps"], 3),
                    "cpu_ratio": round(s["cpu_ms_per_request"] / base["cpu_ms_per_request"], 3),
                    "sent_share": round(share, 3),
                    # a down shadow is sent nothing (its copies end unreachable)
                    "cpu_ms_per_sent_copy": round(extra_cpu / share, 4)
                    if case == "champion" and share > 0.05
                    else None,
                    "met": statistics.median(paired) < 1 + TARGET_P99_COST,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="discarded seconds before each")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the cases")
    parser.add_argument("--model", choices=["shipped", "tiny"], default="shipped")
    parser.add_argument("--model-dir", type=Path, help="reuse an MLflow model folder")
    parser.add_argument("--champion-cpu", default="0", help="CPU list of the champions")
    parser.add_argument("--other-cpu", default="1", help="CPU list of the shadow")
    parser.add_argument(
        "--wrk-cpu",
        default=None,
        help="CPU list of wrk (default: the champions'; wrk sharing the shadow's CPU was "
        "slowed by it, which throttles the load instead of measuring the champion)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the champions and wrk (e.g. -10 on a machine busy with other work)",
    )
    parser.add_argument(
        "--shadow-nice", type=int, default=19, help="niceness of the shadow (default 19)"
    )
    parser.add_argument("--cases", default="baseline,busy,champion,down")
    parser.add_argument("--requests", default="no-history,history")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for load1 below this")
    parser.add_argument("--load-wait", type=float, default=120, help="longest wait, s")
    parser.add_argument("--out", type=Path, default=RESULTS / "shadow.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        raise SystemExit("needs 2 CPUs: one for the champion, one for the shadow and wrk")
    # wrk, started by this process, inherits its CPUs and niceness
    wrk_cpu = args.wrk_cpu or args.champion_cpu
    os.sched_setaffinity(0, {int(c) for c in wrk_cpu.split(",")})
    if args.nice:
        os.nice(args.nice)

    workdir = Path(tempfile.mkdtemp(prefix="tsops-shadow-bench-"))
    model_dir = args.model_dir or serving.build_model(workdir, args.model)
    bodies = serving.request_bodies()
    files = {}
    for name in args.requests.split(","):
        files[name] = workdir / f"{name}.json"
        files[name].write_text(json.dumps(bodies[REQUESTS[name]]))
    path = f"/v1/models/{serving.MODEL}:predict"

    shadow = pinned(
        serving.tsops_server("shadow", model_dir, workdir, log_dir=str(workdir / "logs-shadow")),
        args.other_cpu,
        nice=args.shadow_nice - args.nice,  # relative to this process's, which it inherits
    )
    shadow.start(workdir)
    shadow.wait_ready()
    # a port bound and never listened on: connecting is refused, and no other program
    # can take it meanwhile (a free port could be anyone's by the time it is used)
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    down_port = held.getsockname()[1]
    flags = {
        "baseline": [],
        "champion": ["--shadow_url", shadow.url],
        "down": ["--shadow_url", f"http://127.0.0.1:{down_port}"],
    }
    wanted = args.cases.split(",")
    champions = {
        name: pinned(
            serving.tsops_server(
                name, model_dir, workdir, *flags[name], log_dir=str(workdir / f"logs-{name}")
            ),
            args.champion_cpu,
        )
        for name in dict.fromkeys(SERVER_OF[case] for case in wanted)
    }
    result: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/shadow.py", *sys.argv[1:]]),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeats": args.repeats,
            "concurrency": CONCURRENCY,
            "load_generator": f"wrk -t1 -c{CONCURRENCY} (closed loop, keep-alive), "
            "benchmarks/serving/post.lua",
            "model": serving.MODEL_DESCRIPTIONS[args.model] if not args.model_dir else "given",
            "request": "V1, one series (N1402), h 6; history: 12 monthly points after the cutoff",
            "isolation": f"champions on CPU {args.champion_cpu} (taskset) at nice {args.nice}, "
            f"the shadow on CPU {args.other_cpu} at nice {args.shadow_nice} and wrk on CPU "
            f"{wrk_cpu} at nice {args.nice}",
        },
        "machine": serving.machine(),
        "git": serving.git_state(),
        "runs": [],
    }
    runs: dict[str, dict[str, list[dict]]] = {r: {c: [] for c in wanted} for r in files}
    try:
        for server in champions.values():
            server.start(workdir)
        for server in champions.values():
            server.wait_ready()
        result["affinity"] = {
            name: affinity(s.proc.pid) for name, s in {**champions, "shadow": shadow}.items()
        }
        result["commands"] = {
            name: serving.portable(" ".join(s.cmd_fn(s.port)), workdir)
            for name, s in {**champions, "shadow": shadow}.items()
        }
        for repeat in range(args.repeats):
            quiet = serving.wait_for_quiet(args.max_load, args.load_wait)
            print(f"repeat {repeat + 1}/{args.repeats}: load {quiet}", flush=True)
            for request, body in files.items():
                for case in wanted:
                    server = champions[SERVER_OF[case]]
                    neighbour = None
                    if case == "busy":
                        neighbour = busy(
                            shadow, path, body, args.shadow_nice - args.nice, args.other_cpu
                        )
                    try:
                        run = measure(server, shadow, path, body, args)
                    finally:
                        if neighbour is not None:
                            neighbour.terminate()
                            neighbour.wait()
                    run.update(repeat=repeat, request=request, case=case)
                    runs[request][case].append(run)
                    result["runs"].append(run)
                    print(
                        f"  {request:10s} {case:8s} {run['rps']:8.0f} req/s  p99 "
                        f"{run['p99_ms']:6.2f} ms  cpu {run['cpu_ms_per_request']:.3f} ms/req  "
                        f"copies {run['copies']}  load {run['load1']}",
                        flush=True,
                    )
    finally:
        for server in [*champions.values(), shadow]:
            server.stop()
        held.close()
        shutil.rmtree(workdir, ignore_errors=True)
    result["cases"] = {
        request: {case: {**summary(r), "_runs": r} for case, r in by_case.items() if r}
        for request, by_case in runs.items()
    }
    result["cost"] = cost_rows(result["cases"])
    for by_case in result["cases"].values():
        for s in by_case.values():
            del s["_runs"]
    result["target"] = f"champion p99 with shadow < {1 + TARGET_P99_COST:.2f} x without"
    result["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
