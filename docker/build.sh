#!/usr/bin/env bash
# Build the stage images (and search's) from docker/Dockerfile, sharing their layers, and print their sizes.
#
#   bash docker/build.sh [TAG]          (default TAG: latest; images slimline-<stage>:TAG)
#
# Environment: ENGINE (podman or docker; default podman), BASE (the base image; default the
# Dockerfile's python:3.11-slim), TORCH_INDEX (where pip finds torch 2.13.0+cpu; default PyTorch's
# CPU index), WHEELS (a local folder of wheels mounted at /wheels during the build) and CA_BUNDLE
# (a CA file pip must trust, mounted at /run/ca.crt during the build); the mounts need podman.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-latest}"
engine="${ENGINE:-podman}"
STAGES=(prepare prune decompose distill quantize search evaluate publish)

args=(-f docker/Dockerfile)
[ -n "${BASE:-}" ] && args+=(--build-arg "BASE=$BASE")
[ -n "${TORCH_INDEX+set}" ] && args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
[ -n "${WHEELS:-}" ] && args+=(-v "$WHEELS:/wheels:ro")
[ -n "${CA_BUNDLE:-}" ] && args+=(-v "$CA_BUNDLE:/run/ca.crt:ro")

for stage in "${STAGES[@]}"; do
    start=$SECONDS
    "$engine" build "${args[@]}" --target "$stage" -t "slimline-$stage:$tag" . >"${BUILD_LOG:-/dev/null}" 2>&1 \
        || { echo "build of slimline-$stage failed; rerun with BUILD_LOG=/dev/stderr" >&2; exit 1; }
    echo "built slimline-$stage:$tag in $((SECONDS - start)) s"
done
"$engine" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "slimline-.*:$tag " || true
