#!/usr/bin/env bash
# Builds the compose demo's two images: geokv (deploy/Dockerfile: server,
# CLI, WAN proxy) and geokv-prometheus (deploy/prometheus/Dockerfile), making
# the base image first where the engine lacks it (scripts/docker-base-image.sh).
# Also tags the build stage (geokv-build) and removes the untagged images
# that earlier builds left behind.
#
# The build context is the repository less what .dockerignore leaves out
# (build/ and .git/); `docker-compose build` sends the same.
#
#   deploy/build-images.sh
#
#   GEOKV_IMAGE             geokv image name (default geokv:latest)
#   GEOKV_PROMETHEUS_IMAGE  Prometheus image name (default geokv-prometheus:latest)
#   GEOKV_BASE_IMAGE        base image (default: deploy/Dockerfile's BASE_IMAGE)
#   GEOKV_BUILD_JOBS        compiler jobs in the build stage (default: CPUs)
#
# Needs: a Docker engine this user may use; root or sudo only if the base
# image must be built. The first build compiles geokv (minutes); later
# ones reuse the engine's layer cache unless the sources changed.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${GEOKV_IMAGE:-geokv:latest}
prometheus_image=${GEOKV_PROMETHEUS_IMAGE:-geokv-prometheus:latest}
base=${GEOKV_BASE_IMAGE:-$(sed -n 's/^ARG BASE_IMAGE=\(.*\)$/\1/p' deploy/Dockerfile | head -n1)}
jobs=${GEOKV_BUILD_JOBS:-$(nproc)}
# The legacy builder, unless the user asked for BuildKit (it needs buildx).
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}

scripts/docker-base-image.sh "$base"

start=$(date +%s)
build() {
  docker build -f deploy/Dockerfile --build-arg BASE_IMAGE="$base" \
    --build-arg BUILD_JOBS="$jobs" "$@" .
}
# The build stage gets a tag of its own, so that pruning the leftovers of
# earlier builds below keeps its layers (the compiled sources) cached.
echo "build-images: ${image%%:*}-build (deploy/Dockerfile, stage build, $jobs jobs)"
build --target build -t "${image%%:*}-build:latest"
echo "build-images: $image (deploy/Dockerfile)"
build -t "$image"
echo "build-images: $prometheus_image (deploy/prometheus/Dockerfile)"
docker build --build-arg BASE_IMAGE="$base" -t "$prometheus_image" deploy/prometheus
# Earlier builds' images, untagged now (the label marks ours).
docker image prune -f --filter label=org.geokv.deploy=true >/dev/null
echo "build-images: done in $(( $(date +%s) - start )) s"
docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^  ($image|$prometheus_image|$base)( |$)" || true
