#!/usr/bin/env bash
# Regenerates the committed generated code: deepcopy functions for
# api/v1alpha1 and the CRD and RBAC manifests under config/. Run after
# changing api/ or a +kubebuilder:rbac marker.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
gen() { (cd "$root/hack/tools" && GOWORK=off go tool controller-gen "$@"); }
gen object paths="$root/api/..."
gen crd paths="$root/api/..." output:crd:dir="$root/config/crd"
gen rbac:roleName=huddle paths="$root/internal/..." output:rbac:dir="$root/config/rbac"
echo "generated: api/v1alpha1/zz_generated.deepcopy.go config/crd config/rbac"
