"""Classes of series through the stages, in this process: a small panel of regular,
short and intermittent series is classified, backtested and selected per class, trained
as one forecaster that routes each series to its class, scored apart in metrics.json and
the tables, and gated on the regular class alone; forecasts stay non-negative."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from tests.helpers.synthetic import make_series
from tests.pipeline.conftest import MODEL, write_model
from tsops.core.config import GateConfig, load, parse_model_config
from tsops.core.io import read_json, write_parquet
from tsops.core.metrics import CLASS_COL, MODEL_COL
from tsops.core.schema import ID_COL, MEAN_COL, TARGET_COL, TIME_COL
from tsops.core.verdict import GateResult
from tsops.forecasters.combine import ByClass, Combined
from tsops.forecasters.intermittent import DEFAULT_MIN_ZERO_SHARE, SB_ADI_CUTOFF
from tsops.forecasters.short import ShortSeries, ladder
from tsops.pipeline import backtest, classes, evaluate, gate, train
from tsops.pipeline.selection import SELECTED

# quick candidates: statsforecast's Theta, seasonal naive; one intermittent method
MIXED_MODEL = """\
name: tiny
source: {kind: file, path: x.csv}
freq: MS
horizon: 6
season_length: 12
levels: [80]
baseline: seasonal_naive
candidates:
  seasonal_naive: {kind: seasonal_naive}
  theta: {kind: statsforecast, params: {model: Theta}}
backtest: {windows: 2, step: 6}
selection: {rule: median_ensemble}
fill: none
seed: 0
nonnegative: auto
intermittent:
  min_zero_share: 0.3
  min_adi: 1.32
  candidates:
    croston_sba: {kind: intermittent, params: {method: CrostonSBA}}
