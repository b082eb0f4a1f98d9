"""Corrupt input files: one clear error (exit 1, no traceback), and nothing written.

The named cases are the ones users met (an empty CSV, a CSV that is not UTF-8, a
``.parquet`` that is not Parquet ...), through the real command line in this process;
the Hypothesis tests then generate bad files of each family (random bytes, cut files,
foreign encodings, binary bytes, broken rows, wrong names) and ask the same of
``tsops ingest``'s stage function for every one.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.commands import tsops
from tests.pipeline.conftest import MODEL, write_model
from tsops.core.errors import TsopsError

# Generated files are read in this process in a few milliseconds each; derandomized so
# a run in CI tries the same files as the run on a laptop, no example database written.
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: what ``data/tiny/series.parquet`` holds before each attempt: it must stay so
OLD_DATA = b"the data of an earlier, successful ingest"


def _good_frame() -> pd.DataFrame:
    months = pd.date_range("2016-01-01", periods=40, freq="MS").strftime("%Y-%m-%d")
    return pd.concat(
        [
            pd.DataFrame({"unique_id": sid, "ds": months, "y": [100.0 + i + k for k in range(40)]})
            for i, sid in enumerate(["north", "south"])
        ],
        ignore_index=True,
    )


GOOD_CSV = _good_frame().to_csv(index=False).encode()
_buffer = io.BytesIO()
_good_frame().assign(ds=lambda d: pd.to_datetime(d.ds)).to_parquet(_buffer, index=False)
GOOD_PARQUET = _buffer.getvalue()
HEADER_END = GOOD_CSV.index(b"\n")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's folder, with data an earlier ingest wrote."""
    root = write_model(tmp_path_factory.mktemp("corrupt"))
    data = root / "data" / MODEL / "series.parquet"
    data.parent.mkdir(parents=True)
    data.write_bytes(OLD_DATA)
    return root


def _assert_nothing_written(root: Path) -> None:
    data = root / "data" / MODEL
    assert [p.name for p in data.iterdir()] == ["series.parquet"], "a temporary file was left"
    assert (data / "series.parquet").read_bytes() == OLD_DATA, "data/ changed"
    assert sorted(p.name for p in root.iterdir()) == ["data", "inputs", "models"]


def _ingest_fails_clearly(root: Path, content: bytes, name: str) -> str:
    """``tsops ingest``'s stage on a file ``name`` holding ``content``: the error's text."""
    from tsops.pipeline import ingest

    inputs = root / "inputs"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir()
    path = inputs / name
    path.write_bytes(content)
    with pytest.raises(TsopsError) as raised:
        ingest.run(root, MODEL, source_path=path)
    message = raised.value.report()
    assert message.strip() and "Traceback" not in message
    _assert_nothing_written(root)
    return message


# ------------------------------------------------------------------------- named cases

NAMED = {
    "empty CSV": ("empty.csv", b"", "is empty"),
    "blank lines only": ("blank.csv", b"\n\n \n", "is empty"),
    "header only": ("header.csv", b"unique_id,ds,y\n", "no rows"),
    "Latin-1 CSV": (
        "latin.csv",
        "unique_id,ds,y\nmünchen,2020-01-01,1\n".encode("latin-1"),
        "not UTF-8 text: byte 0xfc on line 2",
    ),
    "UTF-16 CSV": ("utf16.csv", GOOD_CSV.decode().encode("utf-16"), "UTF-16"),
    "binary junk": ("junk.csv", bytes(range(256)) * 4, "binary data"),
    "Parquet named .csv": ("data.csv", GOOD_PARQUET, "name it .parquet"),
    "CSV named .parquet": ("data.parquet", GOOD_CSV, "CSV text: name it .csv"),
    "not Parquet": ("data.parquet", b"\x89PNG\r\n\x1a\n" + bytes(200), "not a Parquet file"),
    "truncated Parquet": ("data.parquet", GOOD_PARQUET[:-100], "cut short"),
    "empty Parquet": ("data.parquet", b"", "empty (0 bytes)"),
    "Excel workbook": ("data.xlsx", b"PK\x03\x04" + bytes(100), "export the sheet as CSV"),
    "Excel named .csv": ("data.csv", b"PK\x03\x04" + bytes(100), "export the sheet as CSV"),
    "gzip CSV": ("data.csv.gz", b"\x1f\x8b\x08" + bytes(50), "decompress it first"),
    "no suffix": ("data", GOOD_CSV, "unsupported file type '(no suffix)'"),
    "row with an extra field": (
        "extra.csv",
        GOOD_CSV.replace(b"south,2016-03-01,", b"south,2016-03-01,7,"),
        "not a well-formed CSV",
    ),
    "unclosed quote": ("quote.csv", GOOD_CSV[:HEADER_END] + b'\n"north,2016', "well-formed"),
}


