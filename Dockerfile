# The CONTROL-PLANE image: the operator (epd-operator, epdctl), the router (epd-router) and the
# engine simulator (epd-engine with EPD_ENGINE=sim), so a GPU-free cluster (kind) runs the same
# pod specs as a GPU one. The engine image that runs vLLM is connector/Dockerfile.
#
# Install lines mirror what the tests install (requirements/dev.txt, hack/bootstrap.sh), minus
# the editable flag and the dev tools; operator/tests/test_chart_image.py keeps them in step.
# BASE_IMAGE: hack/build-images.sh passes a local Debian bookworm + Python 3.11 image built
# without a registry; everyone else gets the public base.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The Mooncake transfer engine (CPU build, the simulator's data plane) links libibverbs1,
# libnuma1 and libcurl4; the slim Python base has none of them (found by running the image on
# kind: the engine pods failed to import mooncake.engine).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libibverbs1=44.0-2 libnuma1=2.0.16-1 \
       libcurl4=7.88.1-10+deb12u15 \
    && rm -rf /var/lib/apt/lists/*

# Two installs of the same targets, so a source change rebuilds only the second layer: the
# first sees just the pyprojects and the version files (what pip needs to resolve and install
# every dependency), the second the sources, without dependencies (they are all there).
WORKDIR /src
COPY connector/pyproject.toml connector/pyproject.toml
COPY connector/src/epd_connector/__init__.py connector/src/epd_connector/__init__.py
COPY operator/pyproject.toml operator/pyproject.toml
COPY operator/src/epd_operator/__init__.py operator/src/epd_operator/__init__.py
RUN pip install --no-cache-dir "./connector[transport]" ./operator \
    && rm -rf /src
COPY connector/pyproject.toml connector/pyproject.toml
COPY connector/src connector/src
COPY operator/pyproject.toml operator/pyproject.toml
COPY operator/src operator/src
RUN pip install --no-cache-dir --no-deps --force-reinstall "./connector[transport]" ./operator \
    && rm -rf /src

RUN groupadd --gid 10001 epd \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin epd
USER 10001:10001
WORKDIR /

# epd-engine runs the simulator in this image; the engine image sets EPD_ENGINE=vllm.
ENV EPD_ENGINE=sim
EXPOSE 8080 8081
CMD ["epd-operator"]
