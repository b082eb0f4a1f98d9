#!/usr/bin/env bash
# make test-container: build the serving image with podman, run it the way production
# should (read-only root file system, all capabilities dropped, no privilege escalation,
# non-root user) and ask it for forecasts over HTTP. Both ways of giving it a model:
#   1. baked in at build time (MODEL_DIR build arg; image tagged <model>-v<version>);
#   2. no model in the image, one mounted at /mnt/models, as KServe's storage
#      initializer does for an InferenceService's storageUri.
# Then it runs the image the way the rendered manifests say (scripts/rendered_container.py):
# the local overlay with the A/B component switched on, for both InferenceServices
# (m3-monthly and m3-monthly-candidate) their securityContext, args, settings.env and
# volumes as podman flags; each must serve forecasts and write its forecast log to the
# persistent volume's folder.
#
# Works on a fresh Debian machine as root (CI): installs podman, runc and debootstrap
# with apt when missing, builds the local base image once (scripts/container-base.sh,
# cached in podman's store), then builds and tests the images. Exits non-zero on any
# failure; always removes the containers it started. Only 127.0.0.1 is used.
#
# Env:
#   PYTHON      interpreter with tsops and the dev dependencies (default .venv/bin/python,
#               made by `make install`): fits the test model, queries the server
#   BASE_IMAGE  replaces the Dockerfile's base stage (`podman build --from`; default
#               localhost/tsops-python:3.11-bookworm, built here). Set it empty to build
#               on the Dockerfile's own pin (python:3.11.14-slim-bookworm@sha256:...)
#               where a registry is reachable.
# Needs kubectl (renders the overlay) besides podman.
#
# The images are kept: their layers are the build cache that makes the next run fast.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
PYTHON=${PYTHON:-$repo/.venv/bin/python}
BASE_IMAGE=${BASE_IMAGE-localhost/tsops-python:3.11-bookworm}
MODEL_NAME=tiny
MODEL_VERSION=1
IMAGE=tsops-serving:$MODEL_NAME-v$MODEL_VERSION
IMAGE_NO_MODEL=tsops-serving:no-model
# Inside the build context (the Dockerfile can only COPY from there); removed on exit.
MODEL_DIR=build/container-model
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# podman on these machines needs runc + cgroupfs (crun fails): see scripts/containers.conf.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/scripts/containers.conf}

log() { printf '\n==> %s\n' "$*"; }
elapsed() { echo "$(($(date +%s) - $1)) s"; }
check() { # check DESCRIPTION EXPECTED ACTUAL
    if [[ $3 != "$2" ]]; then
        echo "FAIL: $1: expected '$2', got '$3'" >&2
        exit 1
    fi
    echo "ok: $1 ($3)"
}

