#!/usr/bin/env bash
# Obtains what a real local node needs and prints the cache directory that holds its binaries:
# kubelet, kube-scheduler and kube-controller-manager built from the Go module proxy at the release
# kube.sh builds the API server of, a static `pause` binary, and pause-image.tar, a docker-archive
# image holding it whose name is in pause-image.ref (containerd's sandbox image: nothing can be
# pulled here). The container runtime comes from Debian: containerd, runc and
# containernetworking-plugins.
#
#   test/env/obtain/node.sh            -> prints <cache>/node-<k8s>-r<recipe>
#
# Needs: go (>= the version kubernetes' go.mod names); containerd, runc and the CNI plugins, which it
# installs with `apt-get install -y containerd runc containernetworking-plugins` when one is missing
# and this runs as root with apt-get. Exit code 3 (and one line on stderr naming what is missing)
# when they cannot be had: the node tests then skip.
set -euo pipefail

K8S_VERSION="${SYNCGOV_K8S_VERSION:-v1.36.3}"
CACHE="${SYNCGOV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/syncgov}"
# Bumped when the build recipe changes, so that a cache built by an older recipe is not reused.
RECIPE=1
OUT="$CACHE/node-$K8S_VERSION-r$RECIPE"
BINARIES=(kubelet kube-scheduler kube-controller-manager pause)
PACKAGES="containerd runc containernetworking-plugins"

log() { echo "node.sh: $*" >&2; }
# shellcheck source=k8s-module.sh
source "$(dirname "${BASH_SOURCE[0]}")/k8s-module.sh"

# --- containerd, runc, CNI plugins (Debian) -------------------------------------------------------
missing_tools() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v ctr >/dev/null || missing+=(ctr)
  [[ -x /usr/sbin/runc ]] || command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/host-local || -x /opt/cni/bin/host-local ]] || missing+=(containernetworking-plugins)
  echo "${missing[*]}"
}

mkdir -p "$CACHE"
missing="$(missing_tools)"
if [[ -n "$missing" ]]; then
  # One installer at a time; a second caller waits and then finds them installed.
  exec 8>"$CACHE/.node-tools.lock"
  flock 8
  missing="$(missing_tools)"
  if [[ -n "$missing" ]]; then
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
      echo "node.sh: missing $missing; install them as root with: apt-get install -y $PACKAGES" >&2
      exit 3
    fi
    log "installing $PACKAGES (missing: $missing)"
    export DEBIAN_FRONTEND=noninteractive
    # A stale package index is the usual reason for a failed install: refresh it once and retry.
    # shellcheck disable=SC2086
    if ! apt-get install -y $PACKAGES >&2; then
      apt-get update >&2 || true
      apt-get install -y $PACKAGES >&2 || true
    fi
    missing="$(missing_tools)"
    if [[ -n "$missing" ]]; then
      echo "node.sh: missing $missing; 'apt-get install -y $PACKAGES' failed (see above)" >&2
      exit 3
    fi
    # Debian starts the packaged containerd as a system service; the tests run their own.
    if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
      systemctl disable --now containerd >&2 || true
    fi
  fi
  exec 8>&-
fi

# --- kubelet, kube-scheduler, kube-controller-manager, pause --------------------------------------
cached() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$OUT/$b" ]] || return 1; done
  [[ -f "$OUT/pause-image.tar" && -f "$OUT/pause-image.ref" ]]
}

if cached; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "node.sh: 'go' is required to build kubelet and the control plane" >&2; exit 1; }
# One builder at a time: a second caller waits for the first and then finds the binaries.
exec 9>"$CACHE/.node-build.lock"
flock 9
if cached; then
  echo "$OUT"
  exit 0
fi

WORK="$(mktemp -d "$CACHE/.node-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
mkdir -p "$WORK/bin"

# pause: the sandbox's only process, holding the pod's namespaces until it is told to stop.
mkdir -p "$WORK/pause"
(
  cd "$WORK/pause"
  cat >go.mod <<EOF
module syncgov.local/pause

go 1.24
EOF
  cat >main.go <<'EOF'
// pause waits for SIGTERM or SIGINT, then exits: a pod sandbox's only process.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
}
EOF
  log "building pause"
  go build -trimpath -ldflags="-s -w" -o "$WORK/bin/pause" . >&2
)

# The pause image: a docker-archive (`ctr images import` reads it) with /pause as its only file.
PAUSE_REF="localhost/syncgov-pause:r$RECIPE"
mkdir -p "$WORK/pause-image/rootfs"
(
  cd "$WORK/pause-image"
  cp "$WORK/bin/pause" rootfs/pause
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 -C rootfs -cf layer.tar pause
  diff_id="sha256:$(sha256sum layer.tar | cut -d' ' -f1)"
  cat >config.json <<EOF
{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["$diff_id"]},"history":[{"created_by":"syncgov node.sh"}]}
EOF
  cat >manifest.json <<EOF
[{"Config":"config.json","RepoTags":["$PAUSE_REF"],"Layers":["layer.tar"]}]
EOF
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$WORK/bin/pause-image.tar" manifest.json config.json layer.tar
  echo "$PAUSE_REF" >"$WORK/bin/pause-image.ref"
)

# The three commands from one wrapper module (k8s-module.sh), in one build so they share its work.
mkdir -p "$WORK/node"
(
  cd "$WORK/node"
  k8s_wrapper_module syncgov.local/nodebuild "$K8S_VERSION" \
    k8s.io/kubernetes/cmd/kubelet/app \
    k8s.io/kubernetes/cmd/kube-scheduler/app \
    k8s.io/kubernetes/cmd/kube-controller-manager/app
  log "building kubelet, kube-scheduler, kube-controller-manager $K8S_VERSION (several minutes the first time)"
  go build -trimpath -ldflags="$(k8s_ldflags "$K8S_VERSION")" -o "$WORK/bin/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-controller-manager >&2
)

rm -rf "$OUT.tmp"
mv "$WORK/bin" "$OUT.tmp"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
log "cached in $OUT"
echo "$OUT"
