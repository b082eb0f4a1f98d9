#!/usr/bin/env bash
# A local cluster with what the manifests need, in one command: kind, cert-manager,
# Knative Serving with Kourier, KServe in Knative (Serverless) mode, Argo CD, an MLflow
# server and a local image registry; the serving image built and pushed to that registry;
# Argo CD pointed at the repository (the `tsops-local` Application, manifests/overlays/local).
#
#   scripts/cluster-up.sh [REPO_URL] [--revision REV] [--also TAG]... [--no-build]
#
# REPO_URL: the repository Argo CD deploys from (default: this checkout's origin, an SSH
# address turned into https; Argo CD must be able to clone it without credentials, or add
# a repository secret in namespace argocd). REV: the branch, tag or commit it tracks
# (default: main; it must be pushed). --also TAG: build and push one more release tag of
# the same model (e.g. m3-monthly-v1.1.0, for a canary); --no-build skips the image.
#
# Needs docker, kind (KIND_VERSION below; built with Go when the one on PATH differs),
# kubectl and the project's virtualenv with the pipeline run for the model
# (`make pipeline`): the model is registered in the cluster's MLflow, exported and baked
# into the image, as release.yml does with the shared registry. Not run by `make test`
# (no cluster there); .github/workflows/e2e.yml runs it on a GitHub runner.
# scripts/cluster-down.sh removes everything it made.
set -euo pipefail

# ---------------------------------------------------------------- pinned versions
# KServe v0.20.0's own install scripts (hack/setup/global-vars.env) test it with
# cert-manager v1.17.0 and Knative Serving 1.21.1; the node image is kind v0.30.0's default.
KIND_VERSION=v0.30.0
KIND_NODE_IMAGE=kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a
CERT_MANAGER_VERSION=v1.17.0
KNATIVE_VERSION=knative-v1.21.1 # serving and net-kourier release together
KSERVE_VERSION=v0.20.0
ARGOCD_VERSION=v3.5.1
MLFLOW_IMAGE=ghcr.io/mlflow/mlflow:v3.17.2 # the mlflow of requirements.lock
REGISTRY_IMAGE=registry:2.8.3

CLUSTER=${TSOPS_CLUSTER:-tsops}
REGISTRY=kind-registry # the registry container's name, on docker's kind network
REGISTRY_PORT=5001 # where the host pushes to: localhost:5001
MODEL=m3-monthly
OVERLAY=manifests/overlays/local

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { echo "cluster-up: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

repo="" revision=main build=true also=()
while [ $# -gt 0 ]; do
    case $1 in
        --revision) revision=$2; shift 2 ;;
        --also) also+=("$2"); shift 2 ;;
        --no-build) build=false; shift ;;
        -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) repo=$1; shift ;;
    esac
done
if [ -z "$repo" ]; then
    repo=$(git remote get-url origin) || die "no REPO_URL given and no git remote origin"
fi
case $repo in
    git@*:*) # git@host:owner/name.git -> https://host/owner/name.git
        rest=${repo#git@}
        repo="https://${rest%%:*}/${rest#*:}"
        ;;
esac

# kind at the pinned version: built into build/bin when the one on PATH differs and Go is
# there (GitHub's runners have Go).
if ! kind version 2>/dev/null | grep -q "kind $KIND_VERSION "; then
    if command -v go >/dev/null; then
        log "kind $KIND_VERSION into build/bin"
        GOBIN="$root/build/bin" go install "sigs.k8s.io/kind@$KIND_VERSION"
        export PATH="$root/build/bin:$PATH"
    elif command -v kind >/dev/null; then
        log "warning: $(kind version) is not kind $KIND_VERSION (go install sigs.k8s.io/kind@$KIND_VERSION)"
    fi
fi
for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
venv=$root/.venv/bin
[ -x "$venv/tsops" ] || die "no $venv/tsops: run \`make install\` first"
if $build; then
    [ -d "artifacts/$MODEL/model" ] || die "no artifacts/$MODEL/model: run \`make pipeline\` first"
fi

# The release the local overlay pins: images: entry tsops-serving (newName, newTag).
pin() { # FIELD -> the value of the tsops-serving images: entry
    "$venv/python" - "$OVERLAY/kustomization.yaml" "$1" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
print(next(i for i in doc["images"] if i["name"] == "tsops-serving")[sys.argv[2]])
PY
}
image_name=$(pin newName) # e.g. ghcr.io/tsops/tsops-serving
image_tag=$(pin newTag) # e.g. m3-monthly-v1.0.0
image_host=${image_name%%/*}
image_path=${image_name#*/}

# ---------------------------------------------------------------- registry and kind
if [ "$(docker inspect -f '{{.State.Running}}' "$REGISTRY" 2>/dev/null || true)" != true ]; then
    log "local registry $REGISTRY on localhost:$REGISTRY_PORT"
    docker run -d --restart=always -p "127.0.0.1:$REGISTRY_PORT:5000" --network bridge \
        --name "$REGISTRY" "$REGISTRY_IMAGE" >/dev/null
fi
if ! kind get clusters | grep -qx "$CLUSTER"; then
    log "kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
    kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY")" = null ]; then
    docker network connect kind "$REGISTRY"
