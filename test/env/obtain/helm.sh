#!/usr/bin/env bash
# Builds the helm CLI from the Go module proxy into the syncgov cache, keyed by version, and prints
# the path of the binary. Helm is not packaged anywhere these machines reach, so it is built from
# source once; later calls return the cached binary at once.
#
#   test/env/obtain/helm.sh            -> prints <cache>/helm-<version>-r<recipe>/helm
#
# Needs: go (>= the version helm's go.mod names). Build memory peaks at about 2 GiB.
set -euo pipefail

HELM_VERSION="${SYNCGOV_HELM_VERSION:-v3.22.0}"
CACHE="${SYNCGOV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/syncgov}"
# Bumped when the build recipe changes, so that a cache built by an older recipe is not reused.
RECIPE=1
OUT="$CACHE/helm-$HELM_VERSION-r$RECIPE"

if [[ -x "$OUT/helm" ]]; then
  echo "$OUT/helm"
  exit 0
fi

command -v go >/dev/null || { echo "helm.sh: 'go' is required to build helm" >&2; exit 1; }
mkdir -p "$CACHE"
# One builder at a time: a second caller waits for the first and then finds the binary.
exec 9>"$CACHE/.helm-build.lock"
flock 9
if [[ -x "$OUT/helm" ]]; then
  echo "$OUT/helm"
  exit 0
fi

WORK="$(mktemp -d "$CACHE/.helm-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0

log() { echo "helm.sh: $*" >&2; }

# A wrapper module that requires helm: helm's go.mod has no replace lines, so its requirements
# resolve as they are; `go get` of the command package records exactly what cmd/helm imports.
(
  cd "$WORK"
  cat >go.mod <<EOF
module syncgov.local/helmbuild

go 1.24
EOF
  log "fetching helm.sh/helm/v3@$HELM_VERSION"
  go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  # As helm's Makefile stamps them: the version `helm version` reports, and the Kubernetes version
  # that `helm template` and `helm lint` assume (the minor of the client-go helm is built with).
  client_go="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
  k8s_minor="${client_go#v0.}"; k8s_minor="${k8s_minor%%.*}"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  log "building helm $HELM_VERSION (a few minutes the first time)"
  go build -trimpath -ldflags="$ldflags" -o "$WORK/helm-bin" helm.sh/helm/v3/cmd/helm >&2
)

mkdir -p "$OUT.tmp"
mv "$WORK/helm-bin" "$OUT.tmp/helm"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
log "cached in $OUT"
echo "$OUT/helm"
