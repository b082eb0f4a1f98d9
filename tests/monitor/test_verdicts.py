"""Verdicts of every live strategy from real forecasts of M3 series: which arms are
compared on which role's records, what each verdict asks git for, the exit condition,
the gauges, and the scheduled run of all checks in one process."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tests.helpers.git_repo import git
from tests.monitor.test_accuracy import (
    MODEL_YAML,
    SEASON,
    m3_actuals,
    rolling_forecasts,
    served_requests,
    write_log,
)
from tsops.core.errors import ROLLBACK_EXIT
from tsops.deploy import gitops as g
from tsops.deploy.strategies import ROLE_LIVE, ROLE_SHADOW, Arm, Strategy, live_strategies
from tsops.monitor.accuracy import realized_accuracy
from tsops.monitor.cli import monitor_app, worst
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import load_forecast_log
from tsops.monitor.publish import METRIC_NAMES, samples_registry
from tsops.monitor.verdicts import gauges, judge

ROOT = Path(__file__).resolve().parents[2]
MODEL = "m3-monthly"
NOW = "2020-03-15"  # every target time 2018-01 .. 2019-12 has its actual
IMAGE = "ghcr.io/acme/tsops-serving"


def log_of(directory: Path, **served: tuple[str, str, str]) -> Path:
    """A forecast log: each served name -> (forecaster kind, model version, role)."""
    for name, (kind, version, role) in served.items():
        requests = served_requests(rolling_forecasts(kind), name, version, registered_model=MODEL)
        for meta, _ in requests:
            meta["role"] = role
        write_log(directory / name, requests)
    return directory


@functools.cache
def _scored(key: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        log = load_forecast_log(log_of(Path(tmp), **{n: spec for n, spec in key}))
    result = realized_accuracy(log, m3_actuals(), SEASON, now=NOW)
    return result.scored, result.by_version


def scored(**served: tuple[str, str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _scored(tuple(sorted(served.items())))


def arm(name: str, version: str, share: int, role: str = ROLE_LIVE) -> Arm:
    service = MODEL if name in ("stable", "canary", "current", "champion", "blue") else name
    return Arm(name, service, f"{MODEL}/v1.{version}.0", version, share, role)


def strategy(kind: str, *arms: Arm, baseline: str, policy: dict | None = None) -> Strategy:
    return Strategy(kind, MODEL, "production", tuple(arms), baseline, policy or {})


# --------------------------------------------------------------------- each strategy's verdict


def test_accuracy_reports_each_version_per_role_and_a_log_without_roles_is_live(tmp_path):
    _, by_version = scored(
        champion=("theta", "1", ROLE_LIVE), shadow=("seasonal_naive", "2", ROLE_SHADOW)
    )
    rows = by_version.set_index(["model_version", "role"])
    assert list(rows.index) == [("1", "live"), ("2", "shadow")]
    assert rows.loc[("2", "shadow"), "mase"] > rows.loc[("1", "live"), "mase"]
    assert (rows["n"] == 6 * 129).all()

    log = load_forecast_log(log_of(tmp_path, old=("theta", "1", ROLE_LIVE)))
    plain = realized_accuracy(log.drop(columns="role"), m3_actuals(), SEASON, now=NOW)
    assert plain.by_version["role"].tolist() == ["live"]


def test_a_worse_canary_asks_for_a_rollback_a_better_one_for_promotion():
    data = scored(stable=("theta", "1", ROLE_LIVE), canary=("seasonal_naive", "2", ROLE_LIVE))
    canary = strategy("canary", arm("stable", "1", 90), arm("canary", "2", 10), baseline="stable")
    (verdict,) = judge([canary], *data).verdicts
    assert (verdict.baseline, verdict.candidate, verdict.verdict) == (
        "stable",
        "canary",
        "rollback",
    )
    assert verdict.asks_rollback and verdict.command == f"tsops rollback {MODEL} --env production"
    assert verdict.comparison.n_targets == 24 and verdict.comparison.p_value < 0.01

    better = scored(stable=("seasonal_naive", "1", ROLE_LIVE), canary=("theta", "2", ROLE_LIVE))
    (verdict,) = judge([canary], *better).verdicts
    assert verdict.verdict == "promote" and not verdict.asks_rollback
    assert verdict.command == f"tsops canary {MODEL} --env production --percent 100"


def test_a_shadow_is_judged_on_its_copies_against_the_champions_answers():
    shadow = strategy(
        "shadow", arm("champion", "1", 100), arm("shadow", "2", 0, ROLE_SHADOW), baseline="champion"
    )
    data = scored(champion=("theta", "1", ROLE_LIVE), shadow=("seasonal_naive", "2", ROLE_SHADOW))
    (verdict,) = judge([shadow], *data).verdicts
    assert verdict.verdict == "rollback" and verdict.comparison.candidate.role == "shadow"
    # a shadow answers nobody: its rollback is a report, not the exit condition
    assert not verdict.asks_rollback and verdict.command is None
    assert not judge([shadow], *data).rollback

    # the same version's live answers are not the shadow's: nothing scored as shadow yet
    live_only = scored(champion=("theta", "1", ROLE_LIVE), other=("seasonal_naive", "2", ROLE_LIVE))
    (verdict,) = judge([shadow], *live_only).verdicts
    assert verdict.verdict == "hold" and "no scored shadow forecast of shadow" in verdict.reason


def test_blue_green_judges_the_newer_colour_and_asks_for_the_switch_that_helps():
    # green (newer, v2) idle and better: switch to it
    data = scored(blue=("seasonal_naive", "1", ROLE_LIVE), green=("theta", "2", ROLE_SHADOW))
    bg = strategy(
        "bluegreen", arm("blue", "1", 100), arm("green", "2", 0, ROLE_SHADOW), baseline="blue"
    )
    (verdict,) = judge([bg], *data).verdicts
    assert (verdict.baseline, verdict.candidate, verdict.verdict) == ("blue", "green", "promote")
    assert verdict.command == f"tsops bluegreen {MODEL} --env production --to green"
    assert not verdict.asks_rollback

    # after the switch green is live and worse than blue, now idle: switch back
    data = scored(blue=("theta", "1", ROLE_SHADOW), green=("seasonal_naive", "2", ROLE_LIVE))
    bg = strategy(
        "bluegreen", arm("blue", "1", 0, ROLE_SHADOW), arm("green", "2", 100), baseline="green"
    )
    (verdict,) = judge([bg], *data).verdicts
    assert (verdict.baseline, verdict.candidate, verdict.verdict) == ("blue", "green", "rollback")
    assert verdict.asks_rollback
    assert verdict.command == f"tsops bluegreen {MODEL} --env production --to blue"

    # the worse newer colour is idle: users are unaffected, no switch
    data = scored(blue=("theta", "1", ROLE_LIVE), green=("seasonal_naive", "2", ROLE_SHADOW))
    bg = strategy(
        "bluegreen", arm("blue", "1", 100), arm("green", "2", 0, ROLE_SHADOW), baseline="blue"
    )
    (verdict,) = judge([bg], *data).verdicts
    assert verdict.verdict == "rollback" and not verdict.asks_rollback
    assert verdict.command is None and "users are unaffected" in verdict.reason


def test_ab_judges_every_step_against_the_baseline_and_bandit_moves_weights():
    data = scored(
        current=("theta", "1", ROLE_LIVE),
        candidate=("seasonal_naive", "2", ROLE_LIVE),
        third=("theta", "3", ROLE_LIVE),
    )
    ab = strategy(
        "ab", arm("current", "1", 80), arm("candidate", "2", 10), arm("third", "3", 10),
        baseline="current",
    )  # fmt: skip
    worse, same = judge([ab], *data).verdicts
    assert (worse.candidate, worse.verdict, worse.asks_rollback) == ("candidate", "rollback", True)
    assert worse.command == (
        f"tsops ab {MODEL} --env production --weights current=100,candidate=0,third=0"
    )
    assert (same.candidate, same.verdict) == ("third", "promote")  # equal: not worse

    policy = {"floor": 0.1, "max_step": 0.2, "min_scored": 60}
    bandit = strategy(
        "bandit", arm("current", "1", 50), arm("candidate", "2", 50), baseline="current",
        policy=policy,
    )  # fmt: skip
    (moved,) = judge([bandit], *data).verdicts
    assert moved.verdict == "move" and moved.decision.weights == {"current": 70, "candidate": 30}
    assert not moved.asks_rollback
    samples = {
        (labels.get("arm"), name): value
        for labels, numbers in gauges(judge([bandit], *data))
        for name, value in numbers.items()
    }
    assert samples[("candidate", "bandit_weight")] == 30
    assert samples[("candidate", "traffic_share")] == 50
    assert samples[("current", "arm_realized_mase")] < samples[("candidate", "arm_realized_mase")]


def test_a_single_release_and_an_unscored_candidate_are_nothing_to_act_on():
    data = scored(stable=("theta", "1", ROLE_LIVE))
    single = strategy("single", arm("stable", "1", 100), baseline="stable")
    (verdict,) = judge([single], *data).verdicts
    assert verdict.verdict == "none" and verdict.arms[0]["scored"] == 6 * 129
    canary = strategy("canary", arm("stable", "1", 90), arm("canary", "2", 10), baseline="stable")
    (verdict,) = judge([canary], *data).verdicts
    assert verdict.verdict == "hold" and "no scored live forecast of canary" in verdict.reason


def test_gauges_are_published_names_with_one_label_set_each():
    data = scored(stable=("theta", "1", ROLE_LIVE), canary=("seasonal_naive", "2", ROLE_LIVE))
    canary = strategy("canary", arm("stable", "1", 90), arm("canary", "2", 10), baseline="stable")
    from prometheus_client import generate_latest

    text = generate_latest(samples_registry(gauges(judge([canary], *data)))).decode()
    found = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    assert set(found) <= set(METRIC_NAMES)
    assert found["tsops_monitor_verdict_rollback"].value == 1
    assert found["tsops_monitor_verdict_rollback"].labels["candidate"] == "canary"
    assert worst([0, 4, 3, 1]) == 3 and worst([4, 1]) == 1 and worst([0, 4]) == 4


# ------------------------------------------------------- the command, on a real overlay in git


def image(version: str) -> str:
    return f"{IMAGE}:{MODEL}-v{version}@sha256:" + version.split(".")[1] * 64


def git_repo(tmp_path: Path, setup, **served: tuple[str, str, str]) -> Path:
    """manifests/ and the model's folder in a git repository, the overlays changed by
    ``setup(repo)`` and committed; beside it the forecast log of ``served`` and the
    M3 actuals, and data/ holding the training data (up to 2017-12)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "manifests", repo / "manifests", ignore=shutil.ignore_patterns("crds"))
    (repo / "models" / MODEL).mkdir(parents=True)
    (repo / "models" / MODEL / "model.yaml").write_text(MODEL_YAML.replace("tiny", MODEL))
    setup(repo)
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "the strategy to judge")
    inputs = tmp_path / "inputs"
    log_of(inputs / "log", **served)
    m3_actuals().to_parquet(inputs / "actuals.parquet")
    trained = m3_actuals()[m3_actuals()["ds"] <= "2017-12-01"]
    (repo / "data" / MODEL).mkdir(parents=True)
    trained.to_parquet(repo / "data" / MODEL / "series.parquet")
    return repo


