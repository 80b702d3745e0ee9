# syntax=docker/dockerfile:1
# locust-inference: Locust with the Rust client, one image for the master and the workers.
#
#   make image                                  # builds locust-inference:<version> (docker/image.sh)
#   docker run --rm -e LOCUST_HOST=http://10.0.0.5:8000 -e LOCUST_SERVER=triton \
#       -e LOCUST_MODEL_NAME=resnet50_onnx locust-inference:0.1.0    # configs/low.conf, headless
#   docker run ... locust-inference:0.1.0 --master --config /opt/locust-inference/configs/high.conf
#
# The builder stage compiles the wheel (Rust, nasm, maturin); the final stage is Python 3.11 on Debian
# bookworm with that wheel and its dependencies installed from binary wheels only, and nothing that
# compiles. deploy/kubernetes/ runs this image as master and workers.
#
# Two build arguments let the image be built where no container registry answers (docker/image.sh sets
# them there; the defaults are the ordinary build):
# BASE: the final stage's base image, any Debian bookworm with python3 and its venv module.
ARG BASE=python:3.11-slim-bookworm
# WHEELS: where the wheel comes from: `builder` compiles it below; `prebuilt` takes docker/wheels/ from
# the build context, a wheel that docker/build-wheel.sh built on the host.
ARG WHEELS=builder

FROM rust:1.95-slim-bookworm AS builder
ARG MATURIN_VERSION=1.16.0
# nasm: libjpeg-turbo's SIMD decoding (mozjpeg-sys, feature nasm_simd). python3 is Debian's 3.11,
# the final stage's version, which the abi3-py311 wheel needs at least.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nasm python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/maturin \
    && /opt/maturin/bin/pip install --no-cache-dir "maturin==${MATURIN_VERSION}"
WORKDIR /src
# Sources only: .dockerignore admits nothing else (no target/, .venv/ or a locally built .so).
COPY Cargo.toml Cargo.lock pyproject.toml README.md build.rs ./
COPY src/ src/
COPY proto/ proto/
COPY python/ python/
COPY docker/build-wheel.sh docker/
RUN MATURIN=/opt/maturin/bin/maturin docker/build-wheel.sh /dist

FROM scratch AS prebuilt
COPY docker/wheels/ /dist/

FROM ${WHEELS} AS wheels

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LOCUST_LOCUSTFILE=/opt/locust-inference/locustfile.py
# A virtual environment, so that the base's own Python packages (Debian's, on a Debian base) stay apart.
# The wheel and the install script are bind-mounted, not copied: neither stays in a layer. The optional
# secret pip_cert is a CA bundle for pip where the registry is reached through an intercepting proxy
# (docker/image.sh passes the host's); a secret mount leaves nothing in the image either.
RUN --mount=type=bind,from=wheels,source=/dist,target=/tmp/wheels \
    --mount=type=bind,source=docker/install-wheel.sh,target=/tmp/install-wheel.sh \
    --mount=type=secret,id=pip_cert \
    python3 -m venv /opt/venv && sh /tmp/install-wheel.sh /tmp/wheels
# Read-only for the user that runs Locust (owned by root); data/ holds the default image the users send.
COPY locustfile.py /opt/locust-inference/
COPY configs/ /opt/locust-inference/configs/
COPY data/ /opt/locust-inference/data/
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/locust \
    --shell /usr/sbin/nologin locust
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
# Results (results/<server>/latency.json, --csv files) are written under the user's home.
WORKDIR /home/locust
# 5557: the master port workers connect to (no authentication: keep it private); 8089: the web UI.
EXPOSE 5557 8089
ENTRYPOINT ["locust"]
CMD ["--config", "/opt/locust-inference/configs/low.conf", "--headless"]
