#!/usr/bin/env bash
# Builds the locust-inference wheel (the Rust extension, optimised) into <out-dir>: the image's builder
# stage runs it, and tests/system/test_image.py runs it here, so what the image installs is built and tested
# the same way. MATURIN names the maturin command (default: maturin on PATH), WHEEL_PROFILE the Cargo profile
# (default release; `make test` sets release-nolto, the profile it installs, so the tests reuse that build).
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: docker/build-wheel.sh <out-dir>" >&2; exit 2; }
out=$1
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# --locked: the image gets the dependency versions the tests ran with, never newer ones.
"${MATURIN:-maturin}" build --profile "${WHEEL_PROFILE:-release}" --locked --out "$out"
