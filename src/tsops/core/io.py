"""File output that never leaves a half-written file behind.

Everything is written to a temporary sibling and renamed into place, so a failure
(bad input, full disk, Ctrl-C) leaves the previous version untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tsops.core.errors import TsopsError
from tsops.core.paths import ModelPaths


class MissingInputError(TsopsError, FileNotFoundError):
    """A file a step reads is not there; the message says which command writes it."""


class FileFormatError(TsopsError, ValueError):
    """A data file of a type tsops does not read."""


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary directory that replaces the directory ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Deterministic Parquet: same frame and library versions give the same bytes.

    No index, fixed compression and row-group size, so the DVC hash of ``data/``
    only changes when the data does.
    """
    table = pa.Table.from_pandas(df, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=1_000_000)


def read_frame(path: Path) -> pd.DataFrame:
    """A CSV (every column as text, for validation to parse) or Parquet file."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".txt"):
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    raise FileFormatError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")


def read_series(paths: ModelPaths) -> pd.DataFrame:
    """The model's ingested series, as ``tsops ingest`` validated and wrote them.

    Not validated again: ``tsops ingest`` checked the frame before writing it, and the
    ``validate`` stage checks it against today's model.yaml before any stage reads it.
    """
    if not paths.data.exists():
        raise MissingInputError(
            f"{paths.data} does not exist: run `tsops ingest {paths.name}` (or `dvc pull`) first"
        )
    return pd.read_parquet(paths.data)


def require(path: Path, command: str) -> Path:
    """``path``, which an earlier stage writes; missing, the error names the ``command``
    that writes it."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: run `dvc repro` (or `{command}`) first")
    return path


def write_json(data: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
