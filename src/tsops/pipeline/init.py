"""``tsops init``: a new model folder from a data file, in one command.

Reads the file as ``tsops ingest`` does (so a bad file gets the same errors), infers
the frequency, season length and a horizon from its timestamps, and writes
``models/<name>/model.yaml`` with the shipped defaults and a comment on every key,
then adds the model to ``params.yaml`` and its plots to ``dvc.yaml``. The three files
are edited round trip (ruamel.yaml), so their comments and layout stay as they were.
All edits are computed before any is written, and a failure writes nothing.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from tsops.core.config import MODEL_FILE, ModelConfig, parse_model_config
from tsops.core.errors import TsopsError
from tsops.core.io import atomic_dir, atomic_path, read_frame
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.pipeline.cadence import Inferred, infer
from tsops.pipeline.ingest import check_source_frame
from tsops.pipeline.validate import ValidationError
from tsops.pipeline.validate.parse import parse

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"
#: how dvc.yaml names a model folder's model.yaml in its stages' params
_MODEL_PARAMS = "models/${item}/model.yaml"
#: the comment column of model.yaml, as in the shipped ones
_COMMENT_COLUMN = 22

# The shipped defaults (models/m3-monthly, the default model): every key dvc.yaml
# tracks is written out, since DVC can only track a key that is in the file. `tsops
# init` fills in the name, source and what it infers from the data.
TEMPLATE = """\
# Made by `tsops init`; edit freely. Also a DVC params file: dvc.yaml lists the keys
# each stage depends on, so keep every key written out (`tsops models --kinds` lists
# the forecaster kinds a candidate can name).
name: new-model
description: the series of a file
source:
  kind: file
  path: data.csv
freq: MS
horizon: 18
season_length: 12
levels: [80, 95]      # prediction intervals: 80% and 95%
fill: none            # reject gaps; ffill, interpolate or zero fill them
seed: 0
nonnegative: auto     # forecasts and interval bounds never below zero: true, false or auto
                      # (on when the training data has no negative value)
intermittent:         # series with many zero periods get intermittent-demand methods
  min_zero_share: 0.3 # share of zero periods from which a series is intermittent...
  min_adi: 1.32       # ...and periods per demand (Syntetos-Boylan cut-off)
baseline: seasonal_naive  # what the gate compares with
candidates:
  seasonal_naive:
    kind: seasonal_naive
  # statsforecast engine: compiled, several times faster than statsmodels' methods
  ets:
    kind: statsforecast
    # damped trends only: as accurate as the full model space on M3, in half the time
    params: {model: AutoETS, options: {damped: true}}
  theta:
    kind: statsforecast
    params: {model: Theta}
  dotm:
    kind: statsforecast
    params: {model: DynamicOptimizedTheta}
  gbm:
    kind: gbm
    # one gradient-boosting model across the series: lags and rolling means of three
    # seasons, calendar features of each target date
    params: {lags: 36, windows: [3, 6, 12, 24, 36]}
backtest:
  windows: 3          # rolling origins
  step: 9             # periods between origins: half a horizon
selection:
  rule: mean_ensemble   # the mean of the candidates but the baseline
  metric: mase
gate:
  min_skill_vs_naive: 0.0         # no worse MASE than seasonal naive; models/m3-monthly asks 5%
  max_regression_vs_champion: 0.02
  min_coverage_ratio: 0.8         # e.g. >= 76% of actuals inside the 95% interval
serving:
  max_horizon: 36     # the longest forecast the server gives: two horizons
  cpu: 500m
  memory: 1Gi
# Watching the served model (tsops monitor, tsops retrain); not a training parameter.
monitoring:
  stale_after_periods: 3        # alert when the served cutoff is older than 3 periods
  actuals_overdue_periods: 2    # alert when no actual has arrived for 2 periods
  drift_threshold: 0.5          # Evidently: share of drifted columns for dataset drift
  retrain:
    on_new_period: true         # a new complete period landed since the training data
    max_error_ratio: 1.25       # realized MASE > 1.25 x backtest MASE
    min_scored: 12              # pairs needed before the error trigger counts
    on_drift: false             # trending series drift in level by design: report only
"""


class InitError(TsopsError, ValueError):
    """A model folder ``tsops init`` cannot make; nothing was written."""


# -------------------------------------------------------------------------- the files


def round_trip_yaml() -> YAML:
    """ruamel.yaml as the repository's YAML files are laid out (they load and dump
    back byte for byte)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    return yaml


def _dump(doc: Any) -> str:
    buffer = io.StringIO()
    round_trip_yaml().dump(doc, buffer)
    return buffer.getvalue()


def _flow(value: dict | list) -> CommentedMap | CommentedSeq:
    node = CommentedMap(value) if isinstance(value, dict) else CommentedSeq(value)
    node.fa.set_flow_style()
    return node