@pytest.mark.parametrize("case", list(NAMED))
def test_named_corrupt_file_gets_one_clear_error(root: Path, case: str) -> None:
    name, content, words = NAMED[case]
    message = _ingest_fails_clearly(root, content, name)
    assert words in message, message


@pytest.mark.parametrize("command", ["ingest", "validate"])
def test_the_command_line_exits_1_without_traceback(root: Path, command: str) -> None:
    bad = root / "inputs" / "latin.csv"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(NAMED["Latin-1 CSV"][1])
    option = "--file" if command == "ingest" else "--data"
    ran = tsops(command, MODEL, option, str(bad), cwd=root, check=False)
    assert ran.returncode == 1, ran.stderr
    assert ran.stderr.startswith("error: ") and "not UTF-8" in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr + ran.stdout
    _assert_nothing_written(root)
    assert not (root / "artifacts").exists()


def test_excel_bom_and_semicolons_are_read(root: Path, tmp_path: Path) -> None:
    """Files spreadsheets write are data, not corruption: a UTF-8 byte-order mark and
    ``;`` separators (the decimal point stays '.')."""
    from tsops.pipeline import ingest

    text = GOOD_CSV.decode().replace(",", ";")
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    report = ingest.run(root, MODEL, source_path=path, out=tmp_path / "out.parquet")
    assert report["n_series"] == 2 and report["n_observations"] == 80


# ---------------------------------------------- Parquet files whose columns are odd types


def _parquet_with(column: str = "", values: pa.Array | None = None, **renamed: str) -> bytes:
    """The good panel as Parquet with one column replaced by ``values`` (or columns
    renamed), written by pyarrow as another tool would."""
    table = pa.Table.from_pandas(
        _good_frame().assign(ds=lambda d: pd.to_datetime(d.ds)), preserve_index=False
    )
    if values is not None:
        table = table.set_column(table.column_names.index(column), column, values)
    if renamed:
        table = table.rename_columns([renamed.get(c, c) for c in table.column_names])
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


ROWS = 80
ODD_COLUMNS = {
    "y of nulls": ("y", pa.nulls(ROWS), "without a single usable"),
    "y of lists": ("y", pa.array([[1.0]] * ROWS), "without a single usable"),
    "ds of nulls": ("ds", pa.nulls(ROWS), "'ds' value(s) are missing or not dates"),
    "ds as durations": ("ds", pa.array([dt.timedelta(days=i) for i in range(ROWS)]), "not dates"),
    # the cast to nanoseconds alone would wrap these round to 1830
    "ds in the year 3000": (
        "ds",
        pa.array([dt.datetime(3000, 1, 1)] * ROWS, pa.timestamp("s")),
        "(outside 1677-09-21..2262-04-11)",
    ),
}


@pytest.mark.parametrize("case", list(ODD_COLUMNS))
def test_parquet_column_of_an_unusable_type_is_named(root: Path, case: str) -> None:
    column, values, words = ODD_COLUMNS[case]
    message = _ingest_fails_clearly(root, _parquet_with(column, values), "odd.parquet")
    assert words in message, message


def test_two_parquet_columns_of_one_name_are_named(root: Path) -> None:
    content = _parquet_with(unique_id="y")  # columns y, ds, y
    message = _ingest_fails_clearly(root, content, "twice.parquet")
    assert "more than one column named 'y'" in message, message


@pytest.mark.parametrize(
    "values",
    [
        pa.array(["north"] * 40 + ["south"] * 40).dictionary_encode(),
        pa.array([b"north"] * 40 + [b"\xffsouth"] * 40),  # not UTF-8: kept as escapes
    ],
    ids=["dictionary", "binary"],
)
def test_parquet_ids_of_other_types_are_read(root: Path, tmp_path: Path, values) -> None:
    from tsops.pipeline import ingest

    path = tmp_path / "ids.parquet"
    path.write_bytes(_parquet_with("unique_id", values))
    report = ingest.run(root, MODEL, source_path=path, out=tmp_path / "out.parquet")
    assert report["n_series"] == 2


# ------------------------------------------------------------------------ generated files

