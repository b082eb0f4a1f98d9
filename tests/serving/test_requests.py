"""Request parsing without a server: V1 bodies and V2 tensors become one ForecastQuery,
and every rejection is a RequestError whose message names the field and what is
allowed. Also: a batch forecast's bad --h is one error line, not a traceback."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from kserve import InferInput, InferRequest

from tsops.core.errors import TsopsError
from tsops.serving.requests import (
    RequestError,
    check_h,
    check_levels,
    parse_v1,
    parse_v2,
    series_histories,
)

DEFAULTS = {"default_h": 6, "max_h": 12, "default_levels": [80.0, 95.0], "freq": "MS"}


def v1(body):
    return parse_v1(body, request_id="r1", **DEFAULTS)


def v2(*inputs, parameters=None, request_id="r2"):
    tensors = [
        InferInput(name, [len(data)] if shape is None else shape, datatype, data=data)
        for name, datatype, data, shape in inputs
    ]
    request = InferRequest(
        model_name="m", infer_inputs=tensors, parameters=parameters, request_id=request_id
    )
    return parse_v2(request, request_id="fallback", **DEFAULTS)


def ids(*names, shape=None):
    return ("unique_id", "BYTES", list(names), shape)


def history(uid_ds_y: list[tuple[str, str, float]]):
    return (
        ("history_unique_id", "BYTES", [u for u, _, _ in uid_ds_y], None),
        ("history_ds", "BYTES", [d for _, d, _ in uid_ds_y], None),
        ("history_y", "FP64", [y for _, _, y in uid_ds_y], None),
    )


def test_a_request_error_is_a_tsops_error_and_a_value_error():
    # the CLI reports it as one line (TsopsError); kserve's callers may catch ValueError
    assert issubclass(RequestError, TsopsError) and issubclass(RequestError, ValueError)


# -- V1 -------------------------------------------------------------------------------


def test_v1_defaults():
    query = v1({"instances": [{"unique_id": "a"}, {"unique_id": "b"}]})
    assert (query.ids, query.h, query.levels) == (["a", "b"], 6, [80.0, 95.0])
    assert query.history is None
    assert (query.protocol, query.request_id) == ("v1", "r1")


def test_v1_parameters_and_history():
    query = v1(
        {
            "instances": [
                {"unique_id": "a", "history": {"ds": ["2020-01-01", "2020-02-01"], "y": [1, 2.5]}},
                {"unique_id": "b"},
            ],
            "parameters": {"h": 12, "level": [95, 50, 95]},
        }
    )
    assert query.h == 12
    assert query.levels == [50.0, 95.0]  # sorted, once each
    assert list(query.history) == ["a"]
    got = query.history["a"]
    assert [str(t.date()) for t in got.ds] == ["2020-01-01", "2020-02-01"]
    assert list(got.y) == [1.0, 2.5]


def test_v1_history_timestamps_with_a_zone_are_read_as_utc():
    body = {
        "instances": [{"unique_id": "a", "history": {"ds": ["2020-01-01T00:00:00Z"], "y": [1]}}]
    }
    assert v1(body).history["a"].ds.tz is None


def _one(history_in: dict) -> dict:
    return {"instances": [{"unique_id": "a", "history": history_in}]}


BAD_V1 = [
    ("not an object", [1, 2], 'body must be a JSON object with "instances"'),
    ("no instances", {"parameters": {"h": 3}}, "instances: Field required"),
    (
        "instances not a list",
        {"instances": "a"},
        "instances: Input should be a valid list (got 'a')",
    ),
    ("no series", {"instances": []}, "instances: List should have at least 1 item"),
    (
        "id not a string",
        {"instances": [{"unique_id": 5}]},
        "instances.0.unique_id: Input should be a valid string (got 5)",
    ),
    (
        "empty id",
        {"instances": [{"unique_id": ""}]},
        "instances.0.unique_id: String should have at least 1 character",
    ),
    (
        "id twice",
        {"instances": [{"unique_id": "a"}, {"unique_id": "a"}]},
        "instances: unique_id 'a' appears twice; send each once",
    ),
    (
        "unknown field",
        {"instances": [{"unique_id": "a", "colour": 1}]},
        "instances.0.colour: Extra inputs are not permitted",
    ),
    (
        "unknown parameter",
        {"instances": [{"unique_id": "a"}], "parameters": {"x": 1}},
        "parameters.x: Extra inputs are not permitted",
    ),
    (
        "h zero",
        {"instances": [{"unique_id": "a"}], "parameters": {"h": 0}},
        "parameters.h=0 is outside 1..12, the model's maximum horizon",
    ),
    (
        "h too large",
        {"instances": [{"unique_id": "a"}], "parameters": {"h": 13}},
        "parameters.h=13 is outside 1..12",
    ),
    (
        "h text",
        {"instances": [{"unique_id": "a"}], "parameters": {"h": "3"}},
        "parameters.h: Input should be a valid integer (got '3')",
    ),
    (
        "h float",
        {"instances": [{"unique_id": "a"}], "parameters": {"h": 3.0}},
        "parameters.h: Input should be a valid integer (got 3.0)",
    ),
    (
        "h boolean",
        {"instances": [{"unique_id": "a"}], "parameters": {"h": True}},
        "parameters.h: Input should be a valid integer (got True)",
    ),
    (
        "level 150",
        {"instances": [{"unique_id": "a"}], "parameters": {"level": [150]}},
        "parameters.level 150.0 is outside (0, 100); use coverage percentages such as 80 or 95",
    ),
    (
        "level 0",
        {"instances": [{"unique_id": "a"}], "parameters": {"level": [0]}},
        "parameters.level 0.0 is outside (0, 100)",
    ),
    (
        "level text",
        {"instances": [{"unique_id": "a"}], "parameters": {"level": ["x"]}},
        "parameters.level.0: Input should be a valid number (got 'x')",
    ),
    (
        "level not a list",
        {"instances": [{"unique_id": "a"}], "parameters": {"level": 80}},
        "parameters.level: Input should be a valid list (got 80)",
    ),
    (
        "too many levels",
        {"instances": [{"unique_id": "a"}], "parameters": {"level": list(range(1, 13))}},
        "parameters.level: List should have at most 10 items",
    ),
    (
        "history lengths",
        _one({"ds": ["2020-01-01", "2020-02-01"], "y": [1.0]}),
        "instances.0.history: ds has 2 timestamps but y has 1 values; send one value per timestamp",
    ),
    (
        "history y text",
        _one({"ds": ["2020-01-01"], "y": ["1"]}),
        "instances.0.history.y.0: Input should be a valid number (got '1')",
    ),
    (
        "history empty",
        _one({"ds": [], "y": []}),
        "instances.0.history.ds: List should have at least",
    ),
    (
        "history unknown field",
        _one({"ds": ["2020-01-01"], "y": [1], "z": 1}),
        "instances.0.history.z: Extra inputs are not permitted",
    ),
    (
        "history bad date",
        _one({"ds": ["2020-01-01", "yesterday"], "y": [1, 2]}),
        "history of 'a': ds[1] 'yesterday' is not an ISO 8601 timestamp such as '2020-01-01'",
    ),
    (
        "history unsorted",
        _one({"ds": ["2020-02-01", "2020-01-01"], "y": [1, 2]}),
        "history of 'a': ds must be strictly increasing (sorted, no duplicates)",
    ),
    (
        "history duplicate",
        _one({"ds": ["2020-01-01", "2020-01-01"], "y": [1, 2]}),
        "strictly increasing",
    ),
    (
        "history gap",
        _one({"ds": ["2020-01-01", "2020-02-01", "2020-04-01"], "y": [1, 2, 3]}),
        "history of 'a': ds must be consecutive periods of the model's frequency 'MS': "
        "ds[2] is 2020-04-01, expected 2020-03-01",
    ),
    (
        "history off the grid",
        _one({"ds": ["2020-01-15"], "y": [1]}),
        "history of 'a': ds[0] 2020-01-15 is not a period of the model's frequency 'MS'; "
        "periods are e.g. 2020-01-01 and 2020-02-01",
    ),
]


@pytest.mark.parametrize(("case", "body", "message"), BAD_V1, ids=[c[0] for c in BAD_V1])
def test_bad_v1_bodies_name_the_field(case, body, message):
    with pytest.raises(RequestError) as error:
        v1(body)
    assert message in str(error.value), case


def test_v1_history_must_be_finite():
    with pytest.raises(RequestError, match=r"history of 'a': y\[1\] is inf; send finite numbers"):
        series_histories([("a", ["2020-01-01", "2020-02-01"], [1.0, float("inf")])], "MS")


@pytest.mark.parametrize(
    "ds",
    [
        ["2020-01-01", "2020-02-01"],
        ["2020-01-01T00:00:00", "2020-02-01 00:00"],
        ["2020-01-01T00:00:00.000", "2020-02-01T00:00:00.000000000"],
        ["2020-01-01T01:00:00+01:00", "2020-02-01T01:00:00+01:00"],  # a zone: pandas reads it
    ],
)
def test_history_times_are_read_as_pandas_reads_iso_8601(ds):
    times = series_histories([("a", ds, [1.0, 2.0])], "MS")["a"].ds
    expected = pd.DatetimeIndex(pd.to_datetime(ds, format="ISO8601", utc=True)).tz_convert(None)
    assert times.equals(expected)


@pytest.mark.parametrize(
    ("ds", "needle"),
    [
        (["2020-02-30"], "ds[0] '2020-02-30' is not an ISO 8601 timestamp"),
        (["3000-01-01"], "ds[0] '3000-01-01' is not an ISO 8601 timestamp"),
        (["2020-01-01", "2020-03-01"], "ds[1] is 2020-03-01, expected 2020-02-01"),
    ],
)
def test_history_times_out_of_range_or_off_the_grid_are_named(ds, needle):
    with pytest.raises(RequestError, match=re.escape(needle)):
        series_histories([("a", ds, [1.0] * len(ds))], "MS")


def test_history_values_beyond_1e100_are_refused_naming_the_value():
    with pytest.raises(RequestError, match=r"y\[1\] is -1e\+308, beyond ±1e\+100"):
        series_histories([("a", ["2020-01-01", "2020-02-01"], [1.0, -1e308])], "MS")


def test_at_most_five_problems_are_listed():
    body = {"instances": [{"unique_id": i} for i in range(8)]}
    with pytest.raises(RequestError) as error:
        v1(body)
    assert str(error.value).count("Input should be a valid string") == 5


# -- V2 -------------------------------------------------------------------------------


def test_v2_defaults_and_the_requests_own_id():
    query = v2(ids("a", "b"))
    assert (query.ids, query.h, query.levels, query.history) == (["a", "b"], 6, [80.0, 95.0], None)
    assert (query.protocol, query.request_id) == ("v2", "r2")
    assert v2(ids("a"), request_id=None).request_id == "fallback"


@pytest.mark.parametrize(
    ("parameters", "h", "levels"),
    [
        ({"h": 3}, 3, [80.0, 95.0]),
        ({"level": "95,80"}, 6, [80.0, 95.0]),
        ({"level": "90"}, 6, [90.0]),
        ({"level": 90}, 6, [90.0]),
        ({"level": 90.5}, 6, [90.5]),
        ({"h": np.int64(2)}, 2, [80.0, 95.0]),
        # tritonclient's own parameter
        ({"binary_data_output": True, "h": 1}, 1, [80.0, 95.0]),
    ],
)
def test_v2_parameters(parameters, h, levels):
    query = v2(ids("a"), parameters=parameters)
    assert (query.h, query.levels) == (h, levels)


def test_v2_level_as_a_tensor():
    assert v2(ids("a"), ("level", "FP64", [99.0, 80.0], None)).levels == [80.0, 99.0]


def test_v2_history_is_grouped_by_series():
    query = v2(
        ids("a", "b"),
        *history([("a", "2020-01-01", 1.0), ("b", "2020-03-01", 5.0), ("a", "2020-02-01", 2.0)]),
    )
    assert sorted(query.history) == ["a", "b"]
    assert list(query.history["a"].y) == [1.0, 2.0]
    assert [str(t.date()) for t in query.history["b"].ds] == ["2020-03-01"]


def test_v2_binary_tensors_are_read():
    # what gRPC clients send: raw contents instead of a data list
    tensor = InferInput("unique_id", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"a", b"b"], dtype=object), binary_data=True)
    request = InferRequest(model_name="m", infer_inputs=[tensor], raw_inputs=[tensor._raw_data])
    request.inputs[0]._data = []  # as InferRequest.from_grpc leaves it
    assert parse_v2(request, request_id="x", **DEFAULTS).ids == ["a", "b"]


def test_a_grpc_request_is_marked_as_such():
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    message = pb.ModelInferRequest(
        model_name="m",
        id="g1",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="unique_id",
                datatype="BYTES",
                shape=[1],
                contents=pb.InferTensorContents(bytes_contents=[b"a"]),
            )
        ],
        parameters={
            "h": pb.InferParameter(int64_param=4),
            "level": pb.InferParameter(string_param="80"),
        },
    )
    query = parse_v2(InferRequest.from_grpc(message), request_id="x", **DEFAULTS)
    assert (query.protocol, query.request_id, query.ids, query.h, query.levels) == (
        "grpc-v2",
        "g1",
        ["a"],
        4,
        [80.0],
    )


BAD_V2 = [
    (
        "no unique_id",
        [("history_y", "FP64", [1.0], None)],
        None,
        'input "unique_id" (BYTES, shape [n]) is required',
    ),
    ("only nothing", [], None, 'input "unique_id" (BYTES, shape [n]) is required'),
    (
        "unique_id not BYTES",
        [("unique_id", "FP64", [1.0], None)],
        None,
        "input 'unique_id' must have datatype BYTES, got FP64",
    ),
    (
        "shape mismatch",
        [ids("a", shape=[3])],
        None,
        "input 'unique_id' must be one-dimensional with shape [1] matching its data, got shape [3]",
    ),
    (
        "two-dimensional",
        [ids("a", "b", shape=[1, 2])],
        None,
        "must be one-dimensional with shape [2] matching its data, got shape [1, 2]",
    ),
    (
        "unknown input",
        [ids("a"), ("colour", "BYTES", ["red"], None)],
        None,
        "unknown input 'colour'; inputs are ['unique_id', 'history_unique_id', 'history_ds', "
        "'history_y', 'level']",
    ),
    ("input twice", [ids("a"), ids("b")], None, "input 'unique_id' appears twice"),
    ("id twice", [ids("a", "a")], None, "input 'unique_id' names a series twice; send each once"),
    ("no series", [ids()], None, "input 'unique_id' must name 1..1000 series"),
    (
        "unknown parameter",
        [ids("a")],
        {"colour": 1},
        "unknown parameters ['colour']; parameters are h and level",
    ),
    ("h text", [ids("a")], {"h": "3"}, "parameters.h must be an integer in 1..12, got '3'"),
    ("h boolean", [ids("a")], {"h": True}, "parameters.h must be an integer in 1..12, got True"),
    ("h negative", [ids("a")], {"h": -1}, "parameters.h=-1 is outside 1..12"),
    ("level text", [ids("a")], {"level": "80,abc"}, "parameters.level '80,abc': use e.g. '80,95'"),
    ("level list", [ids("a")], {"level": [80]}, "parameters.level [80]: use a number or '80,95'"),
    ("level 100", [ids("a")], {"level": "100"}, "parameters.level 100.0 is outside (0, 100)"),
    (
        "level tensor BYTES",
        [ids("a"), ("level", "BYTES", ["80"], None)],
        None,
        "input 'level' must be FP64 or FP32, got BYTES",
    ),
    (
        "history partial",
        [ids("a"), ("history_y", "FP64", [1.0], None)],
        None,
        "history needs all of",
    ),
    (
        "history lengths",
        [
            ids("a"),
            ("history_unique_id", "BYTES", ["a"], None),
            ("history_ds", "BYTES", ["2020-01-01"], None),
            ("history_y", "FP64", [1.0, 2.0], None),
        ],
        None,
        "history_unique_id, history_ds and history_y must have one length",
    ),
    (
        "history of another series",
        [ids("a"), *history([("c", "2020-01-01", 1.0)])],
        None,
        "history_unique_id ['c'] not listed in unique_id",
    ),
    (
        "history y not numbers",
        [
            ids("a"),
            ("history_unique_id", "BYTES", ["a"], None),
            ("history_ds", "BYTES", ["2020-01-01"], None),
            ("history_y", "FP64", ["x"], None),
        ],
        None,
        "input 'history_y': cannot read its data as shape [1] of FP64",
    ),
    (
        "history gap",
        [ids("a"), *history([("a", "2020-01-01", 1.0), ("a", "2020-05-01", 2.0)])],
        None,
        "history of 'a': ds must be consecutive periods of the model's frequency 'MS'",
    ),
]


@pytest.mark.parametrize(
    ("case", "inputs", "parameters", "message"), BAD_V2, ids=[c[0] for c in BAD_V2]
)
def test_bad_v2_requests_name_the_input(case, inputs, parameters, message):
    with pytest.raises(RequestError) as error:
        v2(*inputs, parameters=parameters)
    assert message in str(error.value), case


# -- the shared checks ----------------------------------------------------------------


def test_check_h_names_the_field_it_checks():
    assert check_h(None, 6, 12) == 6
    with pytest.raises(RequestError, match=r"^--h=13 is outside 1\.\.12"):
        check_h(13, 6, 12, field="--h")


def test_check_levels():
    assert check_levels(None, [80.0]) == [80.0]
    assert check_levels([95, 80.0, 95], []) == [80.0, 95.0]
    for bad in (["x"], [None], [True], [float("nan")], [-5]):
        with pytest.raises(RequestError, match=r"^--level .* is outside \(0, 100\)"):
            check_levels(bad, [], field="--level")


# -- the batch command ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--h", "999"],
            "error: --h 999 is outside 1..12, the horizons model 'tiny' serves; ask for at most "
            "12 steps, or raise serving.max_horizon in models/tiny/model.yaml and train the "
            "model again\n",
        ),
        (["--h", "0"], "error: --h 0 is outside 1..12"),
        (["--level", "150"], "error: --level 150.0 is outside (0, 100)"),
    ],
)
def test_forecast_with_a_bad_option_is_one_error_line(tiny_model_dir, tmp_path, args, message):
    from typer.testing import CliRunner

    from tsops.cli import app

    out = tmp_path / "forecasts.parquet"
    result = CliRunner().invoke(
        app, ["forecast", "--model", str(tiny_model_dir), "--out", str(out), *args]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_forecast_of_a_missing_model_is_one_error_line(tmp_path):
    from typer.testing import CliRunner

    from tsops.cli import app

    result = CliRunner().invoke(
        app, ["forecast", "--model", str(tmp_path), "--out", str(tmp_path / "f.parquet")]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "not an MLflow model directory" in result.stderr