def verdicts_cli(repo: Path, *extra: str):
    inputs = repo.parent / "inputs"
    args = [
        "verdicts", "--model", MODEL, "--env", "production", "--log", str(inputs / "log"),
        "--actuals", str(inputs / "actuals.parquet"), "--now", NOW, "--root", str(repo), *extra,
    ]  # fmt: skip
    return CliRunner().invoke(monitor_app, args)


@pytest.fixture
def repo(tmp_path) -> Path:
    """production on a canary of v1.1.0 (registry version 2, seasonal naive) over v1.0.0
    (version 1, Theta)."""

    def canary(repo: Path) -> None:
        g.apply(
            g.release_edits(
                repo, MODEL, "1.1.0", "2", {}, image=IMAGE, digest=image("1.1.0").split("@")[1]
            )
        )
        g.apply(g.promote_edits(repo, MODEL, "staging", "production", canary=10))

    served = {"stable": ("theta", "1", ROLE_LIVE), "canary": ("seasonal_naive", "2", ROLE_LIVE)}
    return git_repo(tmp_path, canary, **served)


def test_cli_verdicts_apply_prepares_the_rollback_branch_and_exits_3(repo):
    (canary,) = live_strategies(repo, "production")
    assert canary.kind == "canary"
    result = verdicts_cli(repo, "--apply", "--out", str(repo.parent / "out"))
    assert result.exit_code == ROLLBACK_EXIT, result.output
    document = json.loads(result.stdout)
    (verdict,) = document["verdicts"]
    assert verdict["verdict"] == "rollback" and document["rollback"]
    branch = f"canary/{MODEL}-production-rollback-v2"
    assert verdict["applied"]["branch"] == branch and verdict["applied"]["created"]
    assert git(repo, "branch", "--show-current") == "main"
    assert "canaryTrafficPercent: 0" in git(
        repo, "show", f"{branch}:manifests/overlays/production/canary.yaml"
    )
    markdown = (repo.parent / "out" / "verdicts.md").read_text()
    assert "| canary | canary against stable | rollback |" in markdown


