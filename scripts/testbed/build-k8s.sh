#!/usr/bin/env bash
# Builds the real API server test bed once per machine: kube-apiserver from
# k8s.io/kubernetes and etcd from go.etcd.io/etcd, both through the Go module
# proxy, into ${BINDGUARD_TESTBED_DIR:-/var/cache/bindguard/testbed}/bin.
#
# Neither is packaged by Debian. k8s.io/kubernetes cannot be built as a
# dependency as published: its go.mod replaces every k8s.io staging module
# with ./staging/..., which a dependency's replaces never reach. So a wrapper
# module requires k8s.io/kubernetes and replaces each of those staging modules
# with its published v0.X.Y. The list is read from kubernetes' own go.mod,
# so a new version's staging modules are picked up without editing this file.
# etcd's server module has replace directives too (go install refuses it), so
# it gets a wrapper main that calls etcdmain.Main.
#
# Idempotent: a binary is rebuilt only when missing or built from another
# version (read from its embedded build info with `go version -m`). A lock
# serialises concurrent runs; binaries are installed by rename, so a reader
# never sees half a file. Cold, it takes about 4 minutes on 2 cores.
#
# Usage: scripts/testbed/build-k8s.sh [--print-dir]
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.13}
DIR=${BINDGUARD_TESTBED_DIR:-/var/cache/bindguard/testbed}
GO=${GO:-go}
BIN=$DIR/bin

if [ "${1:-}" = --print-dir ]; then echo "$BIN"; exit 0; fi

# staging_version v1.37.2 -> v0.37.2: the staging modules are published as v0.MINOR.PATCH.
staging_version=v0.${K8S_VERSION#v1.}

# has_dep BINARY MODULE VERSION: whether BINARY was built with MODULE at VERSION.
has_dep() {
  [ -x "$1" ] || return 1
  "$GO" version -m "$1" 2>/dev/null | awk -v m="$2" -v v="$3" '
    ($1=="dep" || $1=="mod") && $2==m && $3==v {ok=1} END {exit !ok}'
}

mkdir -p "$BIN"
exec 9>"$DIR/.lock"
flock 9

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0

build_apiserver() {
  if has_dep "$BIN/kube-apiserver" k8s.io/kubernetes "$K8S_VERSION"; then
    echo "testbed: kube-apiserver $K8S_VERSION present"; return
  fi
  echo "testbed: building kube-apiserver $K8S_VERSION (about 4 minutes cold)"
  local mod=$work/kube-apiserver
  mkdir -p "$mod"
  local gomod
  gomod=$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | awk -F'"' '$2=="GoMod"{print $4}')
  [ -f "$gomod" ] || { echo "testbed: no go.mod for k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
  local staging
  staging=$(awk '$2=="=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod" | sort -u)
  [ -n "$staging" ] || { echo "testbed: no ./staging replaces in $gomod" >&2; exit 1; }
  echo "testbed: $(echo "$staging" | wc -l) staging modules replaced with $staging_version"
  {
    echo "module bindguard.testbed/kube-apiserver"
    echo
    awk '$1=="go" {print; exit}' "$gomod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in $staging; do echo "	$m => $m $staging_version"; done
    echo ")"
  } >"$mod/go.mod"
  cat >"$mod/main.go" <<'GO'
// Command kube-apiserver is the upstream API server, built from the module proxy for tests.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
  local v=${K8S_VERSION#v} ldflags
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=${v%%.*}"
  v=${v#*.}; ldflags+=" -X k8s.io/component-base/version.gitMinor=${v%%.*}"
  (cd "$mod" && "$GO" mod tidy && "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/.kube-apiserver.new" .)
  mv -f "$BIN/.kube-apiserver.new" "$BIN/kube-apiserver"
  has_dep "$BIN/kube-apiserver" k8s.io/kubernetes "$K8S_VERSION"
}

build_etcd() {
  if has_dep "$BIN/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"; then
    echo "testbed: etcd $ETCD_VERSION present"; return
  fi
  echo "testbed: building etcd $ETCD_VERSION"
  local mod=$work/etcd
  mkdir -p "$mod"
  # A go line makes the module graph pruned: without it, tidy fetches the
  # test dependencies of every dependency.
  printf 'module bindguard.testbed/etcd\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$("$GO" env GOVERSION | sed 's/^go//')" "$ETCD_VERSION" >"$mod/go.mod"
  cat >"$mod/main.go" <<'GO'
// Command etcd is the upstream etcd server, built from the module proxy for tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$mod" && "$GO" mod tidy && "$GO" build -trimpath -ldflags "-s -w" -o "$BIN/.etcd.new" .)
  mv -f "$BIN/.etcd.new" "$BIN/etcd"
  has_dep "$BIN/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
}

build_etcd
build_apiserver
echo "testbed: $BIN"
