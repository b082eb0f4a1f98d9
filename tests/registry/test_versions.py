"""Aliases, the versions table, the champion's spec and releases, on a real SQLite store."""

from __future__ import annotations

import pytest

from tsops.registry.client import RegistryError, connect
from tsops.registry.releases import find_release, record_release, release_lineage, reviewed_version
from tsops.registry.versions import (
    champion_spec,
    follow_git,
    resolve,
    set_alias,
    versions_table,
)

NAME = "m"


@pytest.fixture
def client(store):
    """Two versions of ``m``; version 2's run logged a spec."""
    client = connect(store)
    experiment = client.create_experiment(NAME)
    client.create_registered_model(NAME)
    for number in (1, 2):
        run = client.create_run(experiment)
        client.log_dict(run.info.run_id, {"config": {"version": number}}, "spec.json")
        (store / f"model{number}").mkdir()
        client.create_model_version(
            NAME,
            str(store / f"model{number}"),
            run_id=run.info.run_id,
            tags={"tsops.git_commit": f"c{number}", "tsops.data_dvc_md5": "d"},
        )
    return client


def test_aliases_point_at_versions_that_exist(client):
    assert champion_spec(client, NAME) is None
    set_alias(client, NAME, "champion", "2")
    assert champion_spec(client, NAME) == ("2", {"config": {"version": 2}})
    with pytest.raises(RegistryError, match=r"no version 7 of 'm' \(versions: \[1, 2\]\)"):
        set_alias(client, NAME, "champion", "7")
    assert str(resolve(client, NAME, alias="champion").version) == "2"
    assert str(resolve(client, NAME, version="1").version) == "1"

    assert follow_git(client, NAME, "champion", "1", "git says 1") == "2"
    assert follow_git(client, NAME, "champion", "1", "git says 1") == "1"
    with pytest.raises(RegistryError, match=r"git says 3, but .* no version 3.*No alias was moved"):
        follow_git(client, NAME, "champion", "3", "git says 3")
    assert str(resolve(client, NAME, alias="champion").version) == "1"

    table = versions_table(client, NAME)
    assert table["version"].tolist() == [1, 2]
    assert table["aliases"].tolist() == ["champion", ""]
    assert table["git_commit"].tolist() == ["c1", "c2"]
    assert versions_table(client, "nothing").empty


def test_a_release_is_recorded_on_its_version_and_found_again(client, store):
    with pytest.raises(RegistryError, match="has no challenger"):
        release_lineage(client, NAME)
    version, lineage = release_lineage(client, NAME, "2")
    assert version == "2" and lineage["git-commit"] == "c2" and lineage["data-md5"] == "d"
    record_release(client, NAME, version, "m/v1.0.0", "ghcr.io/x/y:m-v1.0.0@sha256:ab")
    assert release_lineage(client, NAME)[0] == "2", "a release makes its version challenger"
    assert find_release(client, NAME, "m/v1.0.0") == ("2", "ghcr.io/x/y:m-v1.0.0@sha256:ab")
    with pytest.raises(RegistryError, match=r"no release 'm/v9.9.9' of 'm'.*versions: \[1, 2\]"):
        find_release(client, NAME, "m/v9.9.9")
    # reviewed_version asks git first: outside a repository it names the commit it missed
    with pytest.raises(RegistryError, match="git knows no commit 'HEAD'"):
        reviewed_version(client, store, NAME, "HEAD")
