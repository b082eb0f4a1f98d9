"""Feast definitions of every model listed in params.yaml, for the ``feast`` command line
(``feast -c features plan``); ``tsops features apply|materialize MODEL`` registers the same
objects, built by ``tsops.platform.features.definitions``.
"""

from pathlib import Path

from ruamel.yaml import YAML

from tsops.core.config import load
from tsops.platform.features import definitions

_ROOT = Path(__file__).resolve().parent.parent

for _model in YAML(typ="safe").load((_ROOT / "params.yaml").read_text())["models"]:
    for _definition in definitions(_model, load(_ROOT, _model)[0]):
        # Feast collects the module's objects, each under its own name
        globals()[f"{type(_definition).__name__}_{_definition.name}"] = _definition
