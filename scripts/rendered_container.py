"""Run the serving image the way the rendered manifests say, and ask it for forecasts.

Part of ``make test-container`` (scripts/test-container.sh calls it after the build):

    python scripts/rendered_container.py --image localhost/tsops-serving:tiny-v1 \\
        --version 1 --registered tiny

1. Render. ``tsops.deploy.manifests.render.render_variant`` (the validator's own): a copy of
   manifests/ whose overlays/<overlay>/kustomization.yaml gets what `tsops ab` writes
   there, ``components: [../../components/ab]`` and the images: entry
   ``tsops-serving-candidate``; the ``tsops-serving`` entry is pinned to --image as well
   (the image just built: no registry here).
2. Translate, for each InferenceService of --services (the main one and the A/B
   candidate), its kserve-container into ``podman run`` flags:
   - securityContext (the predictor's pod-level one, overridden by the container's):
     runAsUser/runAsGroup -> --user, runAsNonRoot -> refused if the uid is 0,
     readOnlyRootFilesystem -> --read-only --read-only-tmpfs=false (podman would
     otherwise add a writable /tmp of its own: only the rendered mounts are writable),
     allowPrivilegeEscalation: false -> --security-opt no-new-privileges,
     capabilities -> --cap-drop / --cap-add, seccompProfile RuntimeDefault -> podman's
     default profile;
   - envFrom (ConfigMaps of the render, settings.env) and env -> --env, in Kubernetes'
     order (env wins over envFrom, both over the image's ENV);
   - volumeMounts -> an emptyDir is a --tmpfs (its sizeLimit), a persistentVolumeClaim a
     host folder per claim shared by every container started here (a ReadWriteMany
     volume: both InferenceServices write the same forecast log), a configMap volume its
     files, read-only;
   - resources.limits -> --memory / --cpus; command / args -> entrypoint / arguments;
     the container port -> 127.0.0.1:<free port>.
3. Run and check: wait for the readinessProbe's path, ask for V1 and V2 forecasts
   (scripts/container_smoke.py, the served name from --model_name), then check in the
   running container the uid/gid, no capabilities, no_new_privs, a read-only root file
   system (writing to $HOME fails), each mount writable, and that a forecast-log part
   file appeared in the host folder behind TSOPS_FORECAST_LOG_DIR.

Not emulated: Knative's queue-proxy and KServe's storage initializer (the model is baked
into the image), probes after start, and the storage's permissions: the host folder of a
claim is given to the container's uid/gid, which on a cluster the storage class (or an
fsGroup) must provide.

Needs podman (scripts/containers.conf on these machines), kubectl, and tsops installed
(the project's .venv). Exit
status 0 when every check passes; the containers it started are removed in any case.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tsops.deploy.manifests.render import render_variant
from tsops.deploy.manifests.report import ManifestError
from tsops.deploy.overlays import AB_COMPONENT
from tsops.deploy.pins import CANDIDATE_IMAGE, SERVING_IMAGE, Pin

LOG_DIR_ENV = "TSOPS_FORECAST_LOG_DIR"


class Failure(Exception):
    """A check failed, or the render cannot be run as it says."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)
    print(f"ok: {message}")


# --------------------------------------------------------------------------- render


def render_ab(repo: Path, overlay: str, image: str, workdir: Path) -> list[dict]:
    """The overlay with the A/B component on and both images pinned to ``image``: what
    `tsops ab` writes, rendered by the validator's own variant render."""
    name, tag, digest = Pin.split(image)
    if not tag or digest:
        raise Failure(f"--image {image!r}: give name:tag (the image built locally)")
    if not (repo / "manifests" / "overlays" / overlay / "kustomization.yaml").is_file():
        raise Failure(f"no overlay {overlay!r} in {repo}/manifests/overlays")

    def switch_on(kustomization) -> None:
        components = kustomization.setdefault("components", [])
        if AB_COMPONENT not in components:
            components.append(AB_COMPONENT)
        pinned = (SERVING_IMAGE, CANDIDATE_IMAGE)
        images = [i for i in kustomization.get("images") or [] if i.get("name") not in pinned]
        images += [{"name": n, "newName": name, "newTag": tag} for n in pinned]
        kustomization["images"] = images

    try:
        return render_variant(repo, f"manifests/overlays/{overlay}", switch_on, workdir)
    except ManifestError as exc:
        raise Failure(f"kubectl kustomize {overlay} with the A/B component: {exc}") from exc


# --------------------------------------------------------------------------- translate


