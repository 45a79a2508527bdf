# syntax=docker/dockerfile:1
#
# synthetic-monitor container image.
#
#   docker build -t synthetic-monitor:0.1.0 .
#   docker run --rm --read-only -p 9356:9356 \
#     -v "$PWD/config.yaml:/etc/synthetic-monitor/config.yaml:ro" \
#     --tmpfs /var/lib/synthetic-monitor:uid=10001,gid=10001 synthetic-monitor:0.1.0
#
# Stage 1 builds the project's wheel; stage 2 installs that wheel (and its runtime
# dependencies, pinned by deploy/constraints.txt) into a clean slim image and then
# removes pip/setuptools/wheel, so no build tooling ships. The wheel holds no test
# stand-ins (they live in tests/standin/, outside the package and the build context). The image runs as the fixed non-root UID/GID 10001 and
# works with a read-only root filesystem: no bytecode is written, and anything the
# daemon writes (e.g. alerting.state_file) goes to /var/lib/synthetic-monitor,
# which Kubernetes mounts as an emptyDir (deploy/kubernetes).
# Linted by `hadolint Dockerfile` in tests/test_deploy.py.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md* ./
COPY deploy/constraints.txt ./constraints.txt
COPY monitor ./monitor
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && cp constraints.txt /wheels/constraints.txt

FROM ${PYTHON_IMAGE}
ARG UID=10001
ARG GID=10001
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/var/lib/synthetic-monitor \
    TMPDIR=/var/lib/synthetic-monitor

LABEL org.opencontainers.image.title="synthetic-monitor" \
      org.opencontainers.image.description="Synthetic monitor for MLflow and the Asgard MLOps API (Prometheus metrics, alerts)"

RUN groupadd --system --gid "${GID}" synthetic-monitor \
    && useradd --system --uid "${UID}" --gid "${GID}" --no-create-home \
       --home-dir /var/lib/synthetic-monitor --shell /usr/sbin/nologin synthetic-monitor \
    && install -d -o "${UID}" -g "${GID}" -m 0750 /var/lib/synthetic-monitor \
    && install -d -m 0755 /etc/synthetic-monitor

# The wheel comes in through a bind mount of the build stage, so it never lands in a
# layer; pip itself is removed once the project is installed.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir -c /wheels/constraints.txt /wheels/*.whl \
    && pip uninstall --yes setuptools wheel pip \
    && synthetic-monitor --version

WORKDIR /var/lib/synthetic-monitor
USER 10001:10001
EXPOSE 9356
VOLUME ["/var/lib/synthetic-monitor"]
ENTRYPOINT ["synthetic-monitor"]
CMD ["run", "--config", "/etc/synthetic-monitor/config.yaml"]
