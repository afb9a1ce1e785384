#!/usr/bin/env bash
# Regenerates the committed generated code: deepcopy functions for
# api/v1alpha1, and the CRD and RBAC manifests under config/. Run after
# changing api/ or a +kubebuilder:rbac marker. controller-gen's version is
# pinned in hack/tools/go.mod.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOWORK=off go -C "$root/hack/tools" build -o "$bin/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen
cd "$root"
"$bin/controller-gen" object paths=./api/...
"$bin/controller-gen" crd paths=./api/... output:crd:dir=config/crd
"$bin/controller-gen" rbac:roleName=huddle paths=./internal/... output:rbac:dir=config/rbac
echo "generated: api/v1alpha1/zz_generated.deepcopy.go config/crd config/rbac"
