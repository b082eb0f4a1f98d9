"""Where each step of a model's pipeline reads and writes, relative to the repo root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: the files of a trained model folder (``artifacts/<model>/model/``)
FORECASTER_FILE = "forecaster.joblib"
SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class ModelPaths:
    root: Path
    name: str

    @property
    def models_root(self) -> Path:
        return self.root / "models"

    @property
    def data(self) -> Path:
        return self.root / "data" / self.name / "series.parquet"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts" / self.name

    @property
    def validation(self) -> Path:
        return self.artifacts / "validation.json"

    @property
    def backtest(self) -> Path:
        return self.artifacts / "backtest"

    @property
    def cv(self) -> Path:
        """Every candidate's and every rule's forecasts at every backtest origin."""
        return self.backtest / "cv.parquet"

    @property
    def scales(self) -> Path:
        """The naive scales each backtest origin's scaled errors divide by."""
        return self.backtest / "scales.parquet"

    @property
    def selection(self) -> Path:
        return self.backtest / "selection.json"

    @property
    def model(self) -> Path:
        return self.artifacts / "model"

    @property
    def metrics(self) -> Path:
        return self.artifacts / "metrics.json"

    @property
    def tables(self) -> Path:
        return self.artifacts / "tables"

    @property
    def gate(self) -> Path:
        return self.artifacts / "gate.json"

    @property
    def plots(self) -> Path:
        return self.artifacts / "plots"
