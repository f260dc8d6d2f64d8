# syntax=docker/dockerfile:1
# recast images (the Helm chart in helm/recast runs them):
#
#   docker build --target runtime -t recast:0.1.0 .        # gateway, stream processor, forecast
#                                                          # service, feature build, A/B reports: no PyTorch
#   docker build --target train -t recast-train:0.1.0 .    # `recast train` / `recast export`: the train
#                                                          # extra + torchrec --no-deps, as the Makefile installs
#
# PyPI's torch wheel for Linux is the CUDA build; for a smaller CPU-only training image pass
# the CPU wheel index of PyTorch: --build-arg PIP_EXTRA_INDEX_URL=<index>.
# Both images run as uid 10001 (the chart's podSecurityContext) and write only under
# RECAST_HOME (/var/lib/recast) and /tmp, so they work with a read-only root filesystem.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 recast \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/recast --shell /usr/sbin/nologin recast \
 && install -d -o 10001 -g 10001 /var/lib/recast

# --- build: the runtime environment (no torch) ------------------------------------------
FROM base AS build
RUN python -m venv /opt/venv
WORKDIR /src
COPY . .
# feast[redis]: the Redis online store client used in the cluster (locally: SQLite).
RUN pip install . "feast[redis]"

# --- build-train: runtime environment + the train extra ------------------------------------
FROM build AS build-train
ARG PIP_EXTRA_INDEX_URL
ARG TORCHREC_VERSION=1.8.0
# torchrec's metadata asks for the CUDA fbgemm-gpu, which must not sit next to fbgemm-gpu-cpu.
RUN pip install ".[train]" \
 && pip install --no-deps "torchrec==${TORCHREC_VERSION}"

# --- train image ---------------------------------------------------------------------------
FROM base AS train
COPY --from=build-train /opt/venv /opt/venv
ENV RECAST_HOME=/var/lib/recast \
    OMP_WAIT_POLICY=PASSIVE
WORKDIR /var/lib/recast
USER 10001:10001
ENTRYPOINT ["recast"]
CMD ["train"]

# --- runtime image (the default target) ----------------------------------------------------
FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
ENV RECAST_HOME=/var/lib/recast
WORKDIR /var/lib/recast
USER 10001:10001
EXPOSE 18080
ENTRYPOINT ["recast"]
CMD ["serve"]
