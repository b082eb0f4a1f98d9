"""What an overlay serves, read from its files: git's view, which Argo CD applies (git
owns canaryTrafficPercent, see manifests/README.md). ``tsops sync-champion`` follows it
and the GitOps edits start from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tsops.deploy.overlays import (
    MODEL_VERSION,
    PREVIOUS_IMAGE,
    PREVIOUS_MODEL_VERSION,
    PREVIOUS_RELEASE,
    REGISTERED_MODEL,
    RELEASE,
    GitOpsError,
    load,
    overlay,
)
from tsops.deploy.pins import BATCH_IMAGE, SERVING_IMAGE, Pin, read_pin

CANARY_FIELD = "canaryTrafficPercent"


@dataclass(frozen=True)
class Serving:
    """The release an overlay pins, its canary share and the release it replaced."""

    env: str
    model: str
    release: str
    version: str  # registry version of the release the InferenceService pins
    canary: int | None  # canaryTrafficPercent; None when fully promoted
    image: Pin | None = None  # the InferenceService's pin
    batch_image: Pin | None = None  # the CronJobs' pin: the stable release
    previous_release: str | None = None
    previous_version: str | None = None
    previous_image: str | None = None

    @property
    def _on_previous(self) -> bool:
        # With a canary, KServe sends the rest of the traffic to the last revision rolled
        # out fully, the release this one replaced; with nothing before it, the only
        # revision takes everything.
        return self.canary is not None and bool(self.previous_version)

    @property
    def stable_release(self) -> str:
        return str(self.previous_release) if self._on_previous else self.release

    @property
    def stable_version(self) -> str:
        """The version that takes the traffic the canary does not (all of it without one)."""
        return str(self.previous_version) if self._on_previous else self.version

    def describe(self) -> str:
        text = f"{self.env} pins {self.release} (version {self.version})"
        if self.canary is None:
            return text + ", fully promoted"
        text += f" at canary {self.canary}%"
        if self._on_previous:
            text += f", the rest on {self.previous_release} (version {self.previous_version})"
        return text


def canary_value(env_dir: Path) -> int | None:
    """The overlay's canaryTrafficPercent (canary.yaml); None without one."""
    if not (env_dir / "canary.yaml").exists():
        return None
    canary = load(env_dir / "canary.yaml")["spec"]["predictor"].get(CANARY_FIELD)
    if canary is not None and (isinstance(canary, bool) or not isinstance(canary, int)):
        raise GitOpsError(
            f"{env_dir}/canary.yaml: {CANARY_FIELD} is {canary!r}, not a whole number"
        )
    return canary


def _pin_or_none(env_dir: Path, name: str) -> Pin | None:
    try:
        return read_pin(env_dir, name)
    except GitOpsError:  # an overlay may pin only some images
        return None


def serving(root: Path, env: str) -> Serving:
    """The release ``env`` serves, its canary share and the release it replaced."""
    env_dir = overlay(root, env)
    annotations = load(env_dir / "model-version.yaml")["metadata"]["annotations"]
    missing = [k for k in (RELEASE, REGISTERED_MODEL, MODEL_VERSION) if not annotations.get(k)]
    if missing:
        raise GitOpsError(
            f"{env_dir}/model-version.yaml has no {', '.join(missing)}; "
            "write it with `tsops release` or `tsops promote`"
        )
    previous = annotations.get(PREVIOUS_MODEL_VERSION)
    return Serving(
        env=env,
        model=str(annotations[REGISTERED_MODEL]),
        release=str(annotations[RELEASE]),
        version=str(annotations[MODEL_VERSION]),
        canary=canary_value(env_dir),
        image=_pin_or_none(env_dir, SERVING_IMAGE),
        batch_image=_pin_or_none(env_dir, BATCH_IMAGE),
        previous_release=annotations.get(PREVIOUS_RELEASE),
        previous_version=None if previous is None else str(previous),
        previous_image=annotations.get(PREVIOUS_IMAGE),
    )
