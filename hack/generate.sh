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
# The chart installs the CRD from a template, not from crds/ (which helm
# never upgrades): the same manifest, behind crds.install and kept on
# uninstall. A test in charts/ checks that the two stay equal.
crd=config/crd/huddle.io_huddles.yaml
if grep -q '{{' "$crd"; then
  echo "$crd contains '{{', which the chart's template would parse: escape it in hack/generate.sh" >&2
  exit 1
fi
{
  echo '{{- if .Values.crds.install }}'
  echo '# Generated from config/crd by hack/generate.sh; do not edit.'
  sed '/^  annotations:$/a\    helm.sh/resource-policy: keep' "$crd"
  echo '{{- end }}'
} >charts/huddle/templates/crd.yaml
echo "generated: api/v1alpha1/zz_generated.deepcopy.go config/crd config/rbac charts/huddle/templates/crd.yaml"