def test_cli_run_does_every_check_publishes_and_exits_with_the_worst(repo):
    inputs, out, prom = repo.parent / "inputs", repo.parent / "run", repo.parent / "prom"
    args = [
        "run", "--model", MODEL, "--log", str(inputs / "log"),
        "--actuals", str(inputs / "actuals.parquet"), "--now", NOW, "--out", str(out),
        "--prometheus-dir", str(prom), "--root", str(repo),
    ]  # fmt: skip
    result = CliRunner().invoke(monitor_app, args)
    assert result.exit_code == ROLLBACK_EXIT, result.output
    summary = json.loads((out / "run.json").read_text())
    last = result.stdout[result.stdout.rindex("\n{") :]  # the run's summary ends stdout
    assert json.loads(last) == summary
    assert summary["exit_code"] == ROLLBACK_EXIT
    assert summary["checks"]["verdicts"] == ROLLBACK_EXIT
    assert summary["checks"]["accuracy"] == 0
    assert set(summary["checks"]) == {"accuracy", "verdicts", "drift", "staleness"}
    for name in ("accuracy.json", "verdicts.json", "drift_summary.json", "staleness.json"):
        assert (out / name).exists(), name
    published = {
        sample.name
        for path in prom.glob("*.prom")
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }
    assert {
        "tsops_monitor_accuracy_mase", "tsops_monitor_verdict_rollback",
        "tsops_monitor_traffic_share", "tsops_monitor_drift_share",
        "tsops_monitor_cutoff_age_periods", "tsops_monitor_check_exit_code",
        "tsops_monitor_last_run_timestamp_seconds",
    } <= published  # fmt: skip
    assert published <= set(METRIC_NAMES)


