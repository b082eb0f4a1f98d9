"""The small test model through the stages, in this process: built once per test run,
copied for each test that changes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.once import built_once
from tests.helpers.tiny import TINY_MODEL

MODEL = "tiny"


def write_model(root: Path, model_yaml: str = TINY_MODEL) -> Path:
    """``root/models/tiny/model.yaml``; returns ``root``."""
    folder = root / "models" / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.yaml").write_text(model_yaml)
    return root


def run_stages(root: Path, upto: str = "evaluate") -> Path:
    """The stages' I/O functions on ``root``, in the pipeline's order, up to ``upto``."""
    from tsops.pipeline import backtest, evaluate, ingest, train, validate

    stages = {
        "ingest": lambda: ingest.run(root, MODEL),
        "validate": lambda: validate.run(root, MODEL),
        "backtest": lambda: backtest.run(root, MODEL, n_jobs=1),
        "train": lambda: train.run(root, MODEL, n_jobs=1),
        "evaluate": lambda: evaluate.run(root, MODEL),
    }
    for name, stage in stages.items():
        stage()
        if name == upto:
            break
    return root


@pytest.fixture(scope="session")
def staged_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the tiny model ingested, validated, backtested, trained and
    evaluated (no gate), built once per run for every xdist worker; read it, or take
    ``staged`` to change it."""
    return built_once(tmp_path_factory, "staged-tiny", lambda root: run_stages(write_model(root)))


@pytest.fixture
def staged(staged_tiny: Path, tmp_path: Path) -> Path:
    """A copy of ``staged_tiny`` of this test's own."""
    return Path(shutil.copytree(staged_tiny, tmp_path / "root"))
