#!/usr/bin/env bash
# Build (once) a local Debian bookworm + Python 3.11 base image for the Dockerfile.
#
# Why: no image registry is reachable from the development and CI machines, so
# `FROM python:3.11.x-slim-bookworm` cannot be pulled. Debian's own packages can
# be, so we make an equivalent base from them with debootstrap and pass it to
# the build as `podman build --from localhost/tsops-python:3.11-bookworm` (it replaces
# the Dockerfile's base stage, the digest-pinned official image).
# Debian bookworm's python3 is 3.11, the version the lock file was resolved for.
#
# The image is cached in podman's store: when it exists this script returns at
# once (debootstrap is the slow step, about a minute). Set REBUILD_BASE=1 to
# build it again.
#
# Usage: scripts/container-base.sh            (as root; needs podman and debootstrap)
# Env:   BASE_TAG       image to create   (default localhost/tsops-python:3.11-bookworm)
#        DEBIAN_MIRROR  debootstrap mirror (default http://deb.debian.org/debian)
#        REBUILD_BASE=1 rebuild even if the image exists
set -euo pipefail

BASE_TAG=${BASE_TAG:-localhost/tsops-python:3.11-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# podman on these machines needs runc + cgroupfs (crun fails): see containers.conf.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

if [[ ${REBUILD_BASE:-0} != 1 ]] && podman image exists "$BASE_TAG"; then
    echo "base image $BASE_TAG exists (REBUILD_BASE=1 to rebuild)"
    exit 0
fi

for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/tsops-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

# minbase: only essential packages + apt. python3-venv brings ensurepip (pip
# wheels) for `python3 -m venv`; ca-certificates lets pip in the build use TLS.
# Everything is installed here, on the host, so building the base needs no
# network inside a container.
echo "debootstrap $SUITE into $rootfs (about a minute)"
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -40 "$work/debootstrap.log" >&2
    exit 1
}
echo "debootstrap took $((SECONDS - start)) s"

# Slim it like the official -slim images: no package lists, caches, docs or man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log

# Import the root file system, then add the few settings an image needs on top
# (the same ones the official python image sets that matter here).
tar -C "$rootfs" -c . | podman import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $SUITE + python3, python3-venv, ca-certificates" \
    --quiet - "$BASE_TAG" >/dev/null

podman run --rm --network=none "$BASE_TAG" python3 -c \
    'import sys, ensurepip, venv; assert sys.version_info[:2] == (3, 11), sys.version; print("base python", sys.version.split()[0])'
podman image ls "$BASE_TAG"
