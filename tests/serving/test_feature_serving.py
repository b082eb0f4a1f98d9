"""``tsops serve --feature_store``: the flag, its environment default and the settings
the server hands the feature store. What the server answers with a store (on real
Feast and Redis, Redis going down included) is in tests/platform/test_features.py,
the one file of the run that imports Feast."""

from __future__ import annotations

from pathlib import Path

from tsops.core.settings import load_settings
from tsops.platform.features import OnlineFeatures
from tsops.serving.server import _feature_store, build_parser


def test_the_flag_defaults_to_the_environment_and_passes_the_stores_on(monkeypatch):
    monkeypatch.setenv("TSOPS_FEATURE_STORE", "features")
    monkeypatch.setenv("TSOPS_FEATURE_STORE_REDIS_URL", "redis://:secret@redis:6379/2")
    monkeypatch.setenv("TSOPS_FEATURE_REGISTRY_URL", "postgresql+psycopg://feast@db/feast")
    settings = load_settings()
    parser = build_parser(settings.http_host, settings.forecast_log_dir, settings.feature_store)
    assert "--feature_store DIR" in parser.format_help()

    store = _feature_store(parser.parse_args([]), settings)
    assert isinstance(store, OnlineFeatures) and store.repo == Path("features")
    assert store.redis_url == "redis://:secret@redis:6379/2"
    assert store.registry_url == "postgresql+psycopg://feast@db/feast"
    assert store.where == "Redis redis:6379/2"  # what messages show: no password
    other = _feature_store(parser.parse_args(["--feature_store", "elsewhere"]), settings)
    assert other.repo == Path("elsewhere")
    assert _feature_store(parser.parse_args(["--feature_store", ""]), settings) is None

    for unset in ("", None):  # off by default, and with an empty value
        if unset is None:
            monkeypatch.delenv("TSOPS_FEATURE_STORE")
        else:
            monkeypatch.setenv("TSOPS_FEATURE_STORE", unset)
        settings = load_settings()
        parser = build_parser(settings.http_host, settings.forecast_log_dir, settings.feature_store)
        assert _feature_store(parser.parse_args([]), settings) is None
