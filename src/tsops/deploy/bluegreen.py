"""Blue/green: two complete, warm releases of the model server and one switch.

Blue is the environment's own InferenceService (``<model>``: model-version.yaml and the
``tsops-serving`` pin), green the component's ``<model>-green`` (bluegreen-green.yaml and
``tsops-serving-green``). Clients call InferenceGraph ``<model>-bluegreen``, whose one
step, in bluegreen-live.yaml, is the live colour.

- ``tsops bluegreen MODEL --env ENV --release R`` pins the idle colour to R (on the first
  call: switches the component on with blue live and green on R). Only the idle colour
  ever changes release: a new revision where no user is.
- ``--to green|blue`` switches: the graph's step and the CronJobs' ``tsops-batch`` pin
  (batch forecasts follow the live colour), nothing else. No InferenceService template
  changes, so Knative makes no revision and starts no pod: the colour switched to has
  been running all along, and switching back is the same one-line change.
- Each colour's model server has ``--shadow_url`` set to the other colour once, at the
  start: the idle colour gets a copy of every request (the copy carries ``tsops-shadow:
  1``, so it logs with role shadow and forwards nothing). It stays warm (no scale to zero,
  caches filled) and is scored on the same targets as the live one. Which colour is live
  changes which one forwards, not any template.

Commands that would change the live colour's release in place (release, promote, canary,
rollback, A/B) are refused in an environment running blue/green (tsops.deploy.gitops).
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
    release_notes,
    release_patch_text,
)
from tsops.deploy.overlays import (
    AB_COMPONENT,
    PREVIOUS_MODEL_VERSION,
    GitOpsError,
    check_model,
    dump,
    load,
    overlay,
)
from tsops.deploy.pins import BATCH_IMAGE, SERVING_IMAGE
from tsops.deploy.served import CANARY_FIELD, serving

COMPONENT = "../../components/bluegreen"
COLOURS = ("blue", "green")
GREEN = by_suffix("-green")
LIVE_FILE = "bluegreen-live.yaml"
MIRROR_FILES = {"blue": "bluegreen-mirror-blue.yaml", "green": "bluegreen-mirror-green.yaml"}
FILES = {LIVE_FILE, GREEN.patch, *MIRROR_FILES.values()}


def running(env_dir: Path) -> bool:
    return COMPONENT in (load(env_dir / "kustomization.yaml").get("components") or [])


def service(model: str, colour: str) -> str:
    return model if colour == "blue" else f"{model}{GREEN.suffix}"


def live_colour(env_dir: Path) -> str:
    """The colour bluegreen-live.yaml sends the users to."""
    path = env_dir / LIVE_FILE
    try:
        (step,) = load(path)["spec"]["nodes"]["root"]["steps"]
        colour = str(step["name"])
    except (KeyError, TypeError, ValueError) as e:
        raise GitOpsError(
            f"{path} does not name one live colour (spec.nodes.root.steps: one step named "
            f"blue or green): {e!r}; write it with `tsops bluegreen MODEL --to blue`"
        ) from None
    if colour not in COLOURS:
        raise GitOpsError(f"{path}: the live colour {colour!r} is not blue or green")
    return colour


def idle(colour: str) -> str:
    return "green" if colour == "blue" else "blue"


def strategy(root: Path, env: str):
    """The blue/green ``env`` runs, as a Strategy: the live colour 100 %, the idle one 0 %
    with role shadow (it gets a copy of every request); the baseline is the live colour."""
    from tsops.deploy.strategies import ROLE_LIVE, ROLE_SHADOW, Arm, Strategy

    env_dir = overlay(root, env)
    now = serving(root, env)
    live = live_colour(env_dir)
    green = read_release(env_dir, GREEN)
    if green is None:
        raise GitOpsError(f"{env} runs blue/green but pins no green release ({GREEN.patch})")
    releases = {"blue": (now.release, now.version), "green": green}
    arms = tuple(
        Arm(
            colour,
            service(now.model, colour),
            *releases[colour],
            100 if colour == live else 0,
            ROLE_LIVE if colour == live else ROLE_SHADOW,
        )
        for colour in COLOURS
    )
    return Strategy("bluegreen", now.model, env, arms, live)


def _live_text(model: str, colour: str) -> str:
    graph = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": f"{model}-bluegreen"},
        "spec": {
            "nodes": {
                "root": {
                    "routerType": "Sequence",
                    "steps": [{"name": colour, "serviceName": service(model, colour)}],
                }
            }
        },
    }
    return (
        "# The live colour of blue/green: users get its answers (tsops bluegreen --to blue|green\n"
        "# switches; the other colour gets a copy of each request and stays warm).\n"
    ) + dump(graph)


def _check_exclusive(root: Path, env: str, env_dir: Path, model: str) -> None:
    """Blue/green owns all the traffic: no A/B test, no canary, no shadow beside it."""
    from tsops.deploy import shadow

    components = load(env_dir / "kustomization.yaml").get("components") or []
    if AB_COMPONENT in components:
        raise GitOpsError(
            f"{env} runs an A/B test or bandit (components/ab): end it before blue/green, one "
            "strategy owns the traffic; e.g. `tsops ab --weights current=100,candidate=0` and "
            "remove components/ab from the overlay"
        )
    if shadow.COMPONENT in components:
        raise GitOpsError(
            f"{env} runs a shadow: in blue/green the idle colour is the live one's shadow; "
            f"switch the shadow off first (`tsops shadow {model} --env {env} --off`) and pin "
            "the release to compare as the idle colour"
        )
    now = serving(root, env)
    if now.canary is not None and now.previous_version:
        raise GitOpsError(
            f"{env} runs a canary of {now.release} ({CANARY_FIELD} {now.canary}): finish it "
            f"(`tsops canary {model} --env {env} --percent 100`) or roll it back "
            f"(`tsops rollback {model} --env {env}`, twice to pin the previous release) "
            "before blue/green"
        )


def drop_dormant_canary(env_dir: Path) -> list:
    """canary.yaml without its field when no canary runs (no release before the pinned
    one, as shipped): such a share splits nothing today, but the next template change
    would split the users between two revisions of the same release. Blue/green means one
    revision per colour; a mirror must be on the revision that answers."""
    from tsops.deploy.gitops import Edit

    path = env_dir / "canary.yaml"
    if not path.exists():
        return []
    notes = load(env_dir / "model-version.yaml")["metadata"].get("annotations") or {}
    if notes.get(PREVIOUS_MODEL_VERSION):
        return []  # a canary with a release before it: a real split, not ours to end
    doc = load(path)
    if doc["spec"]["predictor"].pop(CANARY_FIELD, None) is None:
        return []
    return [Edit(path, dump(doc))]


def release_edits(
    root: Path, model: str, env: str, release: str, model_version: str, image: str
) -> list:
    """Pin the idle colour of ``env`` to ``release`` (registry ``model_version``, image
    ``repository:tag@digest``). The first time, switch blue/green on: blue (what ``env``
    serves) live, green on ``release``, each colour mirroring to the other."""
    from tsops.deploy.gitops import Edit

    env_dir = overlay(root, env)
    check_model(env_dir, model)
    pin = check_release_pin(model, env, release, image)
    notes = release_notes(model, release, model_version)
    kust = Kustomization(env_dir)
    if running(env_dir):
        target = idle(live_colour(env_dir))
        if target == "green":
            kust.pin(GREEN.image, pin)
            text = release_patch_text(model, GREEN, release, model_version, _green_comment())
            return [Edit(env_dir / GREEN.patch, text), Edit(kust.path, kust.text())]
        # blue is idle: its own release moves, as a release does (a new revision where no
        # user is); the CronJobs stay on green, the live colour
        path = env_dir / "model-version.yaml"
        doc = load(path)
        annotations = doc["metadata"]["annotations"]
        for key in list(annotations):
            if str(key).startswith("tsops.io/"):
                del annotations[key]  # lineage and history of the release replaced
        annotations.update(notes)
        kust.pin(SERVING_IMAGE, pin)
        return [Edit(path, dump(doc)), Edit(kust.path, kust.text())]
    _check_exclusive(root, env, env_dir, model)
    ns = namespace(env_dir)
    kust.add_component(COMPONENT)
    kust.pin(GREEN.image, pin)
    kust.add_patch(GREEN.patch)
    kust.add_patch(LIVE_FILE)
    for colour in COLOURS:
        kust.add_patch(MIRROR_FILES[colour], service(model, colour))
    # green as big as blue: the overlay's scale patch on it too (a switch must not land
    # on a smaller release)
    if kust.patches_on("scale.yaml") and service(model, "green") not in kust.patches_on(
        "scale.yaml"
    ):
        kust.add_patch("scale.yaml", service(model, "green"))
    edits = [
        Edit(
            env_dir / GREEN.patch,
            release_patch_text(model, GREEN, release, model_version, _green_comment()),
        ),
        Edit(env_dir / LIVE_FILE, _live_text(model, "blue")),
    ]
    for colour in COLOURS:
        other = idle(colour)
        why = (
            f"{colour}'s model server sends a copy of every request it answers to {other} "
            "(set once: whichever colour is live, the idle one stays warm and is scored)."
        )
        url = cluster_url(service(model, other), ns)
        edits.append(
            Edit(
                env_dir / MIRROR_FILES[colour], mirror_patch_text(service(model, colour), url, why)
            )
        )
    return [*edits, *drop_dormant_canary(env_dir), Edit(kust.path, kust.text())]


def _green_comment() -> str:
    return (
        "# Green's release (tsops bluegreen --release while blue is live); its image pin is\n"
        "# the images: entry tsops-serving-green in kustomization.yaml.\n"
    )


def switch_edits(root: Path, model: str, env: str, to: str) -> list:
    """Send all users to colour ``to``: the graph's step and the CronJobs' tsops-batch pin,
    no InferenceService (no new revision, no cold start)."""
    from tsops.deploy.gitops import Edit

    if to not in COLOURS:
        raise GitOpsError(f"unknown colour {to!r}: switch --to blue or --to green")
    env_dir = overlay(root, env)
    check_model(env_dir, model)
    if not running(env_dir):
        raise GitOpsError(
            f"{env} runs no blue/green: start it by pinning the idle colour, `tsops bluegreen "
            f"{model} --env {env} --release {model}/vX.Y.Z`"
        )
    live = live_colour(env_dir)
    if live == to:
        raise GitOpsError(f"{to} is live in {env} already; nothing to switch")
    if read_release(env_dir, GREEN) is None:
        raise GitOpsError(f"{env} pins no green release ({GREEN.patch}); pin it with --release")
    kust = Kustomization(env_dir)
    kust.pin(BATCH_IMAGE, kust.entry_pin(SERVING_IMAGE if to == "blue" else GREEN.image))
    return [Edit(env_dir / LIVE_FILE, _live_text(model, to)), Edit(kust.path, kust.text())]


def refuse(env_dir: Path, env: str, model: str, what: str) -> None:
    """A command that changes blue's release or the traffic in place is refused while
    blue/green runs: it would replace or split the live colour under the users."""
    if not running(env_dir):
        return
    live = live_colour(env_dir)
    raise GitOpsError(
        f"{env} runs blue/green ({live} is live): {what} would change a colour in place. "
        f"Pin the idle colour with `tsops bluegreen {model} --env {env} --release "
        f"{model}/vX.Y.Z`, then switch with `tsops bluegreen {model} --env {env} --to "
        f"{idle(live)}`; switch back the same way"
    )


def off_edits(root: Path, model: str, env: str) -> list:
    """End blue/green in ``env`` while blue is live: the component, green's pin and every
    blue/green file go; blue (the environment's own InferenceService) serves on alone.
    Blue's mirror goes too, a change of its args: one new revision of the release it
    already runs. Clients call ``<model>`` again instead of ``<model>-bluegreen``."""
    from tsops.deploy.gitops import Edit

    env_dir = overlay(root, env)
    check_model(env_dir, model)
    if not running(env_dir):
        raise GitOpsError(f"{env} runs no blue/green; nothing to switch off")
    live = live_colour(env_dir)
    if live != "blue":
        green = read_release(env_dir, GREEN)
        raise GitOpsError(
            f"green is live in {env}: blue/green ends on blue, the environment's own "
            f"InferenceService. Pin green's release into blue (`tsops bluegreen {model} --env "
            f"{env} --release {green[0] if green else '<green release>'}`), switch to it "
            f"(`--to blue`), then --off"
        )
    kust = Kustomization(env_dir)
    kust.remove_component(COMPONENT)
    kust.unpin(GREEN.image)
    kust.remove_patches(FILES)
    patches = kust.doc.get("patches") or []
    for entry in [
        e
        for e in patches
        if e.get("path") == "scale.yaml"
        and (e.get("target") or {}).get("name") == service(model, "green")
    ]:
        patches.remove(entry)
    return [*(Edit(env_dir / name, None) for name in sorted(FILES)), Edit(kust.path, kust.text())]