#: byte sequences that are never UTF-8, whatever surrounds them in ASCII text
NOT_UTF8 = [b"\xff", b"\xfe", b"\xc0", b"\x80", b"\xe9", b"\xfc", b"\xed\xa0\x80"]
#: bytes no text file holds
BINARY = [b"\x00", b"\x01\x02\x03\x04\x05\x06\x07\x08" * 3, b"\x00\x00\x00\x1b"]


@st.composite
def bad_csv(draw: st.DrawFn) -> tuple[bytes, str]:
    """A file named .csv that no reading can make a valid panel of."""
    family = draw(
        st.sampled_from(["random", "cut header", "not utf-8", "binary", "extra field", "y"])
    )
    if family == "random":
        # cannot spell the header unique_id,ds,y by chance
        return draw(st.binary(max_size=1500)), ".csv"
    if family == "cut header":
        return GOOD_CSV[: draw(st.integers(0, HEADER_END - 1))], ".csv"
    if family in ("not utf-8", "binary"):
        at = draw(st.integers(0, len(GOOD_CSV)))
        junk = draw(st.sampled_from(NOT_UTF8 if family == "not utf-8" else BINARY))
        return GOOD_CSV[:at] + junk + GOOD_CSV[at:], ".csv"
    lines = GOOD_CSV.split(b"\n")
    row = draw(st.integers(1, len(lines) - 2))
    if family == "extra field":
        lines[row] += b"," + draw(st.sampled_from([b"", b"1", b"x"]))
    else:
        # a value of y no parser reads as a finite number (NA tokens are missing values,
        # which fill: none refuses too); no separator, quote or line break in it
        value = draw(
            st.text(st.characters(codec="utf-8", exclude_characters=',"\r\n'), max_size=12).filter(
                lambda v: (
                    not pd.notna(pd.to_numeric(v.strip(), errors="coerce"))
                    or abs(float(pd.to_numeric(v.strip(), errors="coerce"))) == float("inf")
                )
            )
        )
        fields = lines[row].split(b",")
        lines[row] = b",".join([*fields[:2], value.encode()])
    return b"\n".join(lines), ".csv"


@st.composite
def bad_parquet(draw: st.DrawFn) -> tuple[bytes, str]:
    """A file named .parquet that is not a whole Parquet file."""
    family = draw(st.sampled_from(["random", "cut", "footer", "text"]))
    if family == "random":
        return draw(st.binary(max_size=1500)), ".parquet"
    if family == "cut":
        return GOOD_PARQUET[: draw(st.integers(0, len(GOOD_PARQUET) - 1))], ".parquet"
    if family == "footer":
        # the closing magic bytes, which every reader checks first
        at = len(GOOD_PARQUET) - draw(st.integers(1, 4))
        flipped = bytes([GOOD_PARQUET[at] ^ draw(st.integers(1, 255))])
        return GOOD_PARQUET[:at] + flipped + GOOD_PARQUET[at + 1 :], ".parquet"
    return GOOD_CSV[: draw(st.integers(0, len(GOOD_CSV)))], ".parquet"


@st.composite
def misnamed(draw: st.DrawFn) -> tuple[bytes, str]:
    """Good data under a name tsops does not read, or Parquet under a CSV name."""
    content = draw(st.sampled_from([GOOD_CSV, GOOD_PARQUET]))
    suffixes = [".xlsx", ".json", ".dat", ".csv.gz", ".pq", ""]
    if content == GOOD_PARQUET:
        suffixes += [".csv", ".txt", ".tsv"]
    return content, draw(st.sampled_from(suffixes))


@FUZZ
@given(bad=st.one_of(bad_csv(), bad_parquet(), misnamed()))
def test_generated_bad_file_gets_a_clear_error_and_nothing_is_written(
    root: Path, bad: tuple[bytes, str]
) -> None:
    content, suffix = bad
    _ingest_fails_clearly(root, content, f"input{suffix}")


def test_damaged_ingested_data_says_to_ingest_again(tmp_path: Path) -> None:
    """data/<model>/series.parquet cut short (an interrupted copy or `dvc pull`)."""
    from tsops.pipeline import validate

    root = write_model(tmp_path)
    data = root / "data" / MODEL / "series.parquet"
    data.parent.mkdir(parents=True)
    data.write_bytes(GOOD_PARQUET[:-50])
    with pytest.raises(TsopsError, match="is cut short") as raised:
        validate.run(root, MODEL)
    assert f"run `tsops ingest {MODEL}` again" in str(raised.value)
    assert not (root / "artifacts").exists()