def test_cli_verdicts_of_a_blue_green_pair_and_a_shadow_from_their_overlays(tmp_path):
    from tsops.deploy import bluegreen, shadow

    def blue_green(repo: Path) -> None:
        g.apply(bluegreen.release_edits(repo, MODEL, "production", f"{MODEL}/v1.1.0", "2",
                                        image("1.1.0")))  # fmt: skip

    # blue (v1, live) answers users with seasonal naive; green (v2, idle) gets the copies
    # and forecasts them with Theta: switching to green is what the verdict asks for
    served = {"blue": ("seasonal_naive", "1", ROLE_LIVE), "green": ("theta", "2", ROLE_SHADOW)}
    repo = git_repo(tmp_path / "bg", blue_green, **served)
    result = verdicts_cli(repo, "--apply")
    assert result.exit_code == 0, result.output
    (verdict,) = json.loads(result.stdout)["verdicts"]
    assert (verdict["kind"], verdict["candidate"], verdict["verdict"]) == (
        "bluegreen", "green", "promote",
    )  # fmt: skip
    branch = verdict["applied"]["branch"]
    assert branch == f"bluegreen/{MODEL}-production-to-green-v1-v2"
    # the branch holds exactly what `tsops bluegreen --to green` writes
    edits = bluegreen.switch_edits(repo, MODEL, "production", "green")
    for edit in edits:
        path = edit.path.relative_to(repo)
        assert git(repo, "show", f"{branch}:{path}") == edit.text.rstrip("\n"), path

    def shadowed(repo: Path) -> None:
        g.apply(shadow.start_edits(repo, MODEL, "production", f"{MODEL}/v1.1.0", "2",
                                   image("1.1.0")))  # fmt: skip

    served = {"champion": ("theta", "1", ROLE_LIVE), "shadow": ("seasonal_naive", "2", ROLE_SHADOW)}
    repo = git_repo(tmp_path / "shadow", shadowed, **served)
    result = verdicts_cli(repo, "--apply")
    assert result.exit_code == 0, result.output  # a worse shadow served nobody
    single, judged = json.loads(result.stdout)["verdicts"]
    assert single["kind"] == "single" and single["verdict"] == "none"
    assert (judged["kind"], judged["verdict"], judged["applied"]) == ("shadow", "rollback", None)
    assert judged["comparison"]["candidate"]["role"] == "shadow"


