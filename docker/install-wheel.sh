#!/usr/bin/env sh
# Installs the locust-inference wheel found in <wheel-dir> and its dependencies (Locust among them)
# with the python on PATH: the image's final stage runs it, and tests/system/test_image.py runs it in a fresh
# virtual environment. Binary wheels only: the final image has no compiler, so a dependency that
# would need one must fail here rather than half-install.
set -eu
[ $# -eq 1 ] || { echo "usage: docker/install-wheel.sh <wheel-dir>" >&2; exit 2; }
set -- "$1"/locust_inference-*.whl
if [ $# -ne 1 ] || [ ! -f "$1" ]; then
    echo "install-wheel.sh: expected exactly one locust_inference wheel, found: $*" >&2
    exit 1
fi
# A CA bundle given to the build as the secret pip_cert (see docker/image.sh) is the one pip trusts.
if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi
python -m pip install --only-binary=:all: "$1"
