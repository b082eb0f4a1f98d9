#!/usr/bin/env bash
# Move the canary of a live InferenceService with kubectl (Argo CD leaves this field
# alone: ignoreDifferences + RespectIgnoreDifferences in argocd/).
#   scripts/canary.sh NAME PERCENT [-n NAMESPACE]      patch the cluster
#   scripts/canary.sh NAME PERCENT --local -f FILE     print the patched FILE (tests)
# PERCENT 0 rolls back to the previous revision, 100 promotes fully (removes the field).
set -euo pipefail
usage() { echo "usage: $0 NAME PERCENT [-n NAMESPACE] [--local -f FILE]" >&2; exit 2; }
[ $# -ge 2 ] || usage
name=$1 percent=$2; shift 2
namespace=() local_file=""
while [ $# -gt 0 ]; do
  case $1 in
    -n|--namespace) namespace=(-n "$2"); shift 2 ;;
    --local) shift ;;
    -f) local_file=$2; shift 2 ;;
    *) usage ;;
  esac
done
if ! [[ $percent =~ ^[0-9]+$ ]] || [ "$percent" -gt 100 ]; then
  echo "error: percent $percent is outside 0..100 (0 rolls back, 100 promotes fully)" >&2
  exit 2
fi
if [ "$percent" -eq 100 ]; then
  # full promotion: the field goes away; "test" first so a missing field is not an error
  type=json patch='[{"op":"remove","path":"/spec/predictor/canaryTrafficPercent"}]'
  if [ -n "$local_file" ] && ! grep -q canaryTrafficPercent "$local_file"; then
    type=merge patch='{}'
  fi
else
  type=merge patch="{\"spec\":{\"predictor\":{\"canaryTrafficPercent\":$percent}}}"
fi
if [ -n "$local_file" ]; then
  exec kubectl patch --local -f "$local_file" --type "$type" -p "$patch" -o yaml
fi
exec kubectl patch inferenceservice "$name" "${namespace[@]}" --type "$type" -p "$patch"
