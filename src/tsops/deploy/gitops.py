"""The GitOps edits of the overlays: release, promotion, canary, A/B, rollback.

Every command computes all its edits first (:class:`Edit`) and writes them only when
every input checked out (:func:`apply`), each file through a temporary sibling and a
rename, so bad input leaves every file as it was: a :class:`GitOpsError` always means
that no file changed. YAML is edited round-trip (:mod:`tsops.deploy.overlays`).
What an overlay serves is read by :mod:`tsops.deploy.served`, image pins by
:mod:`tsops.deploy.pins`.

The commands' edits stay in one module (about 400 lines): they build on each other (a
promotion can start a canary, a rollback can end one) and share the canary.yaml and
kustomization bookkeeping.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from tsops.deploy.overlays import (
    AB_COMPONENT,
    MODEL_VERSION,
    PREVIOUS_IMAGE,
    PREVIOUS_MODEL_VERSION,
    PREVIOUS_RELEASE,
    REGISTERED_MODEL,
    RELEASE,
    ROLLED_BACK_FROM,
    GitOpsError,
    candidate_patch,
    check_model,
    dump,
    load,
    overlay,
    round_trip_yaml,
)
from tsops.deploy.pins import (
    BATCH_IMAGE,
    CANDIDATE_IMAGE,
    SERVING_IMAGE,
    Pin,
    check_digest,
    check_image_repository,
    image_tag,
    parse_release,
    read_pin,
    require_digest,
    set_pins,
)
from tsops.deploy.served import CANARY_FIELD, Serving, canary_value, serving


def _refuse_bluegreen(env_dir: Path, env: str, model: str, what: str) -> None:
    from tsops.deploy.bluegreen import refuse

    refuse(env_dir, env, model, what)


@dataclass(frozen=True)
class Edit:
    path: Path
    text: str | None  # None deletes the file


def apply(edits: list[Edit]) -> list[Path]:
    """Write every edit: all temporary files first, then the renames."""
    staged: list[tuple[Path, Path | None]] = []
    try:
        for edit in edits:
            if edit.text is None:
                staged.append((edit.path, None))
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{edit.path.name}.", dir=edit.path.parent)
            with os.fdopen(fd, "w") as fh:
                fh.write(edit.text)
            staged.append((edit.path, Path(tmp)))
        for path, tmp in staged:
            if tmp is None:
                path.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
    finally:
        for _, tmp in staged:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    return [e.path for e in edits]


def _kustomization_edit(env_dir: Path, pins: dict[str, Pin], add_missing: bool = False) -> Edit:
    """Set the ``images:`` entries named in ``pins`` (``add_missing``: create absent ones)."""
    path = env_dir / "kustomization.yaml"
    doc = load(path)
    set_pins(doc, path, pins, add_missing)
    return Edit(path, dump(doc))


def release_pin(
    root: Path,
    model: str,
    version: str,
    env: str = "staging",
    image: str | None = None,
    digest: str | None = None,
) -> Pin:
    """The image pin of release ``model/vX.Y.Z``: ``image`` (default: the repository
    ``env`` pins), tag ``<model>-vX.Y.Z`` and ``digest`` (required outside local)."""
    semver = parse_release(version)
    if image is not None:
        check_image_repository(image)
    if digest is not None:
        check_digest(digest)
    pin = Pin(image or read_pin(overlay(root, env)).repository, image_tag(model, semver), digest)
    require_digest(env, pin)
    return pin


def release_edits(
    root: Path,
    model: str,
    version: str,
    model_version: str,
    lineage: dict[str, str],
    env: str = "staging",
    image: str | None = None,
    digest: str | None = None,
) -> list[Edit]:
    """Point ``env`` (staging) at release ``model/vX.Y.Z`` = registry version ``model_version``,
    built into ``image`` (a repository; default: the one the overlay pins) with ``digest``.

    A release replaces what ``env`` serves at once (no canary: that is promotion's), so
    the InferenceService and the CronJobs both move to it."""
    semver = parse_release(version)
    env_dir = overlay(root, env)
    check_model(env_dir, model)
    pin = release_pin(root, model, version, env=env, image=image, digest=digest)
    _refuse_bluegreen(env_dir, env, model, f"a release into {env}")
    if canary_value(env_dir) is not None:
        raise GitOpsError(
            f"{env} has a canary (canary.yaml): releases go to an environment without one; "
            "move a release into a canary environment with `tsops promote --canary N`"
        )
    path = env_dir / "model-version.yaml"
    doc = load(path)
    annotations = doc["metadata"]["annotations"]
    annotations[RELEASE] = f"{model}/v{semver}"
    annotations[REGISTERED_MODEL] = model
    annotations[MODEL_VERSION] = DoubleQuotedScalarString(model_version)
    for key in (PREVIOUS_RELEASE, PREVIOUS_MODEL_VERSION, PREVIOUS_IMAGE):
        annotations.pop(key, None)
    for key, value in lineage.items():
        annotations[f"tsops.io/{key}"] = str(value)
    kustomization = _kustomization_edit(env_dir, {SERVING_IMAGE: pin, BATCH_IMAGE: pin})
    return [Edit(path, dump(doc)), kustomization]


def promote_edits(
    root: Path, model: str, source: str, target: str, canary: int | None = None
) -> list[Edit]:
    """Copy the release of ``source`` to ``target``: its version file and its image pin
    (repository, tag and digest). Without ``canary`` the release takes all the traffic at
    once (any canary share of ``target`` is removed); with it, the release that served
    until now keeps the rest (KServe's last rolled-out revision) and the CronJobs stay on
    it. The target's version file records the release it replaces, for a rollback."""
    if source == target:
        raise GitOpsError("--from and --to name the same environment")
    if canary is not None:
        check_percent(canary)
    src, dst = overlay(root, source), overlay(root, target)
    check_model(src, model)
    check_model(dst, model)
    _refuse_bluegreen(dst, target, model, f"a promotion into {target}")
    pin = read_pin(src)
    require_digest(target, pin)
    doc = load(src / "model-version.yaml")
    annotations = doc["metadata"]["annotations"]
    for key in (PREVIOUS_RELEASE, PREVIOUS_MODEL_VERSION, PREVIOUS_IMAGE):
        annotations.pop(key, None)
    try:
        now: Serving | None = serving(root, target)
    except GitOpsError:  # the target names no release yet: nothing to go back to
        now = None
    previous: tuple[str | None, str | None, str | None] = (None, None, None)
    if now is not None and annotations.get(RELEASE) == now.release:
        # promoted again (e.g. another canary start): it still replaces the same release
        previous = (now.previous_release, now.previous_version, now.previous_image)
    elif now is not None:
        # the stable release is what the CronJobs run (tsops-batch)
        stable_pin = now.batch_image or now.image
        previous = (now.stable_release, now.stable_version, stable_pin and stable_pin.ref)
    if previous[1] is not None and previous[0] != annotations.get(RELEASE):
        annotations[PREVIOUS_RELEASE] = previous[0]
        annotations[PREVIOUS_MODEL_VERSION] = DoubleQuotedScalarString(previous[1])
        if previous[2]:
            annotations[PREVIOUS_IMAGE] = previous[2]
    pins = {SERVING_IMAGE: pin}
    if canary is None or canary == 100:
        pins[BATCH_IMAGE] = pin  # fully promoted at once: batch follows
    edits = [Edit(dst / "model-version.yaml", dump(doc)), _kustomization_edit(dst, pins)]
    if canary is not None and canary != 100:
        edits += _canary_field_edits(dst, model, canary, kustomization=edits[1])
    elif (dst / "canary.yaml").exists():
        edits += _canary_field_edits(dst, model, None)
    return edits


def check_percent(percent: Any) -> int:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise GitOpsError(
            f"canary percent {percent!r} is outside 0..100: 0 rolls back, 100 promotes fully"
        )
    return percent


def _canary_field_edits(
    env_dir: Path, model: str, percent: int | None, kustomization: Edit | None = None
) -> list[Edit]:
    """canary.yaml with ``canaryTrafficPercent`` set (None removes the field), and the
    overlay's kustomization.yaml listing it when it did not exist yet."""
    path = env_dir / "canary.yaml"
    edits: list[Edit] = []
    if path.exists():
        doc = load(path)
    else:
        doc = round_trip_yaml().load(
            "# Share of traffic the newest revision gets (KServe, Knative mode); git owns it.\n"
            "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
            f"metadata:\n  name: {model}\nspec:\n  predictor: {{}}\n"
        )
        kpath = env_dir / "kustomization.yaml"
        kdoc = round_trip_yaml().load(kustomization.text) if kustomization else load(kpath)
        patches = kdoc.setdefault("patches", [])
        if not any(p.get("path") == "canary.yaml" for p in patches):
            patches.append({"path": "canary.yaml"})
        edits.append(Edit(kpath, dump(kdoc)))
    predictor = doc["spec"]["predictor"]
    if percent is None:
        predictor.pop(CANARY_FIELD, None)
    else:
        predictor[CANARY_FIELD] = percent
    edits.append(Edit(path, dump(doc)))
    return edits


def canary_edits(root: Path, model: str, env: str, percent: int) -> list[Edit]:
    """Set ``canaryTrafficPercent`` of an unfinished canary; 100 finishes it (the field is
    removed and the CronJobs move to the release), 0 sends all traffic back.

    Refused once a canary has finished: KServe then splits between the new release and
    its own last rolled-out revision, which after any other change (a settings or base
    edit makes a new revision) is the new release again, not the previous one. Go back
    with `tsops rollback`, which pins the previous release."""
    percent = check_percent(percent)
    env_dir = overlay(root, env)
    check_model(env_dir, model)
    _refuse_bluegreen(env_dir, env, model, "a canary share")
    now = serving(root, env)
    if now.canary is None and percent != 100:
        what = (
            f"{now.release} is fully promoted"
            if now.previous_release
            else f"{env} has no canary running"
        )
        raise GitOpsError(
            f"{what}: a canary share now would split traffic between revisions of "
            f"{now.release} (KServe's last rolled-out revision is its own). Roll back with "
            f"`tsops rollback {model} --env {env}`, or start a canary of the next release with "
            f"`tsops promote {model} --canary {percent}`"
        )
    edits: list[Edit] = []
    if percent == 100:
        edits.append(_kustomization_edit(env_dir, {BATCH_IMAGE: now.image}))
        edits += _canary_field_edits(env_dir, model, None, kustomization=edits[0])
    else:
        edits += _canary_field_edits(env_dir, model, percent)
    return edits


def candidate_edits(
    root: Path, model: str, env: str, release: str, model_version: str, image: str
) -> list[Edit]:
    """Pin the A/B candidate of ``env`` to ``release`` (registry ``model_version``, image
    ``repository:tag@digest``): its image entry and ab-candidate.yaml."""
    env_dir = overlay(root, env)
    check_model(env_dir, model)
    pin = Pin.parse(image)
    require_digest(env, pin)
    name, _, semver = release.rpartition("/v")
    if name != model or pin.tag != image_tag(model, parse_release(semver)):
        raise GitOpsError(
            f"candidate {release!r} and image tag {pin.tag!r} disagree; a candidate is a "
            f"release of {model} (<model>/vX.Y.Z) whose image tag is <model>-vX.Y.Z"
        )
    patch = candidate_patch(
        model,
        {
            RELEASE: release,
            REGISTERED_MODEL: model,
            MODEL_VERSION: DoubleQuotedScalarString(model_version),
        },
    )
    text = "# The A/B candidate (tsops ab --candidate); its image pin is in kustomization.yaml.\n"
    from tsops.deploy.arms import Kustomization

    kust = Kustomization(env_dir)
    kust.pin(CANDIDATE_IMAGE, pin)
    kust.add_patch("ab-candidate.yaml")
    return [Edit(env_dir / "ab-candidate.yaml", text + dump(patch)), Edit(kust.path, kust.text())]


def parse_weights(text: str) -> dict[str, int]:
    weights: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise GitOpsError(
                f"weights {text!r}: use name=percent pairs, e.g. current=70,candidate=30"
            )
        weights[name.strip()] = int(value)
    total = sum(weights.values())
    if total != 100:
        raise GitOpsError(f"weights {text!r} sum to {total}, not 100; e.g. current=70,candidate=30")
    return weights


THIRD_COMPONENT = "../../components/third"


def ab_edits(
    root: Path,
    model: str,
    env: str,
    weights_text: str,
    candidate: tuple[str, str, str] | None = None,
    third: tuple[str, str, str] | None = None,
    policy: dict[str, float | int] | None = None,
) -> list[Edit]:
    """Switch the A/B component on in ``env`` with the Splitter weights given, and pin its
    candidate to ``candidate`` = (release, registry version, image ref) when given; a
    third arm (components/third) to ``third`` likewise. ``policy`` (floor, max_step,
    min_scored) makes the split a multi-armed bandit: kept as annotations of
    ab-weights.yaml, beside the weights `tsops bandit` moves; a split that has one keeps it.

    Without a candidate the overlay must already pin one (an earlier `tsops ab
    --candidate`): the component has no release of its own."""
    from tsops.deploy import arms as arm_files
    from tsops.deploy.strategies import BANDIT_KEYS

    weights = parse_weights(weights_text)
    env_dir = overlay(root, env)
    check_model(env_dir, model)
    _refuse_bluegreen(env_dir, env, model, "an A/B split")
    now = serving(root, env)
    if now.canary is not None and now.previous_version:
        raise GitOpsError(
            f"{env} runs a canary of {now.release} (canaryTrafficPercent {now.canary}): one "
            f"strategy owns the traffic; finish it (`tsops canary {model} --env {env} --percent "
            f"100`) or roll it back (`tsops rollback {model} --env {env}`) first"
        )
    graph_file = Path(root) / "manifests" / "components" / "ab" / "inferencegraph.yaml"
    graph = load(graph_file)
    steps = list(graph["spec"]["nodes"]["root"]["steps"])
    third_service = f"{model}-third"
    has_third = third is not None or (env_dir / arm_files.by_suffix("-third").patch).exists()
    if has_third:
        steps.append({"name": "third", "serviceName": third_service})
    arms = {s["name"] for s in steps} | {s["serviceName"] for s in steps}
    unknown = sorted(set(weights) - arms)
    if unknown:
        raise GitOpsError(
            f"unknown A/B arm {unknown}; arms: "
            + ", ".join(f"{s['name']} ({s['serviceName']})" for s in steps)
            + ("" if has_third else "; a third arm needs --third <model>/vX.Y.Z")
        )
    if policy is not None:
        floor = float(policy["floor"])
        if not 0 <= floor * len(steps) <= 1:
            raise GitOpsError(
                f"bandit floor {floor:g} for {len(steps)} arms: every arm's minimum share "
                f"must fit in 100 % (floor <= {1 / len(steps):.3g})"
            )
        low = [
            f"{s['name']}={weights.get(s['name'], weights.get(s['serviceName'], 0))}"
            for s in steps
            if weights.get(s["name"], weights.get(s["serviceName"], 0)) < int(floor * 100 + 1e-9)
        ]
        if low:
            raise GitOpsError(
                f"{', '.join(low)} below the bandit floor {floor:g}: start every arm at "
                "the floor or above"
            )
        if not 0 < float(policy["max_step"]) <= 1 or int(policy["min_scored"]) < 1:
            raise GitOpsError(
                "bandit max_step must be a fraction in (0, 1] and min_scored at least 1"
            )
    edits: list[Edit] = []
    if candidate is not None:
        edits = candidate_edits(root, model, env, *candidate)
    elif not (env_dir / "ab-candidate.yaml").exists():
        raise GitOpsError(
            f"{env} has no A/B candidate yet; name the release to compare with "
            f"--candidate {model}/vX.Y.Z (a release `tsops release` recorded in the registry)"
        )
    kpath = env_dir / "kustomization.yaml"
    earlier = [e for e in edits if e.path == kpath]
    kust = arm_files.Kustomization(env_dir, earlier[0].text if earlier else None)
    if third is not None:
        second = arm_files.by_suffix("-third")
        release, model_version, image = third
        pin = arm_files.check_release_pin(model, env, release, image)
        kust.pin(second.image, pin)
        kust.add_component(THIRD_COMPONENT)
        kust.add_patch(second.patch)
        comment = (
            "# The third arm of the A/B test or bandit (tsops ab --third); its image pin is\n"
            f"# the images: entry {second.image} in kustomization.yaml.\n"
        )
        edits.append(
            Edit(
                env_dir / second.patch,
                arm_files.release_patch_text(model, second, release, model_version, comment),
            )
        )

    def weight(step: dict) -> int:
        return weights.get(step["name"], weights.get(step["serviceName"], 0))

    new_steps = [
        {"name": s["name"], "serviceName": s["serviceName"], "weight": weight(s)} for s in steps
    ]
    metadata: dict = {"name": graph["metadata"]["name"]}
    notes = {}
    weights_file = env_dir / "ab-weights.yaml"
    if weights_file.exists():  # a bandit's policy stays with its weights
        old = (load(weights_file).get("metadata") or {}).get("annotations") or {}
        notes = {k: v for k, v in old.items() if k in BANDIT_KEYS.values()}
    if policy is not None:
        notes = {
            BANDIT_KEYS["floor"]: f"{float(policy['floor']):g}",
            BANDIT_KEYS["max_step"]: f"{float(policy['max_step']):g}",
            BANDIT_KEYS["min_scored"]: str(int(policy["min_scored"])),
        }
        if policy.get("margin") is not None:
            notes[BANDIT_KEYS["margin"]] = f"{float(policy['margin']):g}"
    if notes:
        metadata["annotations"] = notes
        floor = float(notes[BANDIT_KEYS["floor"]])
        low = [f"{s['name']}={weight(s)}" for s in steps if weight(s) < int(floor * 100 + 1e-9)]
        if low:
            raise GitOpsError(
                f"{', '.join(low)} below the bandit's exploration floor of {floor * 100:g} % "
                f"(tsops.io/bandit-floor in {env}'s ab-weights.yaml): every arm keeps at least "
                "that share"
            )
    patch = {
        "apiVersion": graph["apiVersion"],
        "kind": "InferenceGraph",
        "metadata": metadata,
        "spec": {"nodes": {"root": {"routerType": "Splitter", "steps": new_steps}}},
    }
    head = (
        "# Multi-armed bandit of this environment: its policy (tsops.io/bandit-*: exploration\n"
        "# floor, largest step per update, scored forecasts every arm needs before a move) and\n"
        "# the Splitter weights `tsops bandit` moves within it; they sum to 100.\n"
        if notes
        else "# A/B weights of this environment (tsops ab); they sum to 100.\n"
    )
    kust.add_component(AB_COMPONENT)
    kust.add_patch("ab-weights.yaml")
    edits = [e for e in edits if e.path != kpath]
    return [*edits, Edit(weights_file, head + dump(patch)), Edit(kpath, kust.text())]


def rollback_edits(root: Path, model: str, env: str) -> list[Edit]:
    """Send all traffic back to the release the current one replaced.

    During a canary: canary 0, KServe's documented rollback (the last rolled-out revision,
    still running, takes everything at once). Once the canary has finished, or after that
    first step: pin the previous release again (image and version, no canary), a new
    revision that takes the traffic once ready. Only this second form survives a
    recreated InferenceService, which starts with no revision history."""
    env_dir = overlay(root, env)
    check_model(env_dir, model)
    _refuse_bluegreen(env_dir, env, model, "a rollback (switch back to the other colour instead)")
    now = serving(root, env)
    if now.canary:
        return canary_edits(root, model, env, 0)
    if not now.previous_release or not now.previous_version or not now.previous_image:
        raise GitOpsError(
            f"{env} records no release before {now.release} to roll back to; "
            f"to serve an earlier release, run `tsops promote` or `tsops release` with it"
        )
    pin = Pin.parse(now.previous_image)
    path = env_dir / "model-version.yaml"
    doc = load(path)
    annotations = doc["metadata"]["annotations"]
    for key in list(annotations):
        # the lineage annotations describe the release rolled back from
        if str(key).startswith("tsops.io/"):
            del annotations[key]
    annotations[RELEASE] = now.previous_release
    annotations[REGISTERED_MODEL] = model
    annotations[MODEL_VERSION] = DoubleQuotedScalarString(now.previous_version)
    annotations[ROLLED_BACK_FROM] = now.release
    kustomization = _kustomization_edit(env_dir, {SERVING_IMAGE: pin, BATCH_IMAGE: pin})
    edits = [Edit(path, dump(doc)), kustomization]
    if now.canary is not None:
        edits += _canary_field_edits(env_dir, model, None, kustomization=kustomization)
    return edits
