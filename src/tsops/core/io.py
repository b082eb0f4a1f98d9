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
    """A data file tsops cannot read: a type it does not read, not what its name says,
    or corrupt; the message says which and how to fix it."""


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


#: the file types ``read_frame`` reads, by lower-cased suffix
CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIX = ".parquet"
_PARQUET_MAGIC = b"PAR1"
# What a file that is not CSV text nor Parquet usually is, by its first bytes: named in
# the error, with what to do instead.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (_PARQUET_MAGIC, "a Parquet file: name it .parquet"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?): export the sheet as CSV (UTF-8)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls workbook: export the sheet as CSV (UTF-8)"),
    (b"\x1f\x8b", "gzip-compressed: decompress it first (gunzip)"),
    (b"(\xb5/\xfd", "zstd-compressed: decompress it first (unzstd)"),
    (b"BZh", "bzip2-compressed: decompress it first (bunzip2)"),
    (b"SQLite format 3\x00", "an SQLite database: export the table as CSV"),
    (b"ARROW1", "an Arrow IPC (Feather) file: write it as Parquet or CSV"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8 (Excel: 'CSV UTF-8')"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8 (Excel: 'CSV UTF-8')"),
    (b"%PDF", "a PDF document, not data"),
)
#: bytes of a CSV's start inspected to recognise binary files
_SNIFF_BYTES = 64 * 1024
_UTF8_FIX = (
    "save the file as UTF-8 (Excel: 'CSV UTF-8'; or `iconv -f latin1 -t utf-8 in.csv > out.csv`)"
)


