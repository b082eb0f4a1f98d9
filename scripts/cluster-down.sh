#!/usr/bin/env bash
# Remove what scripts/cluster-up.sh made: the kind cluster (with everything in it: Argo CD,
# KServe, Knative, cert-manager, MLflow) and the local registry container with the images
# pushed to it, and the exported model under build/. Safe to run twice.
#   scripts/cluster-down.sh
set -euo pipefail

CLUSTER=${TSOPS_CLUSTER:-tsops} # as in cluster-up.sh
REGISTRY=kind-registry

root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "cluster-down: $*" >&2; }

if command -v kind >/dev/null && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER"
fi
if docker inspect "$REGISTRY" >/dev/null 2>&1; then
    log "removing registry container $REGISTRY"
    docker rm -f "$REGISTRY" >/dev/null
fi
rm -rf "$root/build/cluster-model"
log "done"