containers=()
mounted_model=""
cleanup() {
    local rc=$? name
    for name in "${containers[@]}"; do
        if podman container exists "$name" 2>/dev/null; then
            if ((rc != 0)); then
                echo "--- log of $name (last 60 lines) ---" >&2
                podman logs --tail 60 "$name" >&2 || true
            fi
            podman rm -f -t 10 "$name" >/dev/null 2>&1 || true
        fi
    done
    rm -rf "${repo:?}/${MODEL_DIR:?}" ${mounted_model:+"$mounted_model"}
    rmdir "$repo/build" 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT

# --- tools --------------------------------------------------------------------------
# CI machines start without podman; Debian's packages are the way to get it (no
# registry for binaries). crun, podman's default runtime, fails here, hence runc.
if ! command -v podman >/dev/null || ! command -v runc >/dev/null ||
    ! command -v debootstrap >/dev/null; then
    log "installing podman, runc and debootstrap with apt"
    if ((EUID != 0)); then
        echo "error: podman/runc/debootstrap missing and not root; install them first" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q
    timeout 900 apt-get install -y -q podman runc debootstrap
fi
podman --version
command -v kubectl >/dev/null || { echo "error: kubectl not found (renders the manifests)" >&2; exit 1; }
[[ -x $PYTHON ]] || { echo "error: $PYTHON not found: run make install first" >&2; exit 1; }

# --- base image ---------------------------------------------------------------------
t0=$(date +%s)
if [[ $BASE_IMAGE == localhost/* ]]; then
    log "base image $BASE_IMAGE"
    BASE_TAG=$BASE_IMAGE timeout 900 bash scripts/container-base.sh
fi
base_time=$(elapsed "$t0")

# --- a small model ----------------------------------------------------------------------
# The model the serving integration tests use: six M3 monthly series, seasonal naive +
# Theta, fitted in seconds and saved as an MLflow pyfunc folder. release.json says which
# registered model and version it is, as `tsops export models:/tiny/1` would write it.
log "fitting the test model into $MODEL_DIR"
t0=$(date +%s)
rm -rf "$MODEL_DIR"
mkdir -p build
MPLBACKEND=Agg timeout 300 "$PYTHON" - "$MODEL_DIR" "$MODEL_NAME" "$MODEL_VERSION" <<'EOF'
import json, shutil, sys, tempfile
from pathlib import Path

sys.path.insert(0, ".")
from tests.serving.serving_fixtures import build_model_dir

out, name, version = sys.argv[1:4]
with tempfile.TemporaryDirectory() as tmp:
    shutil.copytree(build_model_dir(Path(tmp)), out)
release = {"name": name, "version": version, "source": "scripts/test-container.sh"}
(Path(out) / "release.json").write_text(json.dumps(release, indent=2) + "\n")
print("model folder:", sorted(p.name for p in Path(out).iterdir()))
EOF
model_time=$(elapsed "$t0")

# --- build ----------------------------------------------------------------------------
# --format docker keeps HEALTHCHECK (OCI images have no such field). The CA bundle is a
# build secret: pip in the builder stage needs it where PyPI is reached through a
# TLS-intercepting proxy; it never lands in a layer.
# --from replaces the first FROM of the Dockerfile, its base stage (the pinned official
# image), which every other stage builds on.
common_args=(
    --format docker
    --build-arg "VCS_REF=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
)
if [[ -n $BASE_IMAGE ]]; then
    common_args+=(--from "$BASE_IMAGE")
fi
if [[ -s $CA_BUNDLE ]]; then
    common_args+=(--secret "id=pip_ca,src=$CA_BUNDLE")
fi
baked_args=(
    --build-arg "MODEL_DIR=$MODEL_DIR"
    --build-arg "MODEL_NAME=$MODEL_NAME"
    --build-arg "MODEL_VERSION=$MODEL_VERSION"
)
log "podman build -t $IMAGE (first time: several minutes, pip installs the locked deps)"
t0=$(date +%s)
timeout 2400 podman build "${common_args[@]}" "${baked_args[@]}" -t "$IMAGE" .
build_time=$(elapsed "$t0")

log "podman build -t $IMAGE_NO_MODEL (same layers, empty /mnt/models)"
t0=$(date +%s)
timeout 1200 podman build "${common_args[@]}" -t "$IMAGE_NO_MODEL" . >/dev/null
build_no_model_time=$(elapsed "$t0")

# The build refuses a model folder whose release.json names another version than the
# build arg (the tag would lie). Only the model stage runs (the rest is cached): seconds.
log "a build naming the wrong model version must fail"
if refusal=$(timeout 600 podman build "${common_args[@]}" "${baked_args[@]}" \
    --build-arg MODEL_VERSION=999 --target model -t tsops-serving:should-not-exist . 2>&1); then
    podman rmi -f tsops-serving:should-not-exist >/dev/null 2>&1 || true
    echo "FAIL: a build with MODEL_VERSION=999 and release.json version 1 succeeded" >&2
    exit 1
fi
check "build with MODEL_VERSION=999 refused because release.json says 1" yes \
    "$(grep -q "release.json says '1'" <<<"$refusal" && echo yes || echo no)"

# --- run ------------------------------------------------------------------------------
# start NAME IMAGE [podman run options...] [-- server args...]; sets url.
# Production-like: read-only root (podman mounts a tmpfs on /tmp, where the image keeps
# its run-time writes), no capabilities, no privilege escalation, the image's non-root
# uid, published on 127.0.0.1 only. The automatic healthcheck timer needs systemd,
# absent here (podman logs an error about it and goes on): the image's HEALTHCHECK is
# run by hand below instead.
start() {
    local name=$1 image=$2 port options=() server_args=()
    shift 2
    while (($#)) && [[ $1 != -- ]]; do options+=("$1") && shift; done
    (($#)) && shift && server_args=("$@")
    port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    containers+=("$name") # for cleanup
    podman run -d --name "$name" \
        --read-only --cap-drop=ALL --security-opt no-new-privileges --user 10001:10001 \
        -p "127.0.0.1:$port:8080" "${options[@]}" "$image" "${server_args[@]}" >/dev/null
    url=http://127.0.0.1:$port
}

# wait_ready NAME: until the server answers /v2/health/ready (at most 180 s); fails at
# once, with the container's log (see cleanup), if the container stops.
wait_ready() {
    local name=$1 deadline=$((SECONDS + 180))
    until "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "$url/v2/health/ready" 2>/dev/null; do
        if [[ $(podman inspect --format '{{.State.Running}}' "$name") != true ]]; then
            echo "FAIL: container $name stopped before it was ready" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "FAIL: container $name not ready after 180 s" >&2
            exit 1
        fi
        sleep 1
    done
}

log "1. baked model: podman run $IMAGE"
t0=$(date +%s)
baked=tsops-test-baked-$$
start "$baked" "$IMAGE"
wait_ready "$baked"
timeout 300 "$PYTHON" scripts/container_smoke.py "$url" \
    --version "$MODEL_VERSION" --registered "$MODEL_NAME" --ready-timeout 30
run_time=$(elapsed "$t0")

log "container checks"
check "server runs as uid" 10001 "$(podman exec "$baked" id -u)"
check "effective capabilities of the server (pid 1)" 0000000000000000 \
    "$(podman exec "$baked" sh -c "awk '/^CapEff/ {print \$2}' /proc/1/status")"
check "no_new_privs of the server" 1 \
    "$(podman exec "$baked" sh -c "awk '/^NoNewPrivs/ {print \$2}' /proc/1/status")"
check "root file system read-only" true \
    "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$baked")"
check "writing to the home directory fails" refused \
    "$(podman exec "$baked" sh -c 'touch /home/tsops/x 2>/dev/null && echo written || echo refused')"
check "forecast log under /tmp" yes \
    "$(podman exec "$baked" sh -c 'test -d /tmp/forecast-logs && echo yes || echo no')"
check "no pip or compiler in the image" none \
    "$(podman exec "$baked" sh -c 'command -v pip pip3 gcc cc || python -m pip --version 2>/dev/null || echo none')"
check "HEALTHCHECK" 0 "$(timeout 60 podman healthcheck run "$baked" >/dev/null 2>&1; echo $?)"
check "image labels name the model version" "$MODEL_NAME v$MODEL_VERSION" \
    "$(podman image inspect --format '{{index .Labels "io.tsops.model.name"}} v{{index .Labels "io.tsops.model.version"}}' "$IMAGE")"
check "container still running" true "$(podman inspect --format '{{.State.Running}}' "$baked")"
podman rm -f -t 10 "$baked" >/dev/null 2>&1

log "2. no baked model, one mounted read-only at /mnt/models (KServe storageUri): $IMAGE_NO_MODEL"
# As an InferenceService would run it: the storage initializer's folder at /mnt/models and
# args naming the model. Another version number, so the answers prove which model is served.
mounted_model=$(mktemp -d /tmp/tsops-mounted-model.XXXXXX)
cp -r "$MODEL_DIR"/. "$mounted_model"/
printf '{"name": "%s", "version": "2"}\n' "$MODEL_NAME" >"$mounted_model/release.json"
chmod -R a+rX "$mounted_model"
mounted=tsops-test-mounted-$$
start "$mounted" "$IMAGE_NO_MODEL" -v "$mounted_model:/mnt/models:ro" -- --model_name "$MODEL_NAME"
wait_ready "$mounted"
timeout 300 "$PYTHON" scripts/container_smoke.py "$url" --name "$MODEL_NAME" \
    --version 2 --registered "$MODEL_NAME" --ready-timeout 30
podman rm -f -t 10 "$mounted" >/dev/null 2>&1

log "3. no baked model and nothing mounted: the server must stop with a clear message"
empty=tsops-test-empty-$$
start "$empty" "$IMAGE_NO_MODEL"
status=$(timeout 120 podman wait "$empty" || echo timeout)
check "exit status without a model" nonzero "$([[ $status =~ ^[1-9][0-9]*$ ]] && echo nonzero || echo "$status")"
# (the log in a variable: `podman logs | grep -q` would fail under pipefail when grep
# stops reading early)
empty_log=$(podman logs "$empty" 2>&1)
check "it says where it looked" yes "$(grep -q '/mnt/models' <<<"$empty_log" && echo yes || echo no)"
grep -v systemd <<<"$empty_log" | tail -1 || true

log "4. as the rendered manifests say: local overlay + A/B component, main and candidate"
t0=$(date +%s)
timeout 900 "$PYTHON" scripts/rendered_container.py --image "localhost/$IMAGE" \
    --version "$MODEL_VERSION" --registered "$MODEL_NAME"
rendered_time=$(elapsed "$t0")

size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "PASS: $IMAGE and $IMAGE_NO_MODEL serve forecasts read-only, as uid 10001, without capabilities"
echo "times: base image $base_time, test model $model_time, build $build_time" \
    "(+ $build_no_model_time without model), run to first answers $run_time," \
    "rendered main + candidate $rendered_time"
echo "image size: $((size / 1000000)) MB"
