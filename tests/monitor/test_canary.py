"""Canary verdicts: Diebold–Mariano with HAC variance and HLN correction, on paired targets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from tests.monitor.test_accuracy import (
    MODEL_YAML,
    SEASON,
    VALUE_COLS,
    m3_actuals,
    rolling_forecasts,
    served_requests,
    write_log,
)
from tsops.core.errors import ROLLBACK_EXIT
from tsops.monitor.accuracy import realized_accuracy
from tsops.monitor.canary import compare_versions
from tsops.monitor.cli import monitor_app
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import load_forecast_log

# ------------------------------------------------------------------ real forecasts of M3 series


def scored_versions(tmp_path, now: str, **versions: pd.DataFrame) -> pd.DataFrame:
    """Log each version's forecasts through ForecastLog (served as ``name``, version = its
    position + 3), read the log back and score it against the M3 actuals."""
    for i, (name, forecasts) in enumerate(versions.items()):
        write_log(tmp_path / name, served_requests(forecasts, name, str(i + 3)))
    log = load_forecast_log(tmp_path)
    return realized_accuracy(log, m3_actuals(), SEASON, now=now).scored


def test_seasonal_naive_against_theta_rolls_back_and_the_reverse_promotes(tmp_path):
    # 24 monthly cutoffs, 6 steps each: target times 2018-01 .. 2019-12 have actuals
    scored = scored_versions(
        tmp_path,
        "2020-03-15",
        champion=rolling_forecasts("theta"),
        challenger=rolling_forecasts("seasonal_naive"),
    )
    worse = compare_versions(scored, baseline="champion", candidate="challenger")
    assert worse.verdict == "rollback", worse.reason
    assert (worse.n_targets, worse.max_step, worse.hac_lags, worse.n_series) == (24, 6, 5, 6)
    assert worse.n_pairs == 6 * 129
    assert worse.mean_loss_candidate > worse.mean_loss_baseline
    assert worse.p_value < 0.01 and worse.dm_statistic > 0

    better = compare_versions(scored, baseline="4", candidate="3")
    assert better.verdict == "promote"
    assert "significantly better" in better.reason
    assert better.dm_statistic == pytest.approx(-worse.dm_statistic)
    assert better.p_value == pytest.approx(worse.p_value)


def test_equal_models_hold_until_enough_target_times_then_pass_non_inferiority(tmp_path):
    theta = rolling_forecasts("theta")
    # a retrain that forecasts exactly the same: equal losses at every target time
    early = scored_versions(tmp_path / "a", "2018-06-15", champion=theta, challenger=theta)
    held = compare_versions(early, "3", "4")
    assert held.verdict == "hold"
    assert held.n_targets == 6  # 2018-01 .. 2018-06
    assert held.needed_more == 12 - 6, "min_targets decides when the losses are equal"
    assert held.p_value is None, "no test with fewer target times than the longest step"

    later = scored_versions(tmp_path / "b", "2020-01-15", champion=theta, challenger=theta)
    passed = compare_versions(later, "3", "4")
    assert passed.verdict == "promote"
    assert "not worse" in passed.reason
    assert passed.needed_more is None


# --------------------------------------------------------------------- constructed loss frames


def losses(
    baseline: np.ndarray, candidate: np.ndarray, n_series: int = 1, served_hours: float = -1
) -> pd.DataFrame:
    """A scored frame from per-(target time, series, step) losses of shape (T, S, h)."""
    baseline = baseline.reshape(len(baseline), n_series, -1)
    candidate = candidate.reshape(baseline.shape)
    months = pd.date_range("2020-01-01", periods=baseline.shape[0], freq="MS")
    rows = []
    for version, values in (("1", baseline), ("2", candidate)):
        for (t, s, k), loss in np.ndenumerate(values):
            rows.append(
                {
                    "model_name": "m3-monthly",
                    "model_version": version,
                    "unique_id": f"s{s}",
                    "ds": months[t],
                    "step": k + 1,
                    "served_at": months[t] + pd.Timedelta(hours=served_hours),
                    "ase": loss,
                }
            )
    return pd.DataFrame(rows)


def test_one_step_dm_with_hln_is_the_one_sample_t_test():
    rng = np.random.default_rng(1)
    base = rng.gamma(2.0, 0.5, size=30)
    cand = base + rng.normal(0.15, 0.4, size=30)
    result = compare_versions(losses(base, cand), "1", "2", min_targets=12)
    # h = 1: no lags, and HLN's factor turns the HAC z-statistic into Student's t exactly
    expected = stats.ttest_1samp(cand - base, 0.0)
    assert result.hac_lags == 0
    assert result.dm_statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)


def test_multi_step_dm_uses_newey_west_with_h_minus_1_lags_and_hln():
    rng = np.random.default_rng(2)
    n_targets, n_series, h = 20, 3, 3
    base = rng.gamma(2.0, 0.5, size=(n_targets, n_series, h))
    shock = rng.normal(0, 0.3, size=n_targets + 2)
    # a common shock shared by neighbouring target times: the autocorrelation HAC handles
    common = (shock[2:] + shock[1:-1] + shock[:-2])[:, None, None]
    cand = base + 0.1 + common + rng.normal(0, 0.2, size=base.shape)
    result = compare_versions(losses(base, cand, n_series), "1", "2")

    d = (cand - base).mean(axis=(1, 2))
    lags, dev = h - 1, d - d.mean()
    gamma = [dev[j:] @ dev[: n_targets - j] / n_targets for j in range(lags + 1)]
    long_run = gamma[0] + 2 * sum((1 - j / (lags + 1)) * gamma[j] for j in range(1, lags + 1))
    hln = np.sqrt((n_targets + 1 - 2 * h + h * (h - 1) / n_targets) / n_targets)
    dm = d.mean() / np.sqrt(long_run / n_targets) * hln
    assert result.hac_lags == 2
    assert result.dm_statistic == pytest.approx(dm)
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(dm), n_targets - 1))
    assert result.relative_difference == pytest.approx(d.mean() / base.mean())


def test_noisy_equal_models_hold_with_a_power_based_estimate():
    rng = np.random.default_rng(3)
    n_targets = 40
    base = np.full(n_targets, 1.0)
    noise = rng.normal(0, 0.5, size=n_targets)
    cand = base + noise - noise.mean()  # equal on average, noisy target by target
    result = compare_versions(losses(base, cand), "1", "2", margin=0.1)
    assert result.verdict == "hold"
    assert result.relative_difference == pytest.approx(0.0, abs=1e-12)
    # effect ~0: the sample size is the non-inferiority test's at the margin (0.1 of a
    # baseline loss of 1); the normal approximation is a lower bound of the t-based one
    sigma = noise.std()
    normal = ((stats.norm.ppf(0.95) + stats.norm.ppf(0.8)) * sigma / 0.1) ** 2
    total = n_targets + result.needed_more
    assert normal <= total <= 1.1 * normal


def test_each_version_uses_its_latest_forecast_served_before_the_target():
    base = np.full(14, 1.0)
    frame = losses(base, base)
    # the candidate also answered after each target time (a replay) with a much worse loss
    replay = frame[frame["model_version"] == "2"].assign(
        served_at=lambda f: f["ds"] + pd.Timedelta(days=3), ase=9.0
    )
    result = compare_versions(pd.concat([frame, replay]), "1", "2")
    assert result.mean_loss_candidate == pytest.approx(1.0)
    assert result.n_pairs == 14
    # with only replays served after the target, the latest of those counts
    only_replays = pd.concat([frame[frame["model_version"] == "1"], replay])
    assert compare_versions(only_replays, "1", "2").mean_loss_candidate == pytest.approx(9.0)


def test_no_paired_targets_yet_is_a_hold_not_an_error():
    frame = losses(np.ones(5), np.ones(5))
    frame.loc[frame["model_version"] == "2", "unique_id"] = "other"
    result = compare_versions(frame, "1", "2")
    assert (result.verdict, result.n_pairs, result.needed_more) == ("hold", 0, 12)
    document = result.to_dict()
    json.dumps(document, allow_nan=False)  # NaN means become null, not invalid JSON
    assert document["mean_loss_baseline"] is None


def test_report_is_machine_readable_and_markdown():
    rng = np.random.default_rng(4)
    base = rng.gamma(2.0, 0.5, size=30)
    result = compare_versions(losses(base, base * 1.5), "1", "2")
    document = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    for key in (
        "baseline",
        "candidate",
        "n_pairs",
        "n_targets",
        "mean_loss_baseline",
        "mean_loss_candidate",
        "relative_difference",
        "dm_statistic",
        "p_value",
        "verdict",
        "reason",
        "needed_more",
    ):
        assert key in document
    assert document["verdict"] == "rollback"
    assert document["relative_difference"] == pytest.approx(0.5)
    markdown = result.to_markdown()
    assert "**Verdict: rollback**" in markdown
    assert "| 30 | 1 | 30 | 1 | +50.00% |" in markdown


def test_bad_selectors_and_options_say_what_to_do():
    frame = losses(np.ones(14), np.ones(14))
    with pytest.raises(MonitorError, match=r"'7' matches no scored forecast.*m3-monthly v1"):
        compare_versions(frame, "1", "7")
    with pytest.raises(MonitorError, match="same model version 1"):
        compare_versions(frame, "1", "m3-monthly:1")
    with pytest.raises(MonitorError, match=r"more than one version \(1, 2\)"):
        compare_versions(frame, "m3-monthly", "2")
    with pytest.raises(MonitorError, match="alpha must be in"):
        compare_versions(frame, "1", "2", alpha=5)
    with pytest.raises(MonitorError, match="realized_accuracy"):
        compare_versions(frame.drop(columns="ase"), "1", "2")


# -------------------------------------------------------------------------------------- CLI


def test_cli_canary_prints_json_and_exits_3_on_rollback(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "model.yaml").write_text(MODEL_YAML)
    theta = rolling_forecasts("theta")
    logs = tmp_path / "logs"
    write_log(logs / "tiny", served_requests(theta, "tiny", "3"))
    biased = theta.assign(**{c: theta[c] * 1.3 for c in VALUE_COLS})
    write_log(logs / "challenger", served_requests(biased, "challenger", "4"))
    args = ["canary", "--model", "tiny", "--root", str(tmp_path), "--log", str(logs)]
    args += ["--now", "2020-03-15", "--baseline", "tiny", "--candidate", "challenger"]

    result = CliRunner().invoke(monitor_app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == ROLLBACK_EXIT, result.output
    document = json.loads(result.stdout)
    assert document["verdict"] == "rollback"
    assert document["candidate"]["model_version"] == "4"
    assert "1548 forecast(s) scored, 144 late" in result.stderr
    assert json.loads((tmp_path / "out" / "canary.json").read_text()) == document
    assert "Verdict: rollback" in (tmp_path / "out" / "canary.md").read_text()
    assert len(pd.read_csv(tmp_path / "out" / "canary_targets.csv")) == 24

    # swapped, the candidate is the better one: promote, exit 0
    swapped = CliRunner().invoke(
        monitor_app, [*args[:-4], "--baseline", "challenger", "--candidate", "3"]
    )
    assert swapped.exit_code == 0, swapped.output
    assert json.loads(swapped.stdout)["verdict"] == "promote"
