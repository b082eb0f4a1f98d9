"""The windows drift compares and the features it compares them on.

The reference window is the training data, the current window the actuals after
it (:func:`windows`); both become features on each series' own training scale.

Raw ``y`` is not compared: a panel mixes series of very different scales (M3 has
series around 100 and around 10,000), so the distribution of raw ``y`` mostly says
*which* series are in a window, not whether any of them changed. Each observation
instead becomes a few numbers on every series' own training scale:

- ``level``: ``y`` divided by the series' mean ``|y|`` in training, so 1 is the
  series' usual size and a 40% level shift moves its values to about 1.4;
- ``seasonal_change``: ``y_t - y_{t-s}`` divided by the series' mean
  ``|y_t - y_{t-s}|`` in training (the MASE scale), the change over one season in
  units of its usual seasonal change; a trend keeps it steady, a break makes it jump;
- ``step_change``: ``y_t - y_{t-1}`` divided by the series' mean ``|y_t - y_{t-1}|``
  in training, the period-over-period change; it barely moves with a level shift
  (only the break period jumps) but grows when a series becomes noisier.

Calendar position (month, quarter) is left out on purpose: the current window covers
only the periods since training, so its calendar differs from the training calendar
by construction and would always "drift".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL, to_offset
from tsops.monitor.errors import MonitorError
from tsops.monitor.inputs import as_utc_naive, long_frame

LEVEL = "level"
SEASONAL_CHANGE = "seasonal_change"
STEP_CHANGE = "step_change"


def after_training(trained: pd.DataFrame, observed: pd.DataFrame) -> pd.DataFrame:
    """The actuals after each series' training data (all of a series not trained on)."""
    trained_until = observed[ID_COL].map(trained.groupby(ID_COL)[TIME_COL].max())
    return observed[trained_until.isna() | (observed[TIME_COL] > trained_until)]


def windows(
    trained: pd.DataFrame, observed: pd.DataFrame, since: str | pd.Timestamp | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference and current windows: by default the training data and the actuals
    after each series' training data; with ``since``, the training data before it and
    the actuals from it on (to compare the last part of the training data with the rest)."""
    if since is None:
        return trained, after_training(trained, observed)
    start = as_utc_naive(since)
    return trained[trained[TIME_COL] < start], observed[observed[TIME_COL] >= start]


def drift_features(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    season_length: int,
    freq: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference and current feature frames Evidently compares.

    Both have ``unique_id, ds, y`` and the feature columns (``level``,
    ``seasonal_change`` and, when ``season_length > 1``, ``step_change``). Scales come
    from the reference only, so a break in the current window cannot hide itself by
    inflating them. Lags reach back into the reference, so the first season of the
    current window has its seasonal change too. With ``freq`` the value ``s`` periods
    earlier is found by time (a gap gives no feature); without it, by position, which
    assumes gap-free series (as validated training data is).

    A feature is missing (NaN) where it cannot be computed: before a series' first
    season, for series absent from the reference, or for a series whose training
    scale is zero (a flat series: any change would be infinitely large).
    """
    ref_features, cur_features, _ = scaled_features(reference, current, season_length, freq)
    return ref_features, cur_features


def scaled_features(
    reference: pd.DataFrame, current: pd.DataFrame, season_length: int, freq: str | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`drift_features` and the per-series scales (one row per series, a column
    per feature) they were divided by."""
    if season_length < 1:
        raise MonitorError(f"season_length must be at least 1, got {season_length}")
    reference = _checked_window(reference, "reference (training data)")
    current = _checked_window(current, "current window (actuals after training)")
    overlap = current.merge(reference[[ID_COL, TIME_COL]], on=[ID_COL, TIME_COL])
    if not overlap.empty:
        first = overlap.iloc[0]
        raise MonitorError(
            f"the current window repeats {len(overlap)} observation(s) of the reference "
            f"(e.g. series {first[ID_COL]!r} at {first[TIME_COL].date()}): the current "
            "window is what arrived after training; keep only each series' observations "
            "after its last training time"
        )
    offset = to_offset(freq) if freq is not None else None
    both = pd.concat(
        [reference.assign(_ref=True), current.assign(_ref=False)], ignore_index=True
    ).sort_values([ID_COL, TIME_COL], kind="stable", ignore_index=True)

    lags = {SEASONAL_CHANGE: season_length}
    if season_length > 1:
        lags[STEP_CHANGE] = 1
    changes = {name: both[TARGET_COL] - _lagged(both, lag, offset) for name, lag in lags.items()}

    in_reference = both["_ref"].to_numpy()
    scales = pd.DataFrame({LEVEL: both[TARGET_COL].abs().where(in_reference)})
    for name, change in changes.items():
        scales[name] = change.abs().where(in_reference)
    # mean over each series' reference rows; a zero scale (flat series) gives no feature
    by_series = scales.groupby(both[ID_COL]).mean().replace(0.0, np.nan)
    per_row = by_series.reindex(both[ID_COL]).reset_index(drop=True)

    features = both[[ID_COL, TIME_COL, TARGET_COL]].copy()
    features[LEVEL] = both[TARGET_COL] / per_row[LEVEL]
    for name, change in changes.items():
        features[name] = change / per_row[name]
    return (
        features[in_reference].reset_index(drop=True),
        features[~in_reference].reset_index(drop=True),
        by_series,
    )


def feature_columns(season_length: int) -> list[str]:
    """The drift columns for a season length (one change column when it is 1)."""
    return [LEVEL, SEASONAL_CHANGE, *([STEP_CHANGE] if season_length > 1 else [])]


def _checked_window(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    out = long_frame(frame, what)
    if out.empty:
        raise MonitorError(_empty_message(what))
    return out


def _empty_message(what: str) -> str:
    if what.startswith("reference"):
        return (
            "the reference (training data) has no observations: run `tsops ingest <model>` "
            "(or `dvc pull`), or move --since later so some training data lies before it"
        )
    return (
        "the current window has no observations: no actuals have arrived after the "
        "training data yet. Wait for new actuals, pass --actuals with newer observations, "
        "or pass --since to compare the last part of the training data with the rest"
    )


def _lagged(frame: pd.DataFrame, lag: int, offset: pd.DateOffset | None) -> pd.Series:
    """``y`` of the same series ``lag`` periods earlier, aligned to ``frame``'s rows."""
    if offset is None:
        return frame.groupby(ID_COL)[TARGET_COL].shift(lag)
    earlier = frame[[ID_COL, TIME_COL, TARGET_COL]].copy()
    earlier[TIME_COL] = earlier[TIME_COL] + lag * offset
    merged = frame[[ID_COL, TIME_COL]].merge(
        earlier, on=[ID_COL, TIME_COL], how="left", validate="one_to_one"
    )
    return pd.Series(merged[TARGET_COL].to_numpy(), index=frame.index)
