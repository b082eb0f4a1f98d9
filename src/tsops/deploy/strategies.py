"""The deployment strategies git runs in an environment, read from its overlay: who gets
which share of the user requests and which release runs as a shadow.

This is git's view (what Argo CD applies); monitoring judges each strategy from it
(``tsops monitor verdicts``), the bandit moves the weights of one (``tsops bandit``,
through :func:`weights_edits`), and ``tsops sync-champion`` follows its baseline arm.

=============  =====================================================================
kind           arms (``Arm.name``), the baseline first
=============  =====================================================================
``single``     ``stable``: the release model-version.yaml names, 100 %
``canary``     ``stable`` (the release the canary replaced, 100 - N %), ``canary`` (N %)
``ab``         the Splitter's steps (``current``, ``candidate``), its weights
``bandit``     the Splitter's steps, its weights; the policy beside them in git
``bluegreen``  ``blue`` and ``green``: the live colour 100 %, the idle one 0 % (role
               shadow: it gets a copy of every request, so it stays warm and is scored)
``shadow``     ``champion`` (what the main InferenceService serves) and ``shadow`` (0 %,
               a copy of the main InferenceService's requests); listed next to the
               strategy that owns the traffic
=============  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsops.deploy.overlays import (
    AB_COMPONENT,
    MODEL_VERSION,
    RELEASE,
    GitOpsError,
    check_model,
    dump,
    load,
    overlay,
)
from tsops.deploy.served import serving

ROLE_LIVE = "live"
ROLE_SHADOW = "shadow"

AB_WEIGHTS = "ab-weights.yaml"
AB_CANDIDATE = "ab-candidate.yaml"
# The bandit's policy, kept as annotations of the Splitter patch (ab-weights.yaml), beside
# the weights it moves: one reviewable file per weight change.
BANDIT_FLOOR = "tsops.io/bandit-floor"
BANDIT_MAX_STEP = "tsops.io/bandit-max-step"
BANDIT_MIN_SCORED = "tsops.io/bandit-min-scored"
# optional: arms within this fraction of the best mean loss share the win (the bandit's
# BanditPolicy.margin; its default when absent)
BANDIT_MARGIN = "tsops.io/bandit-margin"
BANDIT_KEYS = {
    "floor": BANDIT_FLOOR,
    "max_step": BANDIT_MAX_STEP,
    "min_scored": BANDIT_MIN_SCORED,
    "margin": BANDIT_MARGIN,
}


@dataclass(frozen=True)
class Arm:
    name: str  # canary: stable/canary; ab, bandit: step names; bluegreen: blue/green;
    # shadow: champion/shadow; single: stable
    service: str  # InferenceService name
    release: str  # <model>/vX.Y.Z
    model_version: str  # registry version
    share: int  # percent of user requests (0 for a shadow and for the idle colour)
    role: str  # ROLE_LIVE or ROLE_SHADOW: how its forecasts are marked in the log


@dataclass(frozen=True)
class Strategy:
    kind: str  # "single" | "canary" | "ab" | "bandit" | "bluegreen" | "shadow"
    model: str
    env: str
    arms: tuple[Arm, ...]
    baseline: str  # the arm the others are judged against
    policy: dict = field(default_factory=dict)  # bandit: floor, max_step, min_scored

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise GitOpsError(
            f"{self.kind} in {self.env} has no arm {name!r}; arms: "
            + ", ".join(a.name for a in self.arms)
        )

    @property
    def weights(self) -> dict[str, int]:
        """Arm name -> share of the user requests (the arms with role live)."""
        return {a.name: a.share for a in self.arms if a.role == ROLE_LIVE}


def _components(env_dir: Path) -> list[str]:
    return [str(c) for c in load(env_dir / "kustomization.yaml").get("components") or []]


def _patch_annotations(path: Path) -> dict[str, Any]:
    doc = load(path)
    return dict((doc.get("metadata") or {}).get("annotations") or {})


def _release_of(path: Path, what: str) -> tuple[str, str]:
    """(release, registry version) a strategic merge patch's annotations name."""
    notes = _patch_annotations(path)
    if not notes.get(RELEASE) or notes.get(MODEL_VERSION) is None:
        raise GitOpsError(
            f"{path} names no release ({RELEASE}, {MODEL_VERSION}) for the {what}; "
            "write it with the tsops command that starts the strategy"
        )
    return str(notes[RELEASE]), str(notes[MODEL_VERSION])


def _splitter(env_dir: Path) -> tuple[Any, list[Any]]:
    """The overlay's Splitter patch (ab-weights.yaml) and its steps."""
    path = env_dir / AB_WEIGHTS
    doc = load(path)
    try:
        steps = doc["spec"]["nodes"]["root"]["steps"]
    except (KeyError, TypeError) as e:
        raise GitOpsError(f"{path} has no spec.nodes.root.steps: {e}") from None
    return doc, list(steps)


def _policy(doc: Any, path: Path) -> dict:
    notes = (doc.get("metadata") or {}).get("annotations") or {}
    if not any(key in notes for key in BANDIT_KEYS.values()):
        return {}
    try:
        policy = {
            "floor": float(notes[BANDIT_FLOOR]),
            "max_step": float(notes[BANDIT_MAX_STEP]),
            "min_scored": int(notes[BANDIT_MIN_SCORED]),
        }
        if BANDIT_MARGIN in notes:
            policy["margin"] = float(notes[BANDIT_MARGIN])
        return policy
    except (KeyError, ValueError) as e:
        raise GitOpsError(
            f"{path}: the bandit policy needs the annotations {', '.join(BANDIT_KEYS.values())} "
            f"(floor and max_step as fractions, min_scored a whole number): {e}"
        ) from None


