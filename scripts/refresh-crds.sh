#!/usr/bin/env bash
# Re-fetch the vendored CRDs (manifests/crds/) from the upstream commits that
# manifests/crds/README.md lists. To move to a newer upstream release, change the commit
# here and in that README together, run this script, then `tsops manifests validate`:
# a schema change shows up as findings there, not on a cluster.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/manifests/crds"

kserve=aaac4e294dae2c7b1aa1886447793f3aa1c30912
argocd=37ee0097cf851bc2dd7665fc081bbce61a7e836e
prometheus=6adcebc5076c34f4f55f8f5f7b1e528929373ac7
sigstore=f925c0c1a412910787a7f045581fa9d5ed09a20a
raw=https://raw.githubusercontent.com

# local file name | upstream URL at the pinned commit
sources=(
  "serving.kserve.io_inferenceservices.yaml|$raw/kserve/kserve/$kserve/config/crd/full/serving.kserve.io_inferenceservices.yaml"
  "serving.kserve.io_inferencegraphs.yaml|$raw/kserve/kserve/$kserve/config/crd/full/serving.kserve.io_inferencegraphs.yaml"
  "application-crd.yaml|$raw/argoproj/argo-cd/$argocd/manifests/crds/application-crd.yaml"
  "applicationset-crd.yaml|$raw/argoproj/argo-cd/$argocd/manifests/crds/applicationset-crd.yaml"
  "appproject-crd.yaml|$raw/argoproj/argo-cd/$argocd/manifests/crds/appproject-crd.yaml"
  "monitoring.coreos.com_prometheusrules.yaml|$raw/prometheus-operator/prometheus-operator/$prometheus/example/prometheus-operator-crd-full/monitoring.coreos.com_prometheusrules.yaml"
  "monitoring.coreos.com_servicemonitors.yaml|$raw/prometheus-operator/prometheus-operator/$prometheus/example/prometheus-operator-crd-full/monitoring.coreos.com_servicemonitors.yaml"
  "monitoring.coreos.com_podmonitors.yaml|$raw/prometheus-operator/prometheus-operator/$prometheus/example/prometheus-operator-crd-full/monitoring.coreos.com_podmonitors.yaml"
  "policy.sigstore.dev_clusterimagepolicies.yaml|$raw/sigstore/policy-controller/$sigstore/config/300-clusterimagepolicy.yaml"
)

# Download everything first: a failed fetch leaves the vendored copies as they were.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for entry in "${sources[@]}"; do
  file="${entry%%|*}"
  url="${entry#*|}"
  echo "fetching $file" >&2
  curl -fsSL --proto =https --retry 3 -o "$tmp/$file" "$url"
done
mkdir -p "$dest"
for entry in "${sources[@]}"; do
  file="${entry%%|*}"
  mv "$tmp/$file" "$dest/$file"
done
echo "refreshed ${#sources[@]} CRDs in $dest; review with git diff $dest" >&2
