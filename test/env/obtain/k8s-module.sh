# Sourced by kube.sh and node.sh: how to build Kubernetes' commands from the Go module proxy.
#
# k8s.io/kubernetes' go.mod replaces every staging module (k8s.io/api, apimachinery, client-go, ...)
# with ./staging/src/...; outside its repository each must be replaced by the published v0.x.y module
# of the same release. A small wrapper module does that and imports the commands' app packages, so
# that `go mod tidy` records every dependency; then `go build k8s.io/kubernetes/cmd/<name>` builds.

# k8s_wrapper_module MODULE K8S_VERSION IMPORT...
#   Writes go.mod and main.go for module MODULE into the current directory, requiring
#   k8s.io/kubernetes@K8S_VERSION and importing each IMPORT package, and runs `go mod tidy`.
#   Logs through the caller's `log` function.
k8s_wrapper_module() {
  local module="$1" version="$2"
  shift 2
  log "fetching k8s.io/kubernetes@$version"
  local modfile staging_version go_line
  modfile="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  staging_version="v0.${version#v1.}"
  go_line="$(grep -E '^go [0-9.]+' "$modfile")"
  {
    echo "module $module"
    echo
    echo "$go_line"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$modfile" \
      | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >go.mod
  {
    echo "package main"
    echo
    local import
    for import in "$@"; do echo "import _ \"$import\""; done
    echo
    echo "func main() {}"
  } >main.go
  go mod tidy >&2
}

# k8s_ldflags K8S_VERSION
#   Prints the -ldflags for a command of that release: stripped, with the version the command reports
#   (/version, --version, the node's kubeletVersion) stamped at link time as the release build does.
k8s_ldflags() {
  local version="$1" minor pkg ldflags
  minor="${version#v1.}"; minor="${minor%%.*}"
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$version"
  echo "$ldflags"
}