def model_yaml(
    name: str,
    source: dict[str, str],
    inferred: Inferred,
    description: str,
    fill: str,
    tracked: list[str],
    source_note: str | None = None,
) -> str:
    """The model.yaml text: ``TEMPLATE`` with this model's values and the reasons for
    the inferred ones as comments; every key in ``tracked`` (what dvc.yaml's stages
    list) is written out, with the config's default when the template lacks it."""
    doc = round_trip_yaml().load(TEMPLATE)
    doc["name"] = name
    doc["description"] = description
    src = CommentedMap(source)
    if source_note:
        src.yaml_add_eol_comment(source_note, "path", column=_COMMENT_COLUMN)
    doc["source"] = src
    s, h = inferred.season_length, inferred.horizon
    for key, value in (("freq", inferred.freq), ("horizon", h), ("season_length", s)):
        doc[key] = value
        doc.yaml_add_eol_comment(inferred.why[key], key, column=_COMMENT_COLUMN)
    doc["fill"] = fill
    gbm = doc["candidates"]["gbm"]
    if s > 1:
        gbm["params"] = _flow(
            {"lags": 3 * s, "windows": _flow(sorted({3, s // 2, s, 2 * s, 3 * s} - {0, 1}))}
        )
    else:
        # no season: the forecaster's own lags (4) and rolling window (3)
        del gbm["params"]
    doc["backtest"]["step"] = max(h // 2, 1)
    doc["serving"]["max_horizon"] = 2 * h
    _write_out_tracked(doc, tracked)
    return _dump(doc)


def _write_out_tracked(doc: CommentedMap, tracked: list[str]) -> None:
    defaults = ModelConfig.model_fields
    for key in tracked:
        if key in doc:
            continue
        field = defaults.get(key)
        if field is None or field.is_required():
            raise InitError(
                f"dvc.yaml's stages track the model.yaml key {key!r}, which tsops init has "
                "neither in its template nor as a default of tsops.core.config: write the "
                "model.yaml by hand (copy models/m3-monthly), or fix dvc.yaml"
            )
        value = field.get_default(call_default_factory=True)
        doc[key] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        doc.yaml_add_eol_comment("tracked by dvc.yaml; the default", key, column=_COMMENT_COLUMN)


def tracked_keys(dvc_doc: Any) -> list[str]:
    """The model.yaml keys dvc.yaml's stages list as params, in first-seen order."""
    keys: list[str] = []
    for stage in (dvc_doc.get("stages") or {}).values():
        body = stage.get("do", stage) if isinstance(stage, dict) else {}
        for entry in body.get("params") or []:
            if isinstance(entry, dict):
                for key in entry.get(_MODEL_PARAMS) or []:
                    if key not in keys:
                        keys.append(str(key))
    return keys


def add_to_params(doc: Any, name: str) -> None:
    """``name`` appended to params.yaml's ``models`` (once)."""
    models = doc.get("models")
    if models is None:
        doc["models"] = models = CommentedSeq()
    if not isinstance(models, list):
        raise InitError(f"{PARAMS_FILE}: `models` must be a list of model folder names")
    if name not in models:
        models.append(name)


def plots_of(name: str, baseline: str) -> list[Any]:
    """The plots ``tsops evaluate`` writes for a model, as dvc.yaml lists them."""
    plots = f"artifacts/{name}/plots"
    return [
        {
            f"{name} error by horizon": {
                "template": "linear",
                "x": "step",
                "y": {f"{plots}/error_by_horizon.csv": _flow(["selected", baseline])},
                "y_label": "MASE",
            }
        },
        {
            f"{name} forecast vs actuals": {
                "template": "linear",
                "x": "ds",
                "y": {f"{plots}/forecast.csv": _flow(["actual", "forecast"])},
            }
        },
        f"{plots}/forecast.png",
        f"{plots}/error_by_horizon.png",
    ]


def add_plots(doc: Any, name: str, baseline: str) -> None:
    """The model's plots in dvc.yaml's ``plots``: the templated ones after the last
    templated entry, the images at the end, as the shipped models' are; none twice."""
    plots = doc.get("plots")
    if plots is None:
        doc["plots"] = plots = CommentedSeq()
    present = {next(iter(p)) if isinstance(p, dict) else p for p in plots}
    templated = [i for i, p in enumerate(plots) if isinstance(p, dict)]
    at = templated[-1] + 1 if templated else len(plots)
    for plot in plots_of(name, baseline):
        key = next(iter(plot)) if isinstance(plot, dict) else plot
        if key in present:
            continue
        if isinstance(plot, dict):
            plots.insert(at, CommentedMap(plot))
            at += 1
        else:
            plots.append(plot)


# ---------------------------------------------------------------------------------- run


def run(
    root: Path,
    name: str,
    file: Path,
    id_col: str | None = None,
    time_col: str | None = None,
    target_col: str | None = None,
    freq: str | None = None,
    season_length: int | None = None,
    horizon: int | None = None,
    fill: str = "none",
    description: str | None = None,
) -> dict:
    """Write ``models/<name>/model.yaml`` for the series in ``file`` and add the model
    to params.yaml and dvc.yaml's plots; returns what was inferred and written.

    The file is read and validated as ``tsops ingest`` will read it (same errors);
    nothing is written when anything fails.
    """
    root = Path(root)
    _check_name(name)
    folder = root / "models" / name
    if folder.exists():
        raise InitError(
            f"{folder} already exists: tsops init never overwrites a model folder; choose "
            f"another name, or edit {folder / MODEL_FILE}"
        )
    params_path, dvc_path = root / PARAMS_FILE, root / DVC_FILE
    for path in (params_path, dvc_path):
        if not path.exists():
            raise InitError(
                f"{path} does not exist: run tsops init at the repository's root (or pass "
                "--root), where params.yaml and dvc.yaml are"
            )
    columns = {
        "id_col": id_col or ID_COL,
        "time_col": time_col or TIME_COL,
        "target_col": target_col or TARGET_COL,
    }
    raw = read_frame(file)
    parsed = parse(raw, **columns)
    if parsed.fatal:
        raise ValidationError(parsed.problems)
    frame = parsed.canonical()
    ds_by_series = [
        pd.DatetimeIndex(ds.drop_duplicates().sort_values())
        for _, ds in frame.groupby(ID_COL, sort=True)[TIME_COL]
    ]
    inferred = infer(ds_by_series, freq, season_length, horizon)

    source = {"kind": "file", "path": _source_path(root, Path(file))}
    source |= {k: v for k, v in columns.items() if v != _CANONICAL[k]}
    note = None if _inside(root, Path(file)) else "outside the repository: copy it in"
    dvc_doc = _load_mapping(dvc_path)
    text = model_yaml(
        name,
        source,
        inferred,
        description or f"{len(ds_by_series)} series from {Path(file).name}",
        fill,
        tracked_keys(dvc_doc),
        note,
    )
    config = parse_model_config(text, source=f"the model.yaml for {name}", expected_name=name)
    # the same reading and checks `tsops ingest` will apply: a bad file fails here
    clean = check_source_frame(raw, config, config.source, fill=fill)

    params_doc = _load_mapping(params_path)
    add_to_params(params_doc, name)
    add_plots(dvc_doc, name, config.baseline)
    _write_all(folder, text, [(params_path, _dump(params_doc)), (dvc_path, _dump(dvc_doc))])
    return {
        "name": name,
        "model_yaml": str(folder / MODEL_FILE),
        "freq": inferred.freq,
        "season_length": inferred.season_length,
        "horizon": inferred.horizon,
        "why": inferred.why,
        "n_series": len(ds_by_series),
        "n_observations": len(clean),
        "outside_repo": note is not None,
    }


def _load_mapping(path: Path) -> CommentedMap:
    """A YAML file of the repository, round trip; an empty one is an empty mapping."""
    try:
        doc = round_trip_yaml().load(path.read_text(encoding="utf-8"))
    except (YAMLError, UnicodeDecodeError) as exc:
        raise InitError(f"{path} is not valid YAML ({_first_line(exc)}); fix it first") from exc
    if doc is None:
        return CommentedMap()
    if not isinstance(doc, dict):
        raise InitError(f"{path} must be a mapping of keys; fix it first")
    return doc


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


_CANONICAL = {"id_col": ID_COL, "time_col": TIME_COL, "target_col": TARGET_COL}


def _check_name(name: str) -> None:
    field = ModelConfig.model_fields["name"]
    pattern = next(m.pattern for m in field.metadata if getattr(m, "pattern", None))
    if not re.fullmatch(pattern, name):
        raise InitError(
            f"model name {name!r} is not usable: lower-case letters, digits and '-' only, "
            "starting and ending with a letter or digit (it names a folder, an MLflow "
            "registered model and a Kubernetes object), e.g. store-sales"
        )


def _inside(root: Path, file: Path) -> bool:
    return Path(os.path.abspath(file)).is_relative_to(os.path.abspath(root))


def _source_path(root: Path, file: Path) -> str:
    """The file as model.yaml names it: relative to the repository when inside it."""
    absolute = Path(os.path.abspath(file))
    if _inside(root, file):
        return absolute.relative_to(os.path.abspath(root)).as_posix()
    return absolute.as_posix()


def _write_all(folder: Path, model_text: str, edits: list[tuple[Path, str]]) -> None:
    """The model folder, then each edited file; if one write fails, the ones before it
    are undone, so the repository is as it was."""
    undo: list[Callable[[], None]] = []
    try:
        with atomic_dir(folder) as tmp:
            (tmp / MODEL_FILE).write_text(model_text)
        undo.append(lambda: _remove_folder(folder))
        for path, text in edits:
            before = path.read_text()
            with atomic_path(path) as tmp:
                tmp.write_text(text)
            undo.append(lambda path=path, before=before: path.write_text(before))
    except BaseException:
        for step in reversed(undo):
            step()
        raise


def _remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
