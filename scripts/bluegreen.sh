#!/usr/bin/env bash
# Switch the users of a live blue/green deployment to one colour with kubectl, and prepare
# the same change in git. Git owns the live colour, as it owns the canary share (see
# scripts/canary.sh and manifests/README.md): Argo CD applies git's bluegreen-live.yaml on
# every sync, so a kubectl switch lasts until the next sync (at once where self-heal is
# on: local, staging; at the next manual sync in production) unless the branch this
# script prepares is merged first.
#   scripts/bluegreen.sh MODEL COLOUR [-n NAMESPACE] [--env ENV] [--no-git]
#   scripts/bluegreen.sh MODEL COLOUR --local -f FILE   print the patched graph FILE (tests)
# COLOUR is blue (InferenceService MODEL) or green (MODEL-green). Only the InferenceGraph
# MODEL-bluegreen changes: no InferenceService, so no new revision and no cold start, and
# switching back is the same command with the other colour. The CronJobs move to the live
# colour's release with the merged branch (tsops-batch), not here: they run on a schedule,
# and a kubectl edit of them would be reverted at the next sync anyway. The namespace
# defaults to tsops-ENV, ENV to production. --no-git patches the cluster only.
set -euo pipefail
usage() {
    echo "usage: $0 MODEL blue|green [-n NAMESPACE] [--env ENV] [--no-git] [--local -f FILE]" >&2
    exit 2
}
[ $# -ge 2 ] || usage
model=$1 colour=$2
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
case $colour in
    blue) service=$model ;;
    green) service=$model-green ;;
    *) echo "error: unknown colour $colour: switch to blue or green" >&2; exit 2 ;;
esac
# A JSON merge patch replaces the steps list whole: the one step is the live colour.
patch="{\"spec\":{\"nodes\":{\"root\":{\"routerType\":\"Sequence\",\"steps\":[{\"name\":\"$colour\",\"serviceName\":\"$service\"}]}}}}"
if [ -n "$local_file" ]; then
    exec kubectl patch --local -f "$local_file" --type merge -p "$patch" -o yaml
fi
env=${env:-${namespace#tsops-}}
env=${env:-production}
namespace=${namespace:-tsops-$env}

if $prepare_git; then
    # Git first: it refuses what would break blue/green (an unknown colour, the colour that
    # is live already, an environment without blue/green), and then the cluster is left
    # alone too.
    tsops bluegreen "$model" --env "$env" --to "$colour" --branch
fi
kubectl patch inferencegraph "$model-bluegreen" -n "$namespace" --type merge -p "$patch"
echo "live: $model-bluegreen in $namespace now sends every request to $colour ($service)"
if $prepare_git; then
    echo "git: push bluegreen/$model-$env-$colour and merge its pull request (it also moves" \
        "the CronJobs to $colour's release); until then the next Argo CD sync puts git's" \
        "colour back (self-heal in local and staging does so within minutes)" >&2
else
    echo "git: unchanged; the next Argo CD sync puts git's colour back" >&2
fi