serving: {}
gate: {min_skill_vs_naive: -1.0}
"""


def _panel() -> pd.DataFrame:
    """Three regular series of 48 months; two short ones (20 months falling towards zero,
    and 4 months); two intermittent ones (one of them short)."""
    regular = make_series(n_series=3, length=48, seed=1)
    end = regular[TIME_COL].max()
    rng = np.random.default_rng(3)

    def series(uid: str, y: np.ndarray) -> pd.DataFrame:
        ds = pd.date_range(end=end, periods=len(y), freq="MS")
        return pd.DataFrame({ID_COL: uid, TIME_COL: ds, TARGET_COL: y})

    parts = [
        regular,
        series("new_s0", np.linspace(40.0, 2.0, 20) + rng.normal(0, 0.5, 20)),
        series("new_s1", np.array([5.0, 6.0, 7.0, 8.0])),
    ]
    for uid, n in (("spare_a", 48), ("spare_b", 10)):
        y = rng.poisson(0.35, n) * 4.0
        y[-1] = 5.0  # a demand at the end, so no series is all zeros
        parts.append(series(uid, y))
    df = pd.concat(parts, ignore_index=True)
    return df.sort_values([ID_COL, TIME_COL], ignore_index=True)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory):
    """A root whose data is ``_panel``, backtested, trained and evaluated."""
    root = write_model(tmp_path_factory.mktemp("mixed"), MIXED_MODEL)
    _, paths = load(root, MODEL)
    write_parquet(_panel(), paths.data)
    backtest.run(root, MODEL, n_jobs=1)
    train.run(root, MODEL, n_jobs=1)
    evaluate.run(root, MODEL)
    return root


# ------------------------------------------------------------------------------ classes


def test_each_series_gets_its_class_and_intermittent_wins_over_short():
    config = parse_model_config(MIXED_MODEL)
    assert config.min_length == 24 + 6
    found = classes.classify(_panel(), config).to_dict()
    assert found == {
        "new_s0": "short",
        "new_s1": "short",
        "s0": "regular",
        "s1": "regular",
        "s2": "regular",
        "spare_a": "intermittent",
        "spare_b": "intermittent",  # 10 months: short too, but intermittent demand
    }
    off = parse_model_config(
        MIXED_MODEL.replace("  min_adi: 1.32", "  min_adi: 1.32\n  detect: false")
    )
    assert set(classes.classify(_panel(), off)) == {"regular", "short"}


def test_the_config_defaults_are_the_intermittent_modules():
    config = parse_model_config(MIXED_MODEL.replace("nonnegative: auto\n", ""))
    assert (config.intermittent.min_zero_share, config.intermittent.min_adi) == (
        DEFAULT_MIN_ZERO_SHARE,
        SB_ADI_CUTOFF,
    )
    assert config.nonnegative == "auto"
    assert set(classes.class_candidates(config, "intermittent")) == {
        "seasonal_naive",
        "croston_sba",
    }


def test_nonnegative_is_auto_unless_model_yaml_says():
    panel = _panel()
    config = parse_model_config(MIXED_MODEL)
    assert classes.nonnegative(panel, config)
    assert not classes.nonnegative(panel.assign(y=panel.y - 1000), config)
    forced = parse_model_config(MIXED_MODEL.replace("nonnegative: auto", "nonnegative: true"))
    assert classes.nonnegative(panel.assign(y=panel.y - 1000), forced)
    off = parse_model_config(MIXED_MODEL.replace("nonnegative: auto", "nonnegative: false"))
    assert not classes.nonnegative(panel, off)


# ------------------------------------------------------------------------------ short


@pytest.mark.parametrize(
    ("n", "methods"),
    [
        (1, ["naive"]),
        (2, ["naive"]),
        (5, ["naive", "AutoETS (non-seasonal)", "Theta (non-seasonal)"]),
        (13, ["naive", "seasonal_naive", "AutoETS (non-seasonal)", "Theta (non-seasonal)"]),
        (24, ["naive", "seasonal_naive", "AutoETS (seasonal)", "Theta (seasonal)"]),
    ],
)
def test_a_short_series_gets_the_methods_its_length_allows(n, methods):
    y = 50 + np.arange(n, dtype=float)
    model = ShortSeries(season_length=12).fit(y)
    assert model.methods_ == methods
    assert len(ladder(n, 12)) == len(methods)
    out = model.forecast(4, [80])
    assert np.isfinite(np.stack(list(out.values()))).all()
    assert (out["lo-80"] <= out[MEAN_COL]).all() and (out[MEAN_COL] <= out["hi-80"]).all()
    again = model.update(np.r_[y, y[-1] + 1])
    assert again.forecast(1, [80])[MEAN_COL].shape == (1,)


# ------------------------------------------------------------------------------ stages


def test_backtest_scores_each_class_on_the_windows_it_has(mixed):
    _, paths = load(mixed, MODEL)
    cv = pd.read_parquet(paths.cv)
    models = cv.groupby(CLASS_COL)[MODEL_COL].unique().map(set).to_dict()
    assert {"seasonal_naive", "theta", SELECTED} <= models["regular"]
    assert {"seasonal_naive", "short", SELECTED} <= models["short"]
    assert {"seasonal_naive", "croston_sba", SELECTED} <= models["intermittent"]
    # new_s1 (4 months) has no window; new_s0 (20) only the last, on 14 months >= 12
    scored = cv[cv[CLASS_COL] == "short"].groupby(ID_COL)["cutoff"].nunique().to_dict()
    assert scored == {"new_s0": 1}
    selection = read_json(paths.selection)
    assert (selection["rule"], selection["members"], selection["gated_class"]) == (
        "median_ensemble",
        ["theta"],
        "regular",
    )
    assert selection["classes"]["short"]["members"] == ["short"]
    assert selection["classes"]["intermittent"]["metric"] == "rmsse"
    assert selection["series_class"] == {
        "new_s0": "short",
        "new_s1": "short",
        "spare_a": "intermittent",
        "spare_b": "intermittent",
    }
    # what the registered model would have forecast is never below zero
    registered = cv[cv[MODEL_COL].isin([SELECTED, "median_ensemble"])]
    assert (registered[[MEAN_COL, "lo-80", "hi-80"]] >= 0).all().all()


def test_the_registered_model_routes_each_series_to_its_class(mixed):
    _, paths = load(mixed, MODEL)
    forecaster, spec = train.load_trained(paths.model)
    assert isinstance(forecaster, ByClass)
    assert {c: type(f) for c, f in forecaster.forecasters.items()} == {
        "regular": Combined,
        "short": Combined,
        "intermittent": Combined,
    }
    assert spec["class_counts"] == {"regular": 3, "short": 2, "intermittent": 2}
    assert spec["series_class"]["new_s1"] == "short" and spec["nonnegative"] is True
    forecast = forecaster.predict(12, level=[80])
    assert forecast.groupby(ID_COL).size().to_dict() == dict.fromkeys(spec["series_class"], 12)
    assert (forecast[[MEAN_COL, "lo-80", "hi-80"]] >= 0).all().all()
    # the falling short series would go below zero: kept at zero instead
    assert forecast.loc[forecast[ID_COL] == "new_s0", "lo-80"].min() == 0.0
    # history routes too, and a pickled model forecasts the same
    history = _panel().groupby(ID_COL).tail(3)
    again = pickle.loads(pickle.dumps(forecaster))
    pd.testing.assert_frame_equal(
        forecaster.predict(3, [80], history=history), again.predict(3, [80], history=history)
    )


def test_metrics_and_tables_count_the_classes_apart(mixed):
    _, paths = load(mixed, MODEL)
    metrics = read_json(paths.metrics)
    assert metrics["gated_class"] == "regular"
    assert metrics["n_series"] == 3  # the top level is the regular class', as before
    counts = {c: (e["n_series"], e["scored_series"]) for c, e in metrics["classes"].items()}
    # 10 months of spare_b leave 4 before the last window: fewer than a season, unscored
    assert counts == {"regular": (3, 3), "short": (2, 1), "intermittent": (2, 1)}
    assert metrics["classes"]["regular"]["selected"] == metrics["selected"]
    assert metrics["classes"]["intermittent"]["rule"] == "median_ensemble"
    per_series = pd.read_csv(paths.tables / "per_series.csv")
    assert per_series.columns[0] == CLASS_COL
    assert per_series.groupby(CLASS_COL)[ID_COL].nunique().to_dict() == {
        "intermittent": 1,
        "regular": 3,
        "short": 1,
    }


def test_the_gate_decides_on_the_regular_class_and_reports_the_others(mixed, tmp_path):
    import shutil

    root = shutil.copytree(mixed, tmp_path / "root")
    _, paths = load(root, MODEL)
    result = gate.run(root, MODEL, against_champion=False)
    metrics = read_json(paths.metrics)
    skill = next(c for c in result.checks if c.name == "skill_vs_seasonal_naive")
    assert skill.value == pytest.approx(metrics["skill_vs_naive"])
    written = read_json(paths.gate)
    assert written["gated_class"] == "regular" and written["classes"] == metrics["classes"]
    assert GateResult.from_dict(written).classes == metrics["classes"]
    table = result.table()
    assert "checked on the 3 regular series only; reported apart:" in table
    assert "intermittent 2, MASE" in table and "short 2, MASE" in table


def test_a_combined_model_pickled_before_nonnegative_still_serves(mixed):
    _, paths = load(mixed, MODEL)
    forecaster, _ = train.load_trained(paths.model)
    regular = forecaster.forecasters["regular"]
    del regular.__dict__["nonnegative"]  # as a model registered before this release
    old = pickle.loads(pickle.dumps(regular))
    assert old.predict(2, [80]).shape == (6, 5)


def test_a_panel_gated_on_its_intermittent_series_is_judged_by_their_metric():
    candidate, baseline = {"mase": 1.1, "rmsse": 0.8}, {"mase": 1.0, "rmsse": 1.0}
    config = GateConfig(min_skill_vs_naive=0.05)
    (by_mase,) = gate.evaluate_gate(candidate, baseline, config, []).checks
    (by_rmsse,) = gate.evaluate_gate(candidate, baseline, config, [], metric="rmsse").checks
    assert not by_mase.passed and by_mase.detail.startswith("MASE 1.1000")
    assert by_rmsse.passed and by_rmsse.detail == "RMSSE 0.8000 vs seasonal naive 1.0000"
