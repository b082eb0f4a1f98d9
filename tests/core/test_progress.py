"""Progress of long runs: the rate and ETA arithmetic, the sinks, and what
`tsops backtest` shows on stderr and stdout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import TINY_MODEL
from tsops.core import progress
from tsops.core.progress import LogSink, RichSink, Tracker, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_eta_and_fraction_from_the_average_since_start():
    clock = Clock()
    tracker = Tracker(total=1000, description="backtest", clock=clock)
    assert tracker.rate is None and tracker.eta is None
    clock.now += 10
    tracker.advance(250)
    assert tracker.rate == pytest.approx(25.0)
    assert tracker.remaining == 750
    assert tracker.eta == pytest.approx(30.0)
    assert tracker.fraction == pytest.approx(0.25)
    assert tracker.line() == "backtest: 250/1,000 series (25%), 25.0 series/s, ETA 0:30"


def test_done_never_passes_the_total_and_the_last_line_says_how_long():
    clock = Clock()
    tracker = Tracker(total=10, description="train", clock=clock)
    clock.now += 4
    tracker.advance(25)
    assert tracker.done == 10 and tracker.eta == 0
    tracker.finish()
    clock.now += 100  # after finishing, time stands still
    assert tracker.elapsed == 4
    assert tracker.line() == "train: 10/10 series (100%) in 0:04, 2.5 series/s"


def test_without_a_total_there_is_no_eta():
    tracker = Tracker(clock=Clock())
    tracker.advance(3)
    assert tracker.eta is None and tracker.fraction is None
    assert "3 series" in tracker.line() and "ETA ?" in tracker.line()


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0:00"), (7.4, "0:07"), (750, "12:30"), (3723, "1:02:03")]
)
def test_duration(seconds, shown):
    assert duration(seconds) == shown


def test_a_step_counts_its_size_however_the_layers_below_report():
    clock = Clock()
    tracker = Tracker(total=30, clock=clock)
    with tracker.step("ensemble", 10):  # three members each report every series
        for _ in range(3):
            tracker.advance(10)
        clock.now += 2
    assert tracker.done == 10
    with tracker.step("gbm", 10):  # a global model reports nothing
        clock.now += 1
    assert tracker.done == 20
    with tracker.step("gbm", 10):
        tracker.advance(4)
        clock.now += 3
    assert tracker.done == 30
    assert tracker.steps["ensemble"].items == 10
    assert tracker.steps["gbm"].items == 20
    assert tracker.steps["gbm"].seconds == 4
    assert tracker.steps["gbm"].runs == 2
    assert tracker.steps["gbm"].rate == 5


def test_advance_counts_on_the_active_tracker_only():
    progress.advance(5)  # no tracker: nothing happens
    outer, inner = Tracker(100), Tracker(100)
    with progress.track(outer):
        progress.advance(1)
        with progress.track(inner):
            progress.advance(2)
        progress.advance(3)
    progress.advance(4)
    assert (outer.done, inner.done) == (4, 2)
    assert outer.finished is not None


def test_plain_lines_at_most_once_per_interval_and_a_last_one():
    clock = Clock()
    stream = io.StringIO()
    sink = LogSink(stream, interval=5, clock=clock)
    tracker = Tracker(total=100, description="b", clock=clock)
    with progress.reporting(sink), progress.track(tracker):
        for _ in range(20):  # 5 items per second for 20 seconds
            clock.now += 1
            progress.advance(5)
        progress.message("window 1/1 x: 100 series in 20.0s")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 + 1 + 1  # every 5 s, the message, the final line
    assert lines[0] == "b: 25/100 series (25%), 5.0 series/s, ETA 0:15"
    assert lines[-2].startswith("window 1/1")
    assert lines[-1] == "b: 100/100 series (100%) in 0:20, 5.0 series/s"


def test_a_terminal_gets_a_bar_a_pipe_or_a_dumb_terminal_gets_lines():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress.sink_for(io.StringIO()), LogSink)
    assert isinstance(progress.sink_for(Terminal(), term="dumb"), LogSink)
    terminal = Terminal()
    sink = progress.sink_for(terminal, term="xterm")
    assert isinstance(sink, RichSink)
    tracker = Tracker(total=4, description="bar")
    with progress.reporting(sink), progress.track(tracker):
        progress.advance(4)
    assert "bar: 4/4 series (100%)" in terminal.getvalue()


def test_the_interval_is_an_argument_and_the_commands_read_it_from_the_environment(
    monkeypatch,
):
    from tsops.core.settings import SettingsError, load_settings

    assert LogSink().interval == progress.DEFAULT_INTERVAL
    assert progress.sink_for(io.StringIO(), interval=2.5).interval == 2.5
    monkeypatch.setenv("TSOPS_PROGRESS_INTERVAL", "2.5")
    assert LogSink().interval == progress.DEFAULT_INTERVAL  # the library reads nothing
    assert load_settings().progress_interval == 2.5
    monkeypatch.setenv("TSOPS_PROGRESS_INTERVAL", "soon")
    with pytest.raises(SettingsError, match="TSOPS_PROGRESS_INTERVAL='soon'"):
        load_settings()


def test_a_command_reads_term_through_the_settings(monkeypatch):
    from tsops.core.settings import load_settings

    monkeypatch.setenv("TERM", "dumb")
    assert load_settings().term == "dumb"


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    from tsops.pipeline import ingest

    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "model.yaml").write_text(TINY_MODEL)
    ingest.run(tmp_path, "tiny")
    return tmp_path


def test_backtest_shows_progress_on_stderr_and_ends_with_a_table(tiny_root, monkeypatch):
    from tsops.cli import app

    monkeypatch.setenv("TSOPS_PROGRESS_INTERVAL", "0")  # a line per update, to see them all
    monkeypatch.delenv("TSOPS_DASK_SCHEDULER", raising=False)
    result = CliRunner().invoke(
        app, ["backtest", "tiny", "--n-jobs", "1", "--root", str(tiny_root)]
    )
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    # 2 windows x 3 candidates x 6 series; ETA while running, the time taken at the end
    assert any(line.startswith("backtest tiny: ") and "ETA" in line for line in err)
    assert err[-1].startswith("backtest tiny: 36/36 series (100%) in ")
    assert any(line.startswith("window 2/2 ets: 6 series in ") for line in err)
    out = result.stdout.splitlines()
    assert out[0].split() == ["candidate", "series", "fit+fcst", "s", "series/s", "sMAPE", "MASE"]
    rows = {line.split()[0]: line.split()[1:] for line in out[1:4]}
    assert set(rows) == {"seasonal_naive", "theta", "ets"}
    assert all(row[0] == "12" for row in rows.values())  # 2 windows x 6 series
    assert out[-1].startswith("tiny: rule median_ensemble, members ")
    # the selection on disk is what it was: only the command's output grew
    selection = json.loads((tiny_root / "artifacts/tiny/backtest/selection.json").read_text())
    assert selection["rule"] == "median_ensemble"


def test_backtest_result_adds_per_candidate_figures(tiny_root):
    from tsops.pipeline import backtest

    result = backtest.run(tiny_root, "tiny", n_jobs=1)
    assert set(result) == {"rule", "members", "seconds", "candidates", "classes"}
    ets = result["candidates"]["ets"]
    assert set(ets) == {"series", "seconds", "series_per_s", "smape", "mase"}
    assert ets["series"] == 12 and ets["seconds"] > 0 and ets["series_per_s"] > 0
    assert 0 < ets["smape"] < 200 and ets["mase"] > 0