fi
# containerd on each node: localhost:5001 is the registry container, and the overlay's
# registry host (ghcr.io) is mirrored by it first, so the overlay's image names pull the
# images pushed here (kind's local-registry recipe, containerd's hosts.toml).
for node in $(kind get nodes --name "$CLUSTER"); do
    docker exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:$REGISTRY_PORT" \
        "/etc/containerd/certs.d/$image_host"
    printf '[host."http://%s:5000"]\n' "$REGISTRY" |
        docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/localhost:$REGISTRY_PORT/hosts.toml"
    printf 'server = "https://%s"\n\n[host."http://%s:5000"]\n  capabilities = ["pull", "resolve"]\n' \
        "$image_host" "$REGISTRY" |
        docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/$image_host/hosts.toml"
done
kubectl apply -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:$REGISTRY_PORT"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
EOF

# ---------------------------------------------------------------- platform
log "cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl wait --for=condition=Available deployment --all -n cert-manager --timeout=300s

log "Knative Serving and Kourier $KNATIVE_VERSION"
kubectl apply -f "https://github.com/knative/serving/releases/download/$KNATIVE_VERSION/serving-crds.yaml"
kubectl wait --for=condition=Established crd/services.serving.knative.dev --timeout=120s
kubectl apply -f "https://github.com/knative/serving/releases/download/$KNATIVE_VERSION/serving-core.yaml"
kubectl apply -f "https://github.com/knative/net-kourier/releases/download/$KNATIVE_VERSION/kourier.yaml"
# (Knative's webhook validates its ConfigMaps: patch them once it is up.)
kubectl wait --for=condition=Available deployment --all -n knative-serving --timeout=300s
kubectl wait --for=condition=Available deployment --all -n kourier-system --timeout=300s
kubectl patch configmap/config-network -n knative-serving --type merge \
    -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
kubectl patch configmap/config-domain -n knative-serving --type merge -p '{"data":{"example.com":""}}'
# Knative resolves image tags to digests by asking the registry itself, which it cannot
# reach for the mirrored host: the local overlay pins tags only (kind has no digests).
kubectl patch configmap/config-deployment -n knative-serving --type merge \
    -p "{\"data\":{\"registries-skipping-tag-resolving\":\"kind.local,ko.local,dev.local,localhost:$REGISTRY_PORT,$image_host\"}}"

log "KServe $KSERVE_VERSION (Knative mode)"
kubectl apply --server-side --force-conflicts -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
kubectl wait --for=condition=Available deployment/kserve-controller-manager -n kserve --timeout=300s
kubectl apply --server-side --force-conflicts -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"
# Kourier, not Istio, routes: no Istio VirtualService for the top-level route (as KServe's
# own Kourier e2e sets ingress.disableIstioVirtualHost).
kubectl get configmap/inferenceservice-config -n kserve -o json |
    "$venv/python" -c '
import json, sys
cm = json.load(sys.stdin)
ingress = json.loads(cm["data"]["ingress"])
ingress["disableIstioVirtualHost"] = True
cm["data"]["ingress"] = json.dumps(ingress, indent=2)
json.dump(cm, sys.stdout)' |
    kubectl replace -f -

log "Argo CD $ARGOCD_VERSION"
kubectl create namespace argocd --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n argocd --server-side --force-conflicts \
    -f "https://raw.githubusercontent.com/argoproj/argo-cd/$ARGOCD_VERSION/manifests/install.yaml"
