#!/usr/bin/env bash
# Obtains what the container-image tests need and prints the local base image the Dockerfile is
# built on (its BASE build argument). No container registry is reachable from these machines, so the
# base is made here: a Debian minbase root filesystem (mmdebstrap), imported into podman, with Node
# and npm copied in. Everything is cached, keyed by version: the root filesystem tarball and the npm
# package under the syncgov cache, the imported and derived images in podman's image store.
#
#   test/env/obtain/image-base.sh [node-binary]
#       -> prints localhost/syncgov-node:<node>-npm<npm>-<suite>-r<recipe>
#
# node-binary: default the repository's Node 24 from the `node` npm package (node_modules/node/bin/node,
# the real binary, hard-linked there by the package's install script).
# Needs: podman, runc and mmdebstrap; when one is missing and this runs as root with apt-get, it runs
# `apt-get install -y podman runc mmdebstrap`. Exit code 3 (and one line on stderr naming what is
# missing) when they cannot be had: the image tests then skip.
#
# podman runs as these machines need it (ENVIRONMENT.md): runc rather than crun, which refuses the
# kernel's hybrid cgroup v1 mode, and cgroupfs rather than systemd.
#
# Trust: when this machine reaches the npm registry through a TLS-inspecting proxy, its npm trusts
# an extra CA (NODE_EXTRA_CA_CERTS, or npm's cafile). That bundle is copied into the base and named
# by NODE_EXTRA_CA_CERTS there, as a site's own base image would carry its CA, so that the
# Dockerfile's `npm ci` works here unchanged. SYNCGOV_IMAGE_CA_FILE names another bundle.
set -euo pipefail

SUITE="${SYNCGOV_IMAGE_SUITE:-bookworm}"
# npm for the base's build stages (`npm ci`): the `node` npm package ships the node binary only.
NPM_VERSION="${SYNCGOV_IMAGE_NPM_VERSION:-11.19.1}"
CACHE="${SYNCGOV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/syncgov}"
# Bumped when the recipe changes, so that a cache made by an older recipe is not reused.
RECIPE=1
RUNC=/usr/sbin/runc
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"

log() { echo "image-base.sh: $*" >&2; }

# --- podman, runc, mmdebstrap ---------------------------------------------------------------------
missing_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  [[ -x "$RUNC" ]] || missing+=(runc)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  echo "${missing[*]}"
}

mkdir -p "$CACHE"
# One caller at a time (apt, mmdebstrap, the image store); a second one waits and finds it all made.
exec 9>"$CACHE/.image-base.lock"
flock 9

missing="$(missing_tools)"
if [[ -n "$missing" ]]; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "image-base.sh: missing $missing; install them as root with: apt-get install -y podman runc mmdebstrap" >&2
    exit 3
  fi
  log "installing podman runc mmdebstrap (missing: $missing)"
  export DEBIAN_FRONTEND=noninteractive
  # A stale package index is the usual reason for a failed install: refresh it once and retry.
  if ! apt-get install -y podman runc mmdebstrap >&2; then
    apt-get update >&2 || true
    apt-get install -y podman runc mmdebstrap >&2 || true
  fi
  missing="$(missing_tools)"
  if [[ -n "$missing" ]]; then
    echo "image-base.sh: missing $missing; 'apt-get install -y podman runc mmdebstrap' failed (see above)" >&2
    exit 3
  fi
fi

podman_() { podman --runtime "$RUNC" --cgroup-manager cgroupfs "$@"; }

# --- Node and npm -----------------------------------------------------------------------------------
NODE_BIN="$(readlink -f "${1:-$REPO/node_modules/node/bin/node}")"
[[ -x "$NODE_BIN" ]] || { echo "image-base.sh: no node binary at $NODE_BIN (run npm ci first)" >&2; exit 1; }
NODE_VERSION="$("$NODE_BIN" --version)"
NODE_VERSION="${NODE_VERSION#v}"
CA_FILE="${SYNCGOV_IMAGE_CA_FILE:-${NODE_EXTRA_CA_CERTS:-}}"
if [[ -z "$CA_FILE" ]]; then
  CA_FILE="$(npm config get cafile 2>/dev/null || true)"
  [[ "$CA_FILE" == null || "$CA_FILE" == undefined ]] && CA_FILE=""
fi
[[ -n "$CA_FILE" && ! -f "$CA_FILE" ]] && { log "ignoring CA bundle $CA_FILE: not a file"; CA_FILE=""; }
# The bundle is part of the image's identity: another bundle makes another base.
CA_TAG=""
[[ -n "$CA_FILE" ]] && CA_TAG="-ca$(sha256sum "$CA_FILE" | cut -c1-12)"
IMAGE="localhost/syncgov-node:$NODE_VERSION-npm$NPM_VERSION-$SUITE$CA_TAG-r$RECIPE"
DEBIAN_IMAGE="localhost/syncgov-debian:$SUITE-minbase-r$RECIPE"

if podman_ image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi

WORK="$(mktemp -d "$CACHE/.image-base.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- the Debian root filesystem ---------------------------------------------------------------------
ROOTFS="$CACHE/debian-$SUITE-minbase-r$RECIPE/base.tar"
if [[ ! -f "$ROOTFS" ]]; then
  log "making a Debian $SUITE minbase root filesystem with mmdebstrap (about 30 s)"
  mmdebstrap --variant=minbase "$SUITE" "$WORK/base.tar" >&2
  mkdir -p "$(dirname "$ROOTFS")"
  mv "$WORK/base.tar" "$ROOTFS.tmp"
  mv "$ROOTFS.tmp" "$ROOTFS"
fi
if ! podman_ image exists "$DEBIAN_IMAGE"; then
  log "importing $ROOTFS as $DEBIAN_IMAGE"
  podman_ import "$ROOTFS" "$DEBIAN_IMAGE" >&2
fi

# --- npm: the registry's package bundles all of its dependencies, so unpacked it is a whole npm --------
NPM_TGZ="$CACHE/npm-$NPM_VERSION/npm-$NPM_VERSION.tgz"
if [[ ! -f "$NPM_TGZ" ]]; then
  log "fetching npm $NPM_VERSION from the npm registry"
  mkdir -p "$WORK/pack"
  (cd "$WORK/pack" && npm pack --silent "npm@$NPM_VERSION" >/dev/null)
  mkdir -p "$(dirname "$NPM_TGZ")"
  mv "$WORK/pack/npm-$NPM_VERSION.tgz" "$NPM_TGZ.tmp"
  mv "$NPM_TGZ.tmp" "$NPM_TGZ"
fi

# --- the base: Debian + node + npm, laid out as Node's own distribution (and the node images) --------
mkdir -p "$WORK/context/npm"
cp "$NODE_BIN" "$WORK/context/node"
tar -xzf "$NPM_TGZ" -C "$WORK/context/npm" --strip-components=1
TRUST=""
if [[ -n "$CA_FILE" ]]; then
  cp "$CA_FILE" "$WORK/context/ca-certificates.crt"
  TRUST="COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"
fi
cat >"$WORK/context/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$TRUST
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
# /tmp is a tmpfs here: npm leaves its compile cache there, which is no part of a base.
RUN --mount=type=tmpfs,target=/tmp ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && node --version && npm --version
EOF
log "building $IMAGE"
podman_ build --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host \
  -t "$IMAGE" -f "$WORK/context/Containerfile" "$WORK/context" >&2
log "made $IMAGE"
echo "$IMAGE"
