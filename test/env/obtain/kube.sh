#!/usr/bin/env bash
# Builds etcd and kube-apiserver from the Go module proxy into the syncgov cache, keyed by version,
# and prints the directory that holds the two binaries. Neither is packaged anywhere these machines
# reach, so they are built from source once; later calls return the cached directory at once.
#
#   test/env/obtain/kube.sh            -> prints <cache>/kube-<k8s>-etcd-<etcd>
#
# Needs: go (>= the version kubernetes' go.mod names). Build memory peaks at a few GiB.
set -euo pipefail

K8S_VERSION="${SYNCGOV_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${SYNCGOV_ETCD_VERSION:-v3.6.8}"
CACHE="${SYNCGOV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/syncgov}"
# Bumped when the build recipe changes, so that a cache built by an older recipe is not reused.
RECIPE=2
OUT="$CACHE/kube-$K8S_VERSION-etcd-$ETCD_VERSION-r$RECIPE"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" ]]; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "kube.sh: 'go' is required to build etcd and kube-apiserver" >&2; exit 1; }
mkdir -p "$CACHE"
# One builder at a time: a second caller waits for the first and then finds the binaries.
exec 9>"$CACHE/.kube-build.lock"
flock 9
if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" ]]; then
  echo "$OUT"
  exit 0
fi

WORK="$(mktemp -d "$CACHE/.kube-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0

log() { echo "kube.sh: $*" >&2; }
# shellcheck source=k8s-module.sh
source "$(dirname "${BASH_SOURCE[0]}")/k8s-module.sh"

# etcd: a wrapper module requiring the server module; etcd's own replace lines point at sibling
# directories of its repository and are ignored outside its main module.
mkdir -p "$WORK/etcd"
(
  cd "$WORK/etcd"
  cat >go.mod <<EOF
module syncgov.local/etcdbuild

go 1.24
EOF
  cat >main.go <<'EOF'
package main

import _ "go.etcd.io/etcd/server/v3/etcdmain"

func main() {}
EOF
  log "fetching go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  log "building etcd $ETCD_VERSION"
  go build -trimpath -ldflags="-s -w" -o "$WORK/etcd-bin" go.etcd.io/etcd/server/v3 >&2
)

# kube-apiserver: a wrapper module replacing kubernetes' staging modules (k8s-module.sh).
mkdir -p "$WORK/kube"
(
  cd "$WORK/kube"
  k8s_wrapper_module syncgov.local/kubebuild "$K8S_VERSION" k8s.io/kubernetes/cmd/kube-apiserver/app
  log "building kube-apiserver $K8S_VERSION (several minutes the first time)"
  go build -trimpath -ldflags="$(k8s_ldflags "$K8S_VERSION")" -o "$WORK/kube-apiserver-bin" k8s.io/kubernetes/cmd/kube-apiserver >&2
)

mkdir -p "$OUT.tmp"
mv "$WORK/etcd-bin" "$OUT.tmp/etcd"
mv "$WORK/kube-apiserver-bin" "$OUT.tmp/kube-apiserver"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
log "cached in $OUT"
echo "$OUT"
