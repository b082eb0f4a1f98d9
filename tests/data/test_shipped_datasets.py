"""Every model folder's source loads offline and passes validation as shipped."""

from pathlib import Path

import pytest

from tsops.core.config import list_models, load_model_config
from tsops.pipeline.ingest import load_source
from tsops.pipeline.validate import check_frame

ROOT = Path(__file__).resolve().parents[2]
MODELS = list_models(ROOT / "models")


@pytest.mark.parametrize("name", MODELS)
def test_source_is_valid_for_its_backtest(name):
    config = load_model_config(ROOT / "models", name)
    raw = load_source(config.source, config.freq, ROOT)
    source = config.source  # the columns as ingest maps them
    df = check_frame(
        raw,
        freq=config.freq,
        min_length=config.min_length,
        fill=config.fill,
        id_col=source.id_col,
        time_col=source.time_col,
        target_col=source.target_col,
    )
    assert df["unique_id"].nunique() == (config.source.series or df["unique_id"].nunique())
    assert df.groupby("unique_id").size().min() >= config.min_length
    assert df["ds"].max() == df.groupby("unique_id")["ds"].max().min(), "series end together"
    assert df["y"].notna().all()


def test_ingest_is_deterministic():
    config = load_model_config(ROOT / "models", "m3-monthly")
    a = load_source(config.source, config.freq, ROOT)
    b = load_source(config.source, config.freq, ROOT)
    assert a.equals(b)
