#!/usr/bin/env bash
# Builds prometheus and promtool from the Go module proxy into the syncgov cache, keyed by version,
# and prints the directory that holds the two binaries. Prometheus publishes its Go module as
# github.com/prometheus/prometheus v0.3xx.y for Prometheus 3.xx.y; it is built from source once and
# later calls return the cached directory at once.
#
#   test/env/obtain/prometheus.sh              -> prints <cache>/prometheus-<version>-r<recipe>
#   test/env/obtain/prometheus.sh --promtool   -> builds (or finds) promtool only, prints its dir
#
# The web UI's assets are not embedded (no `builtinassets` tag): the HTTP API, which is all the
# tests use, works without them. Needs: go (>= the version prometheus' go.mod names).
set -euo pipefail

PROM_MODULE_VERSION="${SYNCGOV_PROMETHEUS_VERSION:-v0.316.0}"
CACHE="${SYNCGOV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/syncgov}"
# Bumped when the build recipe changes, so that a cache built by an older recipe is not reused.
RECIPE=1
OUT="$CACHE/prometheus-$PROM_MODULE_VERSION-r$RECIPE"

ONLY_PROMTOOL=0
[[ "${1:-}" == "--promtool" ]] && ONLY_PROMTOOL=1

done_already() {
  [[ -x "$OUT/promtool" ]] || return 1
  [[ $ONLY_PROMTOOL == 1 || -x "$OUT/prometheus" ]]
}

if done_already; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "prometheus.sh: 'go' is required to build prometheus" >&2; exit 1; }
mkdir -p "$CACHE"
# One builder at a time: a second caller waits for the first and then finds the binaries.
exec 9>"$CACHE/.prometheus-build.lock"
flock 9
if done_already; then
  echo "$OUT"
  exit 0
fi

WORK="$(mktemp -d "$CACHE/.prometheus-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0

log() { echo "prometheus.sh: $*" >&2; }

# v0.316.0 -> 3.16.0: the version the binaries report (prometheus --version, /api/v1/status/buildinfo).
rest="${PROM_MODULE_VERSION#v0.3}"
release="3.$((10#${rest%%.*})).${rest#*.}"

(
  cd "$WORK"
  # A wrapper module: prometheus' go.mod has no replace lines, so its requirements resolve as they
  # are; `go get` of the command packages records exactly what they import.
  cat >go.mod <<EOF
module syncgov.local/prometheusbuild

go 1.24
EOF
  log "fetching github.com/prometheus/prometheus@$PROM_MODULE_VERSION"
  go get "github.com/prometheus/prometheus/cmd/promtool@$PROM_MODULE_VERSION" >&2
  pkg=github.com/prometheus/common/version
  ldflags="-s -w -X $pkg.Version=$release -X $pkg.Revision=$PROM_MODULE_VERSION"
  ldflags+=" -X $pkg.Branch=release -X $pkg.BuildUser=syncgov -X $pkg.BuildDate=19700101-00:00:00"
  log "building promtool $release"
  go build -trimpath -ldflags="$ldflags" -o "$WORK/promtool-bin" github.com/prometheus/prometheus/cmd/promtool >&2
  if [[ $ONLY_PROMTOOL == 0 ]]; then
    go get "github.com/prometheus/prometheus/cmd/prometheus@$PROM_MODULE_VERSION" >&2
    log "building prometheus $release (several minutes the first time)"
    go build -trimpath -ldflags="$ldflags" -o "$WORK/prometheus-bin" github.com/prometheus/prometheus/cmd/prometheus >&2
  fi
)

mkdir -p "$OUT.tmp"
[[ -x "$OUT/prometheus" ]] && cp "$OUT/prometheus" "$OUT.tmp/prometheus"
mv "$WORK/promtool-bin" "$OUT.tmp/promtool"
[[ -f "$WORK/prometheus-bin" ]] && mv "$WORK/prometheus-bin" "$OUT.tmp/prometheus"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
log "cached in $OUT"
echo "$OUT"
