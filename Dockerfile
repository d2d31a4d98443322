# syntax=docker/dockerfile:1
#
# captioner: the Show and Tell caption server as a non-root image, port 5000.
#
#   docker build -t captioner .                                   # model fetched at first start
#   docker build --build-arg MODEL_SOURCE=baked -t captioner:baked .   # model inside the image
#   docker build --build-arg PACKAGE=".[ray]" -t captioner .      # for k8s/ray/rayjob.yaml
#   docker run --stop-timeout 30 -p 5000:5000 -v captioner-model:/var/lib/captioner captioner
#   docker run --stop-timeout 30 -p 5000:5000 captioner serve --model demo   # bundled demo
#
# --stop-timeout 30: a stop drains running requests (up to CAPTIONER_DRAIN_TIMEOUT_S, 20 s),
# then cuts off what is still open after CAPTIONER_SHUTDOWN_TIMEOUT_S (5 s); Docker's
# default of 10 s would kill it mid-drain.
#
# Build arguments:
#   PYTHON_IMAGE   the slim CPython base, pinned to a patch release.
#   PACKAGE        what pip installs: "." (default), or with extras: ".[ray]" for the image
#                  the RayJob runs, ".[parquet]" for `captioner caption --output x.parquet`.
#   MODEL_SOURCE   "volume" (default): the server downloads and verifies the checkpoint at
#                  first start into the /var/lib/captioner volume, so the image stays small
#                  and the download happens once per volume. "baked": `captioner download`
#                  fetches and verifies it at build time and the image runs offline.
#   DOWNLOAD_URLS  with MODEL_SOURCE=baked: tarball mirrors to try, comma-separated.
#   VOCAB_URL      with MODEL_SOURCE=baked: where word_counts.txt comes from.
#   ASSET_SHA512, VOCAB_SHA256   with MODEL_SOURCE=baked, only for a mirror that serves
#                  other files than the originals: their digests (CAPTIONER_* settings).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG MODEL_SOURCE=volume

# --- build: the package and its pinned dependencies in a venv, nothing else kept ---------
FROM ${PYTHON_IMAGE} AS build
ARG PACKAGE="."
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/captioner
WORKDIR /src
COPY pyproject.toml README.md ./
COPY docker/constraints.txt docker/
COPY src/ src/
RUN /opt/captioner/bin/pip install --constraint docker/constraints.txt "${PACKAGE}"

# --- runtime: the venv on a clean base, run as uid 10001 ---------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# TensorFlow's own log follows CAPTIONER_LOG_LEVEL (captioner sets it before importing TF).
# bf16's and auto's encoder timings are remembered in the volume, beside the model: the user
# has no home, and a new container on the same kind of machine then skips the timing.
ENV PATH=/opt/captioner/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CAPTIONER_HOST=0.0.0.0 \
    CAPTIONER_PORT=5000 \
    CAPTIONER_CALIBRATION_FILE=/var/lib/captioner/calibrations.json
RUN groupadd --system --gid 10001 captioner \
    && useradd --system --no-log-init --uid 10001 --gid captioner \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin captioner \
    && install --directory --owner=10001 --group=10001 /var/lib/captioner
COPY --from=build /opt/captioner /opt/captioner
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/captioner-entrypoint
EXPOSE 5000
# Readiness, not liveness: "healthy" means the model is loaded and requests are served.
# Python rather than curl, which the slim base lacks; a first download can take minutes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('CAPTIONER_PORT', '5000'), timeout=4)"]
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/captioner-entrypoint"]
CMD ["serve"]

# --- MODEL_SOURCE=baked: the verified checkpoint inside the image ------------------------
FROM build AS fetch
ARG DOWNLOAD_URLS=""
ARG VOCAB_URL=""
ARG ASSET_SHA512=""
ARG VOCAB_SHA256=""
# Empty values fall back to the built-in sources and digests (Settings ignores empty
# variables). The installer creates the model's files with the build's umask (readable by
# all under the usual 022); the chmod makes sure, whatever the umask, that the server's uid
# can read them and nobody can write them.
RUN CAPTIONER_DOWNLOAD_URLS="${DOWNLOAD_URLS}" CAPTIONER_VOCAB_URL="${VOCAB_URL}" \
        CAPTIONER_ASSET_SHA512="${ASSET_SHA512}" CAPTIONER_VOCAB_SHA256="${VOCAB_SHA256}" \
        /opt/captioner/bin/captioner download --quiet --dest /model \
    && chmod -R a+rX,go-w /model

FROM runtime AS model-baked
# Owned by root, read-only for the server's uid: nothing at run time can alter the weights.
COPY --from=fetch /model /opt/captioner-model
ENV CAPTIONER_MODEL_DIR=/opt/captioner-model \
    CAPTIONER_OFFLINE=true

# --- MODEL_SOURCE=volume: downloaded once into the volume at first start -----------------
FROM runtime AS model-volume
# The download lock and staging directories sit beside the model: the volume root must be
# writable by the server, which it is (a new named volume copies this directory's owner).
ENV CAPTIONER_MODEL_DIR=/var/lib/captioner/model
VOLUME ["/var/lib/captioner"]

# The final image is one of the two stages above, chosen by MODEL_SOURCE; hadolint takes
# the variable stage name for an untagged image.
# hadolint ignore=DL3006
FROM model-${MODEL_SOURCE}
