"""``kubectl kustomize`` run once per distinct input in a test run.

The tests render the same overlays again and again: every ``validate_all`` renders
each overlay alone, with each component switched on and with its pins bumped (ten
kubectl processes), and the story, the GitOps commands and the monitoring loop validate
after every step, most of which change one overlay or none. kustomize's output is a
function of the files it reads, so :func:`cached_render` keys it by the content of the
files it reads (every file of the directory and of the folders its kustomization names,
followed through theirs, inside ``manifests/`` or ``argocd/``; paths relative to that
folder, so a copy of an overlay is the same input) and the directory's place there:
the first render of an input runs the real ``kubectl kustomize``, the same input later
(in any test, on any xdist worker: the texts are files in the run's shared folder) is
kustomize's output read back and parsed exactly as ``render`` parses it. A render that
fails is never kept (each failing call runs kubectl and raises its error). A directory
outside such a tree is rendered every time.

The plugin (registered in tests/conftest.py) puts it in place of
``tsops.deploy.manifests.render.render`` for the run; ``TSOPS_TEST_RENDER_EVERY_TIME=1``
turns it off, and ``TSOPS_TEST_RENDER_CHECK=1`` runs kubectl for every kept text too and
fails when its output differs (the deploy tests and the story: 160 kept texts used, 81
renders, none different). Processes the tests start (``tsops`` commands) render as they
always do.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.once import shared_dir

OFF_ENV = "TSOPS_TEST_RENDER_EVERY_TIME"
#: render again whenever a kept text is used, and fail if kustomize now says otherwise
CHECK_ENV = "TSOPS_TEST_RENDER_CHECK"
#: the top folders kustomize renders from, and what in them is no kustomize input
TREES = {"manifests": {"crds"}, "argocd": set()}

_folder: Path | None = None


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in (*value.keys(), *value.values()):
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _read_folders(directory: Path, top: Path) -> set[Path] | None:
    """The folders whose files ``kubectl kustomize directory`` may read: the directory,
    and every folder a kustomization there names (a resource, component, patch or
    generator file: any string of it that is a path that exists), followed through the
    kustomizations they hold. None when one is not valid YAML or names a path outside
    ``top``."""
    import yaml

    from tsops.deploy.manifests.render import kustomization_file

    folders: set[Path] = set()
    todo = [directory]
    while todo:
        folder = todo.pop()
        if folder in folders:
            continue
        folders.add(folder)
        path = kustomization_file(folder)
        if path is None:
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            return None
        for text in _strings(docs):
            if "\n" in text or len(text) > 500:
                continue  # an inline patch, not a path
            try:
                named = (folder / text).resolve()
                exists = named.exists()
            except (OSError, ValueError):
                continue
            if not exists:
                continue
            if top != named and top not in named.parents:
                return None
            todo.append(named if named.is_dir() else named.parent)
    return folders


def tree_key(directory: Path) -> str | None:
    """A digest of what ``kubectl kustomize directory`` reads: the files (paths in the
    ``manifests`` or ``argocd`` folder the directory is in, and bytes) of the folders
    :func:`_read_folders` finds, and the directory's path there; None outside such a
    folder, or when the folders cannot be told."""
    directory = Path(directory).resolve()
    top = next((p for p in (directory, *directory.parents) if p.name in TREES), None)
    if top is None:
        return None
    folders = _read_folders(directory, top)
    if folders is None:
        return None
    skipped = TREES[top.name]
    digest = hashlib.sha256()
    digest.update(f"{top.name}\0{directory.relative_to(top).as_posix()}\0".encode())
    for folder in sorted(folders):
        rel_folder = folder.relative_to(top)
        if rel_folder.parts and rel_folder.parts[0] in skipped:
            return None
        for path in sorted(folder.iterdir()):
            if path.is_dir():
                continue
            rel = path.relative_to(top).as_posix()
            link = os.readlink(path) if path.is_symlink() else ""
            digest.update(f"{rel}\0{link}\0".encode())
            if path.is_file():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def cached_render(directory: Path) -> list[dict]:
    """``render(directory)``, running kubectl only for an input not rendered yet."""
    from tsops.deploy.manifests import render as module

    kubectl = module.find_kubectl()  # the same error as render's when it is missing
    key = tree_key(directory) if _folder is not None else None
    if key is None:
        return _original(directory)
    text_file = _folder / f"{key}.yaml"
    if text_file.exists():
        text = text_file.read_text()
        if os.environ.get(CHECK_ENV):
            again = subprocess.run(
                [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
            )
            assert again.stdout == text, (
                f"{directory}: kustomize's output differs from the kept one"
            )
    else:
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        text = result.stdout
        # written whole or not at all: another worker may read it at any moment
        with tempfile.NamedTemporaryFile("w", dir=_folder, delete=False, suffix=".part") as f:
            f.write(text)
        os.replace(f.name, text_file)
    return [d for d in module.load_all(text) if isinstance(d, dict)]


def _original(directory: Path) -> list[dict]:
    return _ORIGINAL[0](directory)


_ORIGINAL: list = []


@pytest.fixture(scope="session", autouse=True)
def _render_each_input_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    global _folder
    if os.environ.get(OFF_ENV):
        yield
        return
    from tsops.deploy.manifests import render as module

    original = module.render
    _ORIGINAL[:] = [original]
    _folder = shared_dir(tmp_path_factory) / "kustomize-renders"
    _folder.mkdir(exist_ok=True)
    # every module that imported the function by name (validate.py, the tests)
    patched = [
        m
        for m in list(sys.modules.values())
        if m is not None and getattr(m, "render", None) is original
    ]
    for m in patched:
        m.render = cached_render
    try:
        yield
    finally:
        for m in patched:
            m.render = original
        _folder = None