def test_cli_verdicts_of_a_bandit_commit_its_new_weights_on_tsops_bandits_branch(tmp_path):
    def bandit(repo: Path) -> None:
        candidate = (f"{MODEL}/v1.1.0", "2", image("1.1.0"))
        policy = {"floor": 0.1, "max_step": 0.2, "min_scored": 60}
        g.apply(g.ab_edits(repo, MODEL, "production", "current=50,candidate=50",
                           candidate=candidate, policy=policy))  # fmt: skip

    served = {"current": ("theta", "1", ROLE_LIVE), "candidate": ("seasonal_naive", "2", ROLE_LIVE)}
    repo = git_repo(tmp_path, bandit, **served)
    result = verdicts_cli(repo, "--apply")
    assert result.exit_code == 0, result.output  # moving weights is routine, not a rollback
    (verdict,) = json.loads(result.stdout)["verdicts"]
    assert verdict["verdict"] == "move"
    assert verdict["bandit"]["weights"] == {"current": 70, "candidate": 30}
    branch = f"bandit/{MODEL}-production-current70-candidate30"
    assert verdict["applied"]["branch"] == branch
    changed = git(repo, "diff", "--name-only", "main", branch)
    assert changed == "manifests/overlays/production/ab-weights.yaml"
    weights = git(repo, "show", f"{branch}:manifests/overlays/production/ab-weights.yaml")
    assert "weight: 70" in weights and "weight: 30" in weights


def test_drift_reference_ends_at_the_served_models_training_cutoffs(tiny_model_dir, tmp_path):
    # the monitor CronJob ingests the source as it is today: the months after training
    # (here three made-up ones) must not count as what the model was trained on
    from tsops.core.settings import load_settings
    from tsops.monitor.cli import _trained_part

    trained = m3_actuals()
    later = (
        trained.groupby("unique_id").tail(3).assign(ds=lambda f: f["ds"] + pd.DateOffset(years=1))
    )
    today = pd.concat([trained, later], ignore_index=True)
    cut = _trained_part(tmp_path, today, str(tiny_model_dir), load_settings())
    pd.testing.assert_frame_equal(cut, trained.reset_index(drop=True), check_dtype=False)


def test_the_served_version_and_its_cutoffs_are_what_users_got_not_the_shadows(tmp_path):
    from tsops.monitor.served import of_version, realized_mase, served_version

    # the shadow (v2) answered the copies last: the live version is still v1
    log = load_forecast_log(
        log_of(tmp_path, a=("theta", "1", ROLE_LIVE), b=("seasonal_naive", "2", ROLE_SHADOW))
    )
    log.loc[log["model_version"] == "2", "served_at"] += pd.Timedelta(hours=1)
    assert served_version(log) == "1"
    assert of_version(log, "2").empty and len(of_version(log, "1")) == len(log) // 2
    _, by_version = scored(a=("theta", "1", ROLE_LIVE), b=("seasonal_naive", "2", ROLE_SHADOW))
    assert realized_mase(by_version, "2") == (None, 0)
    with pytest.raises(MonitorError, match="no live forecasts"):
        served_version(log[log["role"] == "shadow"])


def test_cli_run_without_a_forecast_log_still_leaves_the_verdicts_file_the_workflow_reads(repo):
    out = repo.parent / "nolog"
    args = [
        "run", "--model", MODEL, "--actuals", str(repo.parent / "inputs" / "actuals.parquet"),
        "--now", NOW, "--out", str(out), "--root", str(repo),
    ]  # fmt: skip
    # as in the workflow without a readable log: the default folder does not exist
    env = {"TSOPS_FORECAST_LOG_DIR": str(repo.parent / "missing"), "TSOPS_FORECAST_LOG_URL": ""}
    result = CliRunner().invoke(monitor_app, args, env=env)
    summary = json.loads((out / "run.json").read_text())
    assert result.exit_code == 1 == summary["exit_code"], result.output
    assert summary["checks"]["accuracy"] == summary["checks"]["verdicts"] == 1
    assert summary["checks"]["drift"] == 0, "drift needs no forecasts"
    assert json.loads((out / "verdicts.json").read_text())["verdicts"] == []
