#!/usr/bin/env bash
# Builds a stand-in for the python:3.11-slim-bookworm base image from Debian
# packages, for machines that no container registry serves, and tags it with
# that name so that the Dockerfile is built unchanged (tests/e2e/test_container.py).
#
# What the Dockerfile needs from its base image: `python` (3.11, with venv and
# tomllib), groupadd/useradd, and a pip that trusts this machine's TLS (the
# egress may re-sign certificates with a local CA). pip inside a virtualenv
# ignores the system store, so PIP_CERT points at a copy of the machine's CA
# bundle; the official image has python in /usr/local/bin, this one in
# /usr/bin (python-is-python3 provides `python`), and nothing refers to either.
#
# Idempotent: nothing is done when the image already exists. Needs root,
# podman and debootstrap (.ci/run installs them).
#
# Environment: BASE_IMAGE (the tag), DEBIAN_MIRROR and DEBIAN_SUITE (default:
# the mirror and release this machine's apt uses), HOST_CA_BUNDLE.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
HOST_CA_BUNDLE=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
IMAGE_CA_BUNDLE=/etc/ssl/certs/host-ca-bundle.pem

if podman image exists "$BASE_IMAGE"; then
    echo "base image $BASE_IMAGE exists"
    exit 0
fi

# The first Debian mirror of this machine's apt sources (deb822 or one-line).
apt_mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -vE 'security|updates' | grep -E '/debian/?$' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-$(apt_mirror)}

rootfs=$(mktemp -d /var/tmp/base-image.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR"
start=$SECONDS
debootstrap --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >/dev/null
echo "debootstrap took $((SECONDS - start)) s"

cp "$HOST_CA_BUNDLE" "$rootfs$IMAGE_CA_BUNDLE"
# What an image does not carry: package lists, caches, documentation.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*

start=$SECONDS
tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
    --change "ENV PIP_CERT=$IMAGE_CA_BUNDLE" \
    --change "ENV SSL_CERT_FILE=$IMAGE_CA_BUNDLE" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["python3"]' \
    --message "stand-in for $BASE_IMAGE: debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR" \
    - "$BASE_IMAGE" >/dev/null
echo "podman import took $((SECONDS - start)) s"
podman image exists "$BASE_IMAGE"