@dataclass
class Plan:
    """How to run one InferenceService's container with podman."""

    service: str
    image: str
    flags: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: tuple[int, int] | None = None
    port: int = 8080
    ready_path: str = "/v2/health/ready"
    model_name: str | None = None
    writable: list[str] = field(default_factory=list)  # mount paths
    host_mounts: dict[str, Path] = field(default_factory=dict)  # mount path -> host folder
    expect_caps_none: bool = False
    expect_no_new_privs: bool = False
    read_only_root: bool = False


def find(docs: list[dict], kind: str, name: str, namespace: str | None = None) -> dict | None:
    for doc in docs:
        meta = doc.get("metadata") or {}
        same_name = doc.get("kind") == kind and meta.get("name") == name
        if same_name and (namespace is None or meta.get("namespace") == namespace):
            return doc
    return None


def quantity_bytes(value: str | int) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}
    units |= {"G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMGT])?", str(value))
    if not match:
        raise Failure(f"cannot read the quantity {value!r}")
    return int(float(match[1]) * units.get(match[2] or "", 1))


def quantity_cpus(value: str | int) -> str:
    text = str(value)
    return str(int(text[:-1]) / 1000) if text.endswith("m") else text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def translate(docs: list[dict], service: str, volumes_root: Path) -> Plan:
    isvc = find(docs, "InferenceService", service)
    if isvc is None:
        names = [d["metadata"]["name"] for d in docs if d.get("kind") == "InferenceService"]
        raise Failure(f"no InferenceService {service!r} in the render (there are {names})")
    namespace = isvc["metadata"].get("namespace")
    predictor = isvc["spec"]["predictor"]
    containers = predictor.get("containers") or []
    container = next((c for c in containers if c.get("name") == "kserve-container"), None)
    if container is None:
        raise Failure(f"{service}: no kserve-container in spec.predictor.containers")
    plan = Plan(service=service, image=container["image"])
    where = f"{service} ({namespace})"

    # securityContext: pod level, overridden field by field by the container's
    context = {
        **(predictor.get("securityContext") or {}),
        **(container.get("securityContext") or {}),
    }
    uid, gid = context.get("runAsUser"), context.get("runAsGroup")
    if context.get("runAsNonRoot") and uid == 0:
        raise Failure(f"{where}: runAsNonRoot with runAsUser 0 would not start")
    if uid is not None:
        plan.user = (int(uid), int(gid if gid is not None else uid))
        plan.flags += ["--user", f"{plan.user[0]}:{plan.user[1]}"]
    if context.get("readOnlyRootFilesystem"):
        plan.read_only_root = True
        plan.flags += ["--read-only", "--read-only-tmpfs=false"]
    if context.get("privileged"):
        raise Failure(f"{where}: a privileged container; not run here")
    if context.get("allowPrivilegeEscalation") is False:
        plan.expect_no_new_privs = True
        plan.flags += ["--security-opt", "no-new-privileges"]
    capabilities = context.get("capabilities") or {}
    for cap in capabilities.get("drop") or []:
        plan.flags.append(f"--cap-drop={cap}")
    for cap in capabilities.get("add") or []:
        plan.flags.append(f"--cap-add={cap}")
    plan.expect_caps_none = "ALL" in (capabilities.get("drop") or []) and not capabilities.get(
        "add"
    )
    seccomp = (context.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        plan.flags += ["--security-opt", "seccomp=unconfined"]
    elif seccomp not in (None, "RuntimeDefault"):
        raise Failure(f"{where}: seccompProfile {seccomp} is not emulated here")

    # environment: envFrom first, then env (which wins), as the kubelet does
    for source in container.get("envFrom") or []:
        if "configMapRef" not in source:
            raise Failure(f"{where}: envFrom {source} is not emulated here (ConfigMaps only)")
        ref = source["configMapRef"]["name"]
        config_map = find(docs, "ConfigMap", ref, namespace)
        if config_map is None:
            if source["configMapRef"].get("optional"):
                continue
            raise Failure(
                f"{where}: envFrom names ConfigMap {ref!r}, which the render does not "
                f"have in namespace {namespace}: the pod would not start"
            )
        prefix = source.get("prefix", "")
        for key, value in (config_map.get("data") or {}).items():
            plan.env[prefix + key] = str(value)
    for item in container.get("env") or []:
        if "value" in item:
            plan.env[item["name"]] = str(item["value"])
        elif "configMapKeyRef" in (item.get("valueFrom") or {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            config_map = find(docs, "ConfigMap", ref["name"], namespace) or {}
            if ref["key"] not in (config_map.get("data") or {}):
                raise Failure(f"{where}: env {item['name']}: no {ref['name']}/{ref['key']}")
            plan.env[item["name"]] = str(config_map["data"][ref["key"]])
        else:
            raise Failure(f"{where}: env {item['name']} is not emulated here")
    for key, value in plan.env.items():
        plan.flags += ["--env", f"{key}={value}"]

    # volumes
    volumes = {v["name"]: v for v in predictor.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        path, read_only = mount["mountPath"], bool(mount.get("readOnly"))
        volume = volumes.get(mount["name"])
        if volume is None:
            raise Failure(f"{where}: volumeMount {mount['name']!r} names no volume")
        if mount.get("subPath"):
            raise Failure(f"{where}: subPath mounts are not emulated here")
        if "emptyDir" in volume:
            size = (volume["emptyDir"] or {}).get("sizeLimit")
            options = "rw,mode=1777" + (f",size={quantity_bytes(size)}" if size else "")
            plan.flags += ["--tmpfs", f"{path}:{options}"]
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if find(docs, "PersistentVolumeClaim", claim, namespace) is None:
                raise Failure(
                    f"{where}: volume {mount['name']} claims {claim!r}, not in the render"
                )
            host = volumes_root / "claims" / claim
            if not host.exists():
                host.mkdir(parents=True)
                owner = plan.user or (0, 0)
                try:
                    os.chown(host, *owner)
                    host.chmod(0o770)
                except PermissionError:  # not root: let any uid write
                    host.chmod(0o777)
            plan.host_mounts[path] = host
            read_only = read_only or bool(volume["persistentVolumeClaim"].get("readOnly"))
            plan.flags += ["--volume", f"{host}:{path}:{'ro' if read_only else 'rw'}"]
        elif "configMap" in volume:
            ref = volume["configMap"]["name"]
            config_map = find(docs, "ConfigMap", ref, namespace)
            if config_map is None:
                raise Failure(
                    f"{where}: volume {mount['name']} names ConfigMap {ref!r}, not rendered"
                )
            host = volumes_root / "configmaps" / service / mount["name"]
            host.mkdir(parents=True)
            for key, value in (config_map.get("data") or {}).items():
                (host / key).write_text(str(value))
            host.chmod(0o755)
            plan.flags += ["--volume", f"{host}:{path}:ro"]
            read_only = True
        else:
            kind = next(iter(k for k in volume if k != "name"), "?")
            raise Failure(f"{where}: {kind} volumes are not emulated here")
        if not read_only:
            plan.writable.append(path)

    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        plan.flags += ["--memory", str(quantity_bytes(limits["memory"]))]
    if "cpu" in limits:
        plan.flags += ["--cpus", quantity_cpus(limits["cpu"])]

    plan.entrypoint = container.get("command")
    plan.args = [str(a) for a in container.get("args") or []]
    for arg in plan.args:
        if arg.startswith("--model_name="):
            plan.model_name = arg.split("=", 1)[1]
    ports = container.get("ports") or []
    if ports:
        plan.port = int(ports[0]["containerPort"])
    probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
    plan.ready_path = probe.get("path", plan.ready_path)
    return plan


# --------------------------------------------------------------------------- run


def podman(*args: str, check_rc: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check_rc and result.returncode != 0:
        raise Failure(f"podman {' '.join(args[:2])}: {result.stderr.strip()[-1500:]}")
    return result.stdout.strip()


def wait_ready(name: str, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if podman("inspect", "--format", "{{.State.Running}}", name) != "true":
            raise Failure(f"container {name} stopped before {url} answered")
        time.sleep(1)
    raise Failure(f"container {name}: {url} not ready after {timeout:.0f} s")


def part_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("part-*") if p.is_file()} if folder.exists() else set()


def log_folder(plan: Plan) -> Path:
    """The host folder behind $TSOPS_FORECAST_LOG_DIR/<served model name>."""
    log_dir = plan.env.get(LOG_DIR_ENV)
    if not log_dir:
        raise Failure(f"{plan.service}: the rendered environment sets no {LOG_DIR_ENV}")
    for mount_path, host in sorted(plan.host_mounts.items(), key=lambda kv: -len(kv[0])):
        if log_dir == mount_path or log_dir.startswith(mount_path.rstrip("/") + "/"):
            return host / os.path.relpath(log_dir, mount_path) / (plan.model_name or "model")
    raise Failure(
        f"{plan.service}: {LOG_DIR_ENV}={log_dir} is on no persistent volume: the forecast "
        f"log would not reach the monitoring job (mounts: {sorted(plan.host_mounts)})"
    )


def in_container(name: str, script: str) -> str:
    return podman("exec", name, "sh", "-c", script, check_rc=False)


def run_and_check(plan: Plan, container: str, smoke: list[str]) -> None:
    print(f"\n--- {plan.service}: podman run as the render says")
    port = free_port()
    command = ["run", "-d", "--name", container, *plan.flags, "-p", f"127.0.0.1:{port}:{plan.port}"]
    if plan.entrypoint:
        command += ["--entrypoint", json.dumps(plan.entrypoint)]
    command += [plan.image, *plan.args]
    print("podman " + " ".join(command))
    logs = log_folder(plan)
    before = part_files(logs)
    podman(*command)
    url = f"http://127.0.0.1:{port}"
    wait_ready(container, url + plan.ready_path)
    smoke_args = [*smoke, "--ready-timeout", "30"]
    if plan.model_name:
        smoke_args += ["--name", plan.model_name]
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("container_smoke.py")), url, *smoke_args],
        timeout=300,
        check=False,
    )
    check(result.returncode == 0, f"{plan.service}: forecasts over HTTP on {url}")

    if plan.user:
        got = in_container(container, "echo $(id -u):$(id -g)")
        check(got == f"{plan.user[0]}:{plan.user[1]}", f"{plan.service}: runs as {got}")
    if plan.expect_caps_none:
        caps = in_container(container, "awk '/^CapEff/ {print $2}' /proc/1/status")
        check(caps == "0000000000000000", f"{plan.service}: no effective capabilities ({caps})")
    if plan.expect_no_new_privs:
        nnp = in_container(container, "awk '/^NoNewPrivs/ {print $2}' /proc/1/status")
        check(nnp == "1", f"{plan.service}: no_new_privs is {nnp}")
    if plan.read_only_root:
        refused = in_container(container, 'touch "$HOME/.probe" 2>&1 || true')
        check(
            "Read-only file system" in refused,
            f"{plan.service}: the root file system refuses writes ($HOME: {refused!r})",
        )
    for path in plan.writable:
        wrote = in_container(container, f"touch {path}/.probe && rm {path}/.probe && echo yes")
        check(wrote == "yes", f"{plan.service}: {path} is writable (its volume)")

    deadline = time.monotonic() + 20  # the log writer flushes every second
    new: set[Path] = set()
    while time.monotonic() < deadline and not new:
        time.sleep(0.5)
        new = part_files(logs) - before
    check(
        bool(new) and all(p.stat().st_size > 0 for p in new),
        f"{plan.service}: forecast log written to the claim's folder "
        f"({', '.join(str(p.relative_to(logs.parent.parent)) for p in sorted(new)) or 'none'})",
    )
    check(
        podman("inspect", "--format", "{{.State.Running}}", container) == "true",
        f"{plan.service}: still running",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="image to run, name:tag (built locally)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--overlay", default="local")
    parser.add_argument("--services", default="m3-monthly,m3-monthly-candidate")
    parser.add_argument("--version", help="model_version the answers must carry")
    parser.add_argument("--registered", help="registered_model the answers must carry")
    parser.add_argument(
        "--dry-run", action="store_true", help="render and print the podman flags; run nothing"
    )
    args = parser.parse_args()
    smoke = [
        f"--{k}={v}" for k, v in (("version", args.version), ("registered", args.registered)) if v
    ]

    started: list[str] = []
    failed = True
    with tempfile.TemporaryDirectory(prefix="tsops-rendered-") as tmp:
        try:
            docs = render_ab(args.repo, args.overlay, args.image, Path(tmp))
            print(f"rendered overlays/{args.overlay} with {AB_COMPONENT}: {len(docs)} objects")
            plans = [translate(docs, s, Path(tmp) / "volumes") for s in args.services.split(",")]
            for plan in plans:
                check(plan.image == args.image, f"{plan.service}: the render runs {plan.image}")
            if args.dry_run:
                for plan in plans:
                    print(
                        f"{plan.service}: podman run {' '.join(plan.flags)} {plan.image}",
                        " ".join(plan.args),
                        f"(log: {log_folder(plan)})",
                    )
                return
            for plan in plans:
                name = f"tsops-rendered-{plan.service}-{os.getpid()}"
                started.append(name)
                run_and_check(plan, name, smoke)
            failed = False
        except (Failure, subprocess.TimeoutExpired) as e:
            print(f"FAIL: {e}", file=sys.stderr)
        finally:
            for name in started:
                if failed:
                    print(f"--- log of {name} (last 40 lines) ---", file=sys.stderr)
                    subprocess.run(["podman", "logs", "--tail", "40", name], check=False)
                podman("rm", "-f", "-t", "10", name, check_rc=False)
    if failed:
        sys.exit(1)
    print(f"\nPASS: {', '.join(args.services.split(','))} run with their rendered settings")


if __name__ == "__main__":
    main()
