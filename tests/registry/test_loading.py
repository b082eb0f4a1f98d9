"""Loading by reference: models:/name@alias and models:/name/version, through a client."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.registry.conftest import NAME, process_state, write_stage_outputs
from tsops.registry.client import connect
from tsops.registry.loading import (
    ModelLoadError,
    Reference,
    export_model,
    load_directory,
    load_model,
    load_pyfunc,
    parse_reference,
)
from tsops.registry.publish import read_stage_outputs, register_trained


@pytest.fixture(scope="module")
def registered(tmp_path_factory, _migrated_store):
    """The tiny model registered twice: version 1 is challenger, version 2 has no alias."""
    import shutil

    root = tmp_path_factory.mktemp("registered")
    shutil.copyfile(_migrated_store, root / "mlflow.db")
    client = connect(root)
    write_stage_outputs(root)
    register_trained(client, read_stage_outputs(root, NAME), "challenger")
    write_stage_outputs(root, seed=1)
    register_trained(client, read_stage_outputs(root, NAME), None)
    return root


def test_references_parse_or_say_what_they_should_look_like():
    assert parse_reference("models:/tiny/3") == Reference("tiny", version="3")
    assert parse_reference("models:/tiny@champion") == Reference("tiny", alias="champion")
    assert str(Reference("tiny", alias="champion")) == "models:/tiny@champion"
    for bad in ("models:/tiny", "models:/tiny/latest", "runs:/abc/model", "models:/a/b/1"):
        with pytest.raises(ModelLoadError, match="use models:/<name>/<version>"):
            parse_reference(bad)


def test_an_alias_and_a_version_load_the_version_they_name(registered):
    before = process_state()
    client = connect(registered)
    by_alias = load_model(f"models:/{NAME}@challenger", client)
    assert (by_alias.registered_name, by_alias.version) == (NAME, "1")
    assert by_alias.source == f"models:/{NAME}@challenger"
    forecast = by_alias.forecaster.predict(3, level=[80])
    assert forecast["unique_id"].nunique() == 3 and len(forecast) == 9
    by_version = load_model(f"models:/{NAME}/2", client)
    assert by_version.version == "2" and by_version.spec["horizon"] == 6
    pyfunc = load_pyfunc(client, f"models:/{NAME}/1")
    answer = pyfunc.predict(pd.DataFrame({"unique_id": ["s0"]}), params={"h": 2})
    assert answer["unique_id"].tolist() == ["s0", "s0"] and "cutoff" in answer.columns
    assert process_state() == before, "loading changed MLflow's globals or os.environ"


def test_a_missing_version_or_alias_says_what_there_is(registered):
    client = connect(registered)
    with pytest.raises(ModelLoadError, match=r"no version 9 of 'tiny' \(versions: \[1, 2\]\)"):
        load_model(f"models:/{NAME}/9", client)
    with pytest.raises(ModelLoadError, match=r"has no alias 'champion'.*tsops alias tiny"):
        load_model(f"models:/{NAME}@champion", client)
    with pytest.raises(ModelLoadError, match=r"no version 1 of 'other'.*no versions"):
        load_model("models:/other/1", client)
    with pytest.raises(ModelLoadError, match="no registry was connected"):
        load_model(f"models:/{NAME}/1")
    with pytest.raises(ModelLoadError, match="not an MLflow model directory"):
        load_model(str(registered))


def test_an_export_carries_its_release_and_loads_as_a_directory(registered, tmp_path):
    release = export_model(connect(registered), f"models:/{NAME}@challenger", tmp_path / "out")
    assert release["version"] == "1" and release["name"] == NAME
    assert json.loads((tmp_path / "out" / "release.json").read_text()) == release
    loaded = load_model(str(tmp_path / "out"))
    assert (loaded.registered_name, loaded.version) == (NAME, "1")
    (tmp_path / "out" / "release.json").unlink()
    unnamed = load_directory(tmp_path / "out", default_version="7")
    assert (unnamed.registered_name, unnamed.version) == (NAME, "7")
    assert load_directory(tmp_path / "out").version == "unknown"
