#!/usr/bin/env bash
# Move the canary of a live InferenceService with kubectl, and prepare the same change in
# git. Git owns canaryTrafficPercent (manifests/README.md): Argo CD applies git's value on
# every sync, so a kubectl change lasts until the next sync (at once where self-heal is
# on: local, staging; at the next manual sync in production) unless the branch this
# script prepares is merged first.
#   scripts/canary.sh MODEL PERCENT [-n NAMESPACE] [--env ENV] [--no-git]
#   scripts/canary.sh MODEL PERCENT --local -f FILE     print the patched FILE (tests)
# PERCENT 0 sends all traffic to the last rolled-out release, 100 promotes fully (removes
# the field). The namespace defaults to tsops-ENV, ENV to production. --no-git patches the
# cluster only (a cluster test without a checkout to prepare a branch in).
set -euo pipefail
usage() {
    echo "usage: $0 MODEL PERCENT [-n NAMESPACE] [--env ENV] [--no-git] [--local -f FILE]" >&2
    exit 2
}
[ $# -ge 2 ] || usage
model=$1 percent=$2
shift 2
namespace="" env="" local_file="" prepare_git=true
while [ $# -gt 0 ]; do
    case $1 in
        -n | --namespace) namespace=$2; shift 2 ;;
        --env) env=$2; shift 2 ;;
        --no-git) prepare_git=false; shift ;;
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
    # null removes the field in a JSON merge patch, and is no error when it is absent
    patch='{"spec":{"predictor":{"canaryTrafficPercent":null}}}'
else
    patch="{\"spec\":{\"predictor\":{\"canaryTrafficPercent\":$percent}}}"
fi
if [ -n "$local_file" ]; then
    exec kubectl patch --local -f "$local_file" --type merge -p "$patch" -o yaml
fi
env=${env:-${namespace#tsops-}}
env=${env:-production}
namespace=${namespace:-tsops-$env}

if $prepare_git; then
    # Git first: it refuses what KServe would not do as asked (e.g. a canary share after
    # the canary finished), and then the cluster is left alone too.
    tsops canary "$model" --env "$env" --percent "$percent" --branch
fi
kubectl patch inferenceservice "$model" -n "$namespace" --type merge -p "$patch"
echo "live: $model in $namespace now has canaryTrafficPercent $percent (100 = field removed)"
if $prepare_git; then
    echo "git: push canary/$model-$env-$percent and merge its pull request; until then the" \
        "next Argo CD sync puts git's value back (self-heal in local and staging does so" \
        "within minutes)" >&2
else
    echo "git: unchanged; the next Argo CD sync puts git's value back" >&2
fi
