"""Build-time check of the model the Dockerfile bakes into /mnt/models.

Run in the Dockerfile's `model` stage as `python check-baked-model.py DIR NAME VERSION`
(NAME and VERSION are the MODEL_NAME / MODEL_VERSION build args, may be empty). Fails
the build when the folder's release.json names another model or version than the build
args (the image tag would lie) or when the server cannot load it: it runs the server's own
start-up (load + the forecasts it precomputes), so a model pickled by an incompatible tsops
version fails here, not in production.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(model_dir: str, name: str, version: str) -> None:
    from tsops.registry.loading import RELEASE_FILE
    from tsops.serving.model import ForecastModel

    path = Path(model_dir)
    release_file = path / RELEASE_FILE
    release = json.loads(release_file.read_text()) if release_file.exists() else {}
    problems = [
        f"build arg MODEL_{key.upper()}={wanted!r} but {RELEASE_FILE} says {release.get(key)!r}"
        for key, wanted in (("name", name), ("version", version))
        if wanted and str(release.get(key)) != wanted
    ]
    if problems:
        sys.exit(
            "error: MODEL_DIR holds another model than the build args name: " + "; ".join(problems)
        )
    model = ForecastModel(name or "model", str(path))
    try:
        model.load()
    except Exception as exc:
        sys.exit(f"error: the server cannot start with the model in MODEL_DIR: {exc!r}")
    loaded = model.loaded
    print(
        f"baked model: {loaded.registered_name} version {loaded.version}, "
        f"{len(model.series)} series, horizon up to {model.max_horizon} ({path})"
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
