"""The root command line: what it sets around every command, and only while it runs."""

from __future__ import annotations

import os

from typer.testing import CliRunner

from tsops.cli import _BARS, _no_download_bars, app


def test_download_bars_are_off_while_a_command_runs_and_the_environment_is_restored(
    tmp_path, monkeypatch
):
    import tsops.core.config

    monkeypatch.delenv(_BARS, raising=False)
    seen = []

    def probe(*args, **kwargs):
        seen.append(os.environ.get(_BARS))
        return []

    monkeypatch.setattr(tsops.core.config, "list_models", probe)
    result = CliRunner().invoke(app, ["models", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen == ["false"]
    assert _BARS not in os.environ


def test_a_users_own_setting_is_kept(monkeypatch):
    monkeypatch.setenv(_BARS, "true")
    with _no_download_bars():
        assert os.environ[_BARS] == "true"
    assert os.environ[_BARS] == "true"
    monkeypatch.delenv(_BARS)
    with _no_download_bars():
        assert os.environ[_BARS] == "false"
    assert _BARS not in os.environ
