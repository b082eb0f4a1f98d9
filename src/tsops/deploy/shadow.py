"""Shadow: a challenger release gets a copy of the requests the main InferenceService
answers; users only ever get the main one's answer.

The mechanism is the model server's own forwarding (tsops.serving.shadow): after it has
answered, the main server sends the same request, with the header ``tsops-shadow: 1``,
to its ``--shadow_url`` asynchronously through a bounded queue with a timeout, so a slow
or failed shadow never delays or fails a user's request; the shadow logs its forecasts
with role shadow and forwards nothing. No mesh is assumed (Istio's mirroring would need
Istio and would not mark the copies). The shadow is InferenceService ``<model>-shadow``
(components/shadow), pinned like the A/B candidate.

``tsops shadow MODEL --env ENV --release R`` writes: the component, the images: entry
``tsops-serving-shadow``, shadow.yaml (its release annotations) and shadow-mirror.yaml
(the main server's --shadow_url, the shadow's cluster-local URL). ``--off`` removes all of
it. A new shadow URL is a template change of the main InferenceService (a new revision,
rolled out as any settings change); the shadow's own release changes touch only it.
"""

from __future__ import annotations

from pathlib import Path

from tsops.deploy.arms import (
    Kustomization,
    by_suffix,
    check_release_pin,
    cluster_url,
    mirror_patch_text,
    namespace,
    read_release,
    release_patch_text,
)
from tsops.deploy.overlays import GitOpsError, check_model, load, overlay
from tsops.deploy.served import serving

COMPONENT = "../../components/shadow"
SHADOW = by_suffix("-shadow")
MIRROR_FILE = "shadow-mirror.yaml"


def running(env_dir: Path) -> bool:
    return COMPONENT in (load(env_dir / "kustomization.yaml").get("components") or [])


def strategy(root: Path, env: str):
    """The shadow ``env`` runs (None without one): ``champion``, the main InferenceService
    with the share of the users it answers, and ``shadow`` (0 %, role shadow)."""
    from tsops.deploy.strategies import ROLE_LIVE, ROLE_SHADOW, Arm, Strategy, traffic_strategy

    env_dir = overlay(root, env)
    if not running(env_dir):
        return None
    found = read_release(env_dir, SHADOW)
    if found is None:
        raise GitOpsError(f"{env} runs a shadow but pins no release for it ({SHADOW.patch})")
    traffic = traffic_strategy(root, env)
    baseline = traffic.arm(traffic.baseline)
    main = baseline.service
    share = sum(a.share for a in traffic.arms if a.service == main and a.role == ROLE_LIVE)
    arms = (
        Arm("champion", main, baseline.release, baseline.model_version, share, ROLE_LIVE),
        Arm("shadow", f"{traffic.model}{SHADOW.suffix}", *found, 0, ROLE_SHADOW),
    )
    return Strategy("shadow", traffic.model, env, arms, "champion")


def start_edits(
    root: Path, model: str, env: str, release: str, model_version: str, image: str
) -> list:
    """Run ``release`` (registry ``model_version``, image ``repository:tag@digest``) as the
    shadow of ``env``'s main InferenceService; a running shadow moves to it."""
    from tsops.deploy import bluegreen
    from tsops.deploy.gitops import Edit

    env_dir = overlay(root, env)
    check_model(env_dir, model)
    pin = check_release_pin(model, env, release, image)
    if bluegreen.running(env_dir):
        raise GitOpsError(
            f"{env} runs blue/green: its idle colour already gets a copy of every request (it "
            f"is the live colour's shadow); pin the release to compare there with `tsops "
            f"bluegreen {model} --env {env} --release {release}`"
        )
    now = serving(root, env)
    if now.canary is not None and now.previous_version and not running(env_dir):
        raise GitOpsError(
            f"{env} runs a canary of {now.release} ({now.canary} %): the --shadow_url makes a "
            f"new revision of {model}, while the rest of the traffic stays on the revision "
            "rolled out before it, which has no mirror, so the shadow would get copies of "
            f"the canary's share only. Finish the canary (`tsops canary {model} --env {env} "
            "--percent 100`) or roll it back first; a shadow already running stays through "
            "a later canary"
        )
    kust = Kustomization(env_dir)
    kust.add_component(COMPONENT)
    kust.pin(SHADOW.image, pin)
    kust.add_patch(SHADOW.patch)
    kust.add_patch(MIRROR_FILE, model)
    comment = (
        "# The shadow's release (tsops shadow --release): it gets a copy of each request the\n"
        f"# main InferenceService answers; its image pin is the images: entry {SHADOW.image}.\n"
    )
    url = cluster_url(f"{model}{SHADOW.suffix}", namespace(env_dir))
    why = (
        f"{model}'s model server sends a copy of every request it answers to the shadow "
        "(tsops shadow; --off removes this file)."
    )
    from tsops.deploy.bluegreen import drop_dormant_canary

    return [
        Edit(
            env_dir / SHADOW.patch,
            release_patch_text(model, SHADOW, release, model_version, comment),
        ),
        Edit(env_dir / MIRROR_FILE, mirror_patch_text(model, url, why)),
        # the mirror is a new revision: with a canary share left from a canary that has no
        # release before it, KServe would split the users between the new revision and the
        # last rolled-out one, which has no mirror (the same release; copies of a part only)
        *drop_dormant_canary(env_dir),
        Edit(kust.path, kust.text()),
    ]


def off_edits(root: Path, model: str, env: str) -> list:
    """Stop the shadow of ``env``: the component, its pin and both files go."""
    from tsops.deploy.gitops import Edit

    env_dir = overlay(root, env)
    check_model(env_dir, model)
    if not running(env_dir):
        raise GitOpsError(f"{env} runs no shadow; nothing to switch off")
    kust = Kustomization(env_dir)
    kust.remove_component(COMPONENT)
    kust.unpin(SHADOW.image)
    kust.remove_patches({SHADOW.patch, MIRROR_FILE})
    return [
        Edit(env_dir / SHADOW.patch, None),
        Edit(env_dir / MIRROR_FILE, None),
        Edit(kust.path, kust.text()),
    ]