def read_frame(path: Path) -> pd.DataFrame:
    """A CSV (every column as text, for validation to parse) or Parquet file.

    A file that cannot be read as its name says (empty, not UTF-8, binary, cut short,
    not Parquet, an unknown type) raises ``FileFormatError`` saying what it is and how
    to fix it; pandas' and pyarrow's own errors never reach the user.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist")
    if not os.access(path, os.R_OK):
        raise FileFormatError(f"{path} cannot be read: permission denied (see `ls -l {path}`)")
    suffix = path.suffix.lower()
    if path.is_dir() and suffix != PARQUET_SUFFIX:
        raise FileFormatError(f"{path} is a folder: name the CSV or Parquet file in it")
    if suffix == PARQUET_SUFFIX:
        return read_parquet_file(path)
    if suffix in CSV_SUFFIXES:
        return _read_csv(path)
    looks = _looks_like(_head(path, 16))
    raise FileFormatError(
        f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}"
        + (f"; the file is {looks}" if looks else "")
        + "; tsops reads .csv (UTF-8 text) and .parquet files"
    )


def read_parquet_file(path: Path, fix: str | None = None) -> pd.DataFrame:
    """A Parquet file (or folder of Parquet files) as a frame; ``FileFormatError`` when it
    is not Parquet, is cut short or holds columns pandas cannot take (``fix`` replaces
    the advice)."""
    path = Path(path)
    try:
        # one file through ParquetFile: the dataset reader read_table uses refuses a
        # file with two columns of one name before this could say so
        table = pq.read_table(path) if path.is_dir() else pq.ParquetFile(path).read()
    except (pa.ArrowException, OSError) as exc:
        # ArrowInvalid: not Parquet or a broken footer; OSError: truncated pages
        raise FileFormatError(_not_parquet(path, exc, fix)) from exc
    repeated = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if repeated:
        raise FileFormatError(
            f"{path} has more than one column named {', '.join(map(repr, repeated))}; "
            + (fix or "give every column its own name")
        )
    try:
        return table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        # e.g. timestamps outside pandas' range (years before 1677 or after 2262)
        raise FileFormatError(
            f"{path}: the Parquet columns cannot be converted to a table ({_first_line(exc)}); "
            + (fix or "write dates within 1677..2262 and plain number/text columns")
        ) from exc


def _not_parquet(path: Path, exc: Exception, fix: str | None) -> str:
    if path.is_dir():
        return (
            f"{path} is a folder that is not a readable Parquet dataset ({_first_line(exc)}); "
            + (fix or "name one Parquet file, or a folder holding only Parquet files")
        )
    head, tail, size = _head(path, 16), _tail(path, 4), path.stat().st_size
    looks = None
    if size == 0:
        what = "is empty (0 bytes)"
    elif head.startswith(_PARQUET_MAGIC) and tail != _PARQUET_MAGIC:
        what = f"is cut short ({size:,} bytes, the footer Parquet ends with is missing)"
    elif not head.startswith(_PARQUET_MAGIC):
        looks = _looks_like(head) or ("CSV text: name it .csv" if _is_text(path) else "")
        what = "is not a Parquet file (it does not start with PAR1)"
    else:
        what = f"is a damaged Parquet file ({_first_line(exc)})"
    if looks:
        return f"{path} {what}: the file is {looks}"
    return f"{path} {what}; " + (fix or "write it again (e.g. pandas' DataFrame.to_parquet)")


def _read_csv(path: Path) -> pd.DataFrame:
    head = _head(path, _SNIFF_BYTES)
    looks = _looks_like(head)
    if looks is not None:
        raise FileFormatError(f"{path} is not CSV text: the file is {looks}")
    if _is_binary(head):
        raise FileFormatError(
            f"{path} is not CSV text: it holds binary data (NUL or other control bytes); "
            "export the data as a UTF-8 CSV file"
        )
    try:
        return pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            sep=_separator(head, path.suffix.lower()),
            # Excel's "CSV UTF-8" starts with a byte-order mark that would otherwise
            # become part of the first column's name
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError as exc:
        raise FileFormatError(
            f"{path} is empty: no header line and no rows; a CSV starts with a header line "
            "naming its columns (e.g. unique_id,ds,y), then one row per observation"
        ) from exc
    except UnicodeDecodeError as exc:
        raise FileFormatError(_not_utf8(path)) from exc
    except pd.errors.ParserError as exc:
        raise FileFormatError(
            f"{path} is not a well-formed CSV: {_first_line(exc)}; every line needs as many "
            "fields as the header (quote values that contain the separator or a line break, "
            'and close every opening ")'
        ) from exc


def _separator(head: bytes, suffix: str) -> str:
    """``,``; ``\t`` for .tsv; or the one other common separator a header line uses
    (spreadsheets in many locales write ``;``) when it has no comma."""
    if suffix == ".tsv":
        return "\t"
    header = head.split(b"\n", 1)[0]
    if b"," in header:
        return ","
    others = [sep for sep in (";", "\t", "|") if sep.encode() in header]
    return others[0] if len(others) == 1 else ","


def _not_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        shown = data[max(start, exc.start - 24) : exc.start + 8].split(b"\n", 1)[0]
        return (
            f"{path} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} "
            f'(in "{shown.decode("utf-8", "backslashreplace")}") is not UTF-8; {_UTF8_FIX}'
        )
    return f"{path} is not UTF-8 text; {_UTF8_FIX}"


def _looks_like(head: bytes) -> str | None:
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    return None


#: control bytes that never occur in text (all but tab, line feed, form feed, return)
_CONTROL = bytes(set(range(32)) - {9, 10, 12, 13})


def _is_binary(head: bytes) -> bool:
    """NUL, or more than 1% control bytes: what text files never hold."""
    if b"\x00" in head:
        return True
    return len(head) > 0 and len(head) - len(head.translate(None, _CONTROL)) > len(head) / 100


def _is_text(path: Path) -> bool:
    head = _head(path, 4096)
    if _is_binary(head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the 4096-byte window is still text
        return exc.start >= len(head) - 3
    return True


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _tail(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - n, 0))
        return f.read(n)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_series(paths: ModelPaths) -> pd.DataFrame:
    """The model's ingested series, as ``tsops ingest`` validated and wrote them.

    Not validated again: ``tsops ingest`` checked the frame before writing it, and the
    ``validate`` stage checks it against today's model.yaml before any stage reads it.
    """
    if not paths.data.exists():
        raise MissingInputError(
            f"{paths.data} does not exist: run `tsops ingest {paths.name}` (or `dvc pull`) first"
        )
    return read_parquet_file(
        paths.data, fix=f"run `tsops ingest {paths.name}` again (or `dvc checkout data`)"
    )


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
