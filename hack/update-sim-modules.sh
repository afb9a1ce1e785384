#!/usr/bin/env bash
# Regenerates the sums of the simulator's pinned control-plane modules
# (internal/sim/binaries/modules/*.mod) after a version in them changed:
# lays each out as a real module in a temp dir, runs `go mod tidy`, copies
# go.mod and go.sum back.
set -euo pipefail
cd "$(dirname "$0")/../internal/sim/binaries/modules"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in kube etcd; do
  mkdir -p "$tmp/$m"
  cp "$m.mod" "$tmp/$m/go.mod"
  [ -f "$m.sum" ] && cp "$m.sum" "$tmp/$m/go.sum"
  if [ "$m" = kube ]; then
    mkdir -p "$tmp/kube/cmd/kube-controller-manager"
    sed '/^\/\/go:build ignore$/d' kube-controller-manager.go > "$tmp/kube/cmd/kube-controller-manager/main.go"
  fi
  (cd "$tmp/$m" && GOWORK=off go mod tidy)
  cp "$tmp/$m/go.mod" "$m.mod"
  cp "$tmp/$m/go.sum" "$m.sum"
  echo "updated $m.mod $m.sum"
done