kubectl wait --for=condition=Available deployment --all -n argocd --timeout=300s
# argocd/ holds a ClusterImagePolicy: its CRD (vendored) lets it apply. policy-controller
# itself is not installed: the local namespace is not enforced and its images are unsigned.
kubectl apply -f manifests/crds/policy.sigstore.dev_clusterimagepolicies.yaml
# The overlays render a PrometheusRule (the monitor job's alerts): its CRD (vendored;
# server-side, it is larger than the client-side annotation limit) lets them apply on a
# cluster without prometheus-operator, where the rule is simply not evaluated.
kubectl apply --server-side -f manifests/crds/monitoring.coreos.com_prometheusrules.yaml

log "MLflow ($MLFLOW_IMAGE)"
kubectl apply -f - <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: mlflow
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: mlflow
  namespace: mlflow
spec:
  replicas: 1
  selector:
    matchLabels: {app: mlflow}
  template:
    metadata:
      labels: {app: mlflow}
    spec:
      containers:
        - name: mlflow
          image: $MLFLOW_IMAGE
          command: [mlflow, server]
          args: [--host, 0.0.0.0, --port, "5000",
                 --backend-store-uri, sqlite:////mlflow/mlflow.db,
                 --artifacts-destination, /mlflow/artifacts, --serve-artifacts,
                 --allowed-hosts, "*"]
          ports: [{containerPort: 5000}]
          readinessProbe:
            httpGet: {path: /health, port: 5000}
          volumeMounts: [{name: data, mountPath: /mlflow}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata:
  name: mlflow
  namespace: mlflow
spec:
  selector: {app: mlflow}
  ports: [{port: 5000, targetPort: 5000}]
EOF
kubectl wait --for=condition=Available deployment/mlflow -n mlflow --timeout=300s

# ---------------------------------------------------------------- the serving image
if $build; then
    port=5050
    kubectl port-forward -n mlflow svc/mlflow "$port:5000" >/dev/null &
    forward=$!
    trap 'kill "$forward" 2>/dev/null || true' EXIT
    for _ in $(seq 1 30); do
        "$venv/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health')" \
            2>/dev/null && break
        sleep 1
    done
    export MLFLOW_TRACKING_URI=http://127.0.0.1:$port
    log "register $MODEL in the cluster's MLflow, export it, bake it into $image_name:$image_tag"
    # the gate again, against this registry's champion: register publishes its verdict
    "$venv/tsops" gate "$MODEL"
    "$venv/tsops" register "$MODEL"
    rm -rf build/cluster-model
    "$venv/tsops" export "models:/$MODEL@challenger" --out build/cluster-model
    version=$("$venv/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' \
        build/cluster-model/release.json)
    for tag in "$image_tag" "${also[@]}"; do
        target=localhost:$REGISTRY_PORT/$image_path:$tag
        docker build -t "$target" --label "org.opencontainers.image.version=$tag" \
            --build-arg MODEL_DIR=build/cluster-model --build-arg MODEL_NAME="$MODEL" \
            --build-arg MODEL_VERSION="$version" --build-arg VCS_REF="$(git rev-parse HEAD)" .
        docker push "$target"
    done
fi

# ---------------------------------------------------------------- Argo CD -> the repository
# argocd/ with this repository and revision in gitops-settings.yaml, and only the local
# Application (staging and production pin registry digests that a laptop does not have).
work=$(mktemp -d)
cp -r argocd "$work/argocd"
sed -i -E "s#^(  repoURL: ).*#\1$repo#; s#^(  targetRevision: ).*#\1$revision#" \
    "$work/argocd/gitops-settings.yaml"
cat >"$work/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - argocd
patches:
  - patch: |-
      $patch: delete
      apiVersion: argoproj.io/v1alpha1
      kind: Application
      metadata:
        name: tsops-staging
        namespace: argocd
  - patch: |-
      $patch: delete
      apiVersion: argoproj.io/v1alpha1
      kind: Application
      metadata:
        name: tsops-production
        namespace: argocd
EOF
log "Argo CD deploys $OVERLAY from $repo at $revision (Application tsops-local)"
kubectl apply -k "$work"
rm -rf "$work"
log "ready: kubectl get inferenceservice -n tsops-local; scripts/cluster-down.sh removes it all"