def _split_strategy(root: Path, env: str, env_dir: Path) -> Strategy:
    """The A/B test or bandit that the overlay's Splitter runs."""
    now = serving(root, env)
    doc, steps = _splitter(env_dir)
    policy = _policy(doc, env_dir / AB_WEIGHTS)
    releases = {now.model: (now.release, now.version)}
    if (env_dir / AB_CANDIDATE).exists():
        releases[f"{now.model}-candidate"] = _release_of(env_dir / AB_CANDIDATE, "A/B candidate")
    from tsops.deploy import arms as arm_files  # the bandit's arms beyond the candidate

    releases.update(arm_files.arm_releases(env_dir, now.model))
    arms = []
    for step in steps:
        service = str(step["serviceName"])
        if service not in releases:
            raise GitOpsError(
                f"{env_dir / AB_WEIGHTS}: step {step.get('name')!r} routes to {service!r}, "
                f"which {env} pins no release for; pinned: {', '.join(sorted(releases))}"
            )
        release, version = releases[service]
        arms.append(
            Arm(str(step["name"]), service, release, version, int(step["weight"]), ROLE_LIVE)
        )
    return Strategy("bandit" if policy else "ab", now.model, env, tuple(arms), arms[0].name, policy)


def traffic_strategy(root: Path, env: str) -> Strategy:
    """The one strategy that owns the user traffic of ``env`` (single when none does)."""
    env_dir = overlay(root, env)
    components = _components(env_dir)
    now = serving(root, env)
    from tsops.deploy import bluegreen

    if bluegreen.COMPONENT in components:
        return bluegreen.strategy(root, env)
    if AB_COMPONENT in components and (env_dir / AB_WEIGHTS).exists():
        return _split_strategy(root, env, env_dir)
    service = now.model
    if now.canary is not None and now.previous_version and now.canary < 100:
        arms = (
            Arm(
                "stable",
                service,
                now.stable_release,
                now.stable_version,
                100 - now.canary,
                ROLE_LIVE,
            ),
            Arm("canary", service, now.release, now.version, now.canary, ROLE_LIVE),
        )
        return Strategy("canary", now.model, env, arms, "stable")
    arm = Arm("stable", service, now.stable_release, now.stable_version, 100, ROLE_LIVE)
    return Strategy("single", now.model, env, (arm,), "stable")


def live_strategies(root: Path, env: str) -> list[Strategy]:
    """Every strategy git runs in ``env``: the one that owns the traffic (``single`` when
    nothing else does), then a shadow when one runs. GitOpsError when an overlay file
    cannot be read."""
    from tsops.deploy import shadow

    strategies = [traffic_strategy(root, env)]
    found = shadow.strategy(root, env)
    if found is not None:
        strategies.append(found)
    return strategies


def weights_edits(root: Path, model: str, env: str, weights: dict[str, int]) -> list:
    """The Splitter weights of the A/B test or bandit running in ``env``: arm name (or its
    InferenceService) -> percent, every arm named, whole numbers summing to 100, a
    bandit's arms at least at its floor. Nothing is written (callers use
    :func:`tsops.deploy.gitops.apply` or ``commit_on_branch``)."""
    from tsops.deploy.gitops import Edit

    env_dir = overlay(root, env)
    check_model(env_dir, model)
    if AB_COMPONENT not in _components(env_dir) or not (env_dir / AB_WEIGHTS).exists():
        raise GitOpsError(
            f"{env} runs no A/B test or bandit (no {AB_WEIGHTS} with components/ab): there "
            f"are no weights to set; start one with `tsops ab {model} --env {env} --candidate "
            "<model>/vX.Y.Z --weights current=90,candidate=10`"
        )
    strategy = _split_strategy(root, env, env_dir)
    by_key = {a.name: a for a in strategy.arms} | {a.service: a for a in strategy.arms}
    unknown = sorted(set(weights) - set(by_key))
    if unknown:
        raise GitOpsError(
            f"unknown arm {', '.join(unknown)} of the {strategy.kind} in {env}; arms: "
            + ", ".join(f"{a.name} ({a.service})" for a in strategy.arms)
        )
    new: dict[str, int] = {}
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise GitOpsError(f"weight {key}={value!r} is not a whole percent in 0..100")
        name = by_key[key].name
        if name in new:
            raise GitOpsError(f"arm {name!r} is named twice (by step and by service name)")
        new[name] = value
    missing = [a.name for a in strategy.arms if a.name not in new]
    if missing:
        raise GitOpsError(
            f"weights name no share for {', '.join(missing)}; give every arm of the "
            f"{strategy.kind} a weight (0 stops sending it requests)"
        )
    total = sum(new.values())
    if total != 100:
        raise GitOpsError(
            f"weights {', '.join(f'{k}={v}' for k, v in new.items())} sum to {total}, not 100"
        )
    if strategy.policy:
        floor = strategy.policy["floor"] * 100
        low = [f"{k}={v}" for k, v in new.items() if v + 1e-9 < int(floor + 1e-9)]
        if low:
            raise GitOpsError(
                f"{', '.join(low)} below the bandit's exploration floor of {floor:g} % "
                f"({BANDIT_FLOOR} in {AB_WEIGHTS}): every arm keeps at least that share"
            )
    path = env_dir / AB_WEIGHTS
    doc, steps = _splitter(env_dir)
    for step in steps:
        step["weight"] = new[str(step["name"])]
    return [Edit(path, dump(doc))]
