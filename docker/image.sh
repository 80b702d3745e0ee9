#!/usr/bin/env bash
# Builds the container image IMAGE with whichever engine answers: CONTAINER (docker or podman) if set,
# else docker when its engine runs, else podman. `make image` runs it.
#
# Where a registry answers, this is a plain `build` of the Dockerfile. Where none does (the base image
# cannot be pulled), the image is built from local parts instead, with the same Dockerfile:
#   - the base: Debian bookworm with python3, made by debootstrap from Debian's packages (needs root),
#     imported once as BASE_IMAGE;
#   - the wheel: built on the host by docker/build-wheel.sh into docker/wheels/ (WHEELS=prebuilt),
#     since no Rust image can be pulled either.
# Podman on a cgroup v1/v2 hybrid host runs with runc (crun refuses that layout), and every container
# gets explicit, modest limits (a rootless or nested engine may refuse to raise them to the defaults).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

image=${IMAGE:-}
base_image=${BASE_IMAGE:-localhost/locust-inference-base:bookworm}
public_base=python:3.11-slim-bookworm
say() { echo "==> $*" >&2; }
die() { echo "make image: $*" >&2; exit 1; }

# Debian's packages, installed when missing and this is root (as `make` installs its other tools).
apt_install() {
    [[ $(id -u) == 0 ]] || die "$1 is missing: install Debian's ${*:2} (as root) and retry"
    say "installing Debian's ${*:2} ($1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${@:2}" >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${@:2}" >/dev/null; }
}

engine=${CONTAINER:-}
if [[ -z $engine ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        engine=docker
    else
        engine=podman  # no docker engine answers (none runs on some machines): podman needs no daemon
    fi
fi
if [[ $engine == podman ]] && ! command -v podman >/dev/null; then
    apt_install "podman (no docker engine answers)" podman runc
fi
command -v "$engine" >/dev/null || die "$engine is not installed: install a container engine (or unset CONTAINER)"
"$engine" info >/dev/null 2>&1 || die "no container engine answers ($engine info failed): start one (or point DOCKER_HOST at one) to build the image"

# The engine's own options, and the limits each container and build step gets. `--print-engine` prints
# them for tests and scripts: the engine and its options on one line, the limits on the next.
engine_args=()
if [[ $engine == podman ]]; then
    # crun, podman's default, refuses a cgroup v1/v2 hybrid layout ("cgroups in hybrid mode not supported").
    if [[ -d /sys/fs/cgroup/unified ]]; then
        command -v runc >/dev/null || apt_install "runc (podman's crun refuses this host's cgroup layout)" runc
        engine_args+=(--runtime runc)
    fi
fi
# Modest, and never above this shell's own hard limits, which a container may not exceed.
cap() { local hard; hard=$(ulimit -H "$1"); [[ $hard == unlimited || $hard -gt $2 ]] && echo "$2" || echo "$hard"; }
nofile=$(cap -n 16384)
nproc=$(cap -u 4096)
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
if [[ ${1:-} == --print-engine ]]; then
    echo "$engine" "${engine_args[@]}"
    echo "${limits[@]}"
    exit 0
fi

[[ -n $image ]] || die "IMAGE names the image to build"
build_args=()
if "$engine" "${engine_args[@]}" image inspect "$public_base" >/dev/null 2>&1 ||
    "$engine" "${engine_args[@]}" pull -q "$public_base" >/dev/null 2>&1; then
    say "building $image with $engine (base $public_base, the wheel compiled in the builder stage)"
else
    say "no registry answers ($public_base cannot be pulled): building from Debian's packages and a wheel built here"
    if ! "$engine" "${engine_args[@]}" image inspect "$base_image" >/dev/null 2>&1; then
        [[ $(id -u) == 0 ]] || die "making the base $base_image with debootstrap needs root"
        command -v debootstrap >/dev/null || apt_install "debootstrap (makes the base)" debootstrap
        root=$(mktemp -d)
        trap 'rm -rf "$root"' EXIT
        say "making the base $base_image: Debian bookworm with python3 (debootstrap, about a minute)"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root/fs" \
            "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$root/debootstrap.log" 2>&1 ||
            { tail -20 "$root/debootstrap.log" >&2; die "debootstrap failed"; }
        # apt's downloaded packages and lists are not part of a base image.
        rm -rf "$root"/fs/var/cache/apt/archives/*.deb "$root"/fs/var/lib/apt/lists/*
        tar -C "$root/fs" -c . | "$engine" "${engine_args[@]}" import - "$base_image" >/dev/null
    fi
    say "building the wheel here (docker/build-wheel.sh)"
    rm -rf docker/wheels
    docker/build-wheel.sh docker/wheels >&2
    build_args+=(--build-arg "BASE=$base_image" --build-arg WHEELS=prebuilt)
fi

# pip inside the build trusts what pip here trusts: where this host names a CA bundle (an intercepting
# proxy's), it goes to the build as a secret, which no layer keeps.
cert=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
if [[ -n $cert && -f $cert ]]; then
    build_args+=(--secret "id=pip_cert,src=$cert")
fi

previous=$("$engine" "${engine_args[@]}" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
if [[ $engine == docker ]]; then
    DOCKER_BUILDKIT=1 docker build --tag "$image" "${build_args[@]}" .
else
    # --no-cache: buildah reuses a RUN step whose bind mount from another stage changed (a new wheel
    # installed as the old one); the step that takes time is pip's, about half a minute.
    podman "${engine_args[@]}" build --no-cache --network=host "${limits[@]}" --tag "$image" "${build_args[@]}" .
fi
# The image this tag named before is left untagged by the build: remove it, unless something uses it.
current=$("$engine" "${engine_args[@]}" image inspect --format '{{.Id}}' "$image")
if [[ -n $previous && $previous != "$current" ]]; then
    "$engine" "${engine_args[@]}" rmi "$previous" >/dev/null 2>&1 || true
fi
say "built $image ($("$engine" "${engine_args[@]}" image inspect --format '{{.Size}}' "$image" | numfmt --to=si)B)"
