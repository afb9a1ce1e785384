// Package config embeds huddle's generated manifests (CRDs, RBAC) so tools
// such as huddle-sim can install them. Regenerate with hack/generate.sh.
package config

import "embed"

// Manifests holds crd/*.yaml and rbac/*.yaml.
//
//go:embed crd/*.yaml rbac/*.yaml
var Manifests embed.FS
