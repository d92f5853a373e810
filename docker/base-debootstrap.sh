#!/usr/bin/env bash
# A Debian bookworm base image (python3 3.11) for machines that cannot pull python:3.11-slim
# (CI here cannot reach Docker Hub): debootstrap a minimal rootfs and import it into podman.
#
#   bash docker/base-debootstrap.sh IMAGE [ROOTFS_DIR]      (needs root, debootstrap, podman)
set -euo pipefail
image="${1:?usage: base-debootstrap.sh IMAGE [ROOTFS_DIR]}"
if [ -n "${2:-}" ]; then
    rootfs="$2"                          # kept: a second import skips debootstrap
else
    scratch="$(mktemp -d)"; rootfs="$scratch/rootfs"
    trap 'rm -rf "$scratch"' EXIT        # a throwaway rootfs, never left in /tmp or the tree
fi
if [ ! -x "$rootfs/usr/bin/python3" ]; then
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,git \
        bookworm "$rootfs" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log"; exit 1; }
fi
# Not needed at run time (apt lists and caches, documentation, translations: about 70 MB).
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "imported $image from $rootfs"
