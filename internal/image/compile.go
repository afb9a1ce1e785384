package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// mainPackage is the binary the image runs, relative to the module root.
const mainPackage = "./cmd/huddle"

// parsePlatforms turns "linux/amd64"-style strings into platforms, refusing
// what the image cannot be: huddle's image is a Linux image, and a Go
// architecture the toolchain does not know fails later in compile anyway.
func parsePlatforms(specs []string) ([]v1.Platform, error) {
	if len(specs) == 0 {
		return nil, errors.New("no platforms to build")
	}
	seen := map[string]bool{}
	var platforms []v1.Platform
	for _, s := range specs {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			return nil, err
		}
		if p.OS != "linux" || p.Architecture == "" || p.OSVersion != "" {
			return nil, fmt.Errorf("platform %q: want linux/<arch>, such as linux/amd64", s)
		}
		if p.Variant != "" && p.Architecture != "arm" && !(p.Architecture == "arm64" && p.Variant == "v8") {
			return nil, fmt.Errorf("platform %q: only linux/arm takes a variant (v6, v7)", s)
		}
		if seen[p.String()] {
			return nil, fmt.Errorf("platform %q is given twice", s)
		}
		seen[p.String()] = true
		platforms = append(platforms, *p)
	}
	return platforms, nil
}

// goEnv is the environment of one cross-compile. CGO is off so the binary
// is static and runs on an image with no libc; the microarchitecture levels
// are pinned to the baseline so the image runs on every machine of its
// architecture, whatever GOAMD64 the person building happens to export.
func goEnv(p v1.Platform) ([]string, error) {
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	switch p.Architecture {
	case "amd64":
		env = append(env, "GOAMD64=v1")
	case "arm64":
		env = append(env, "GOARM64=v8.0")
	case "arm":
		switch p.Variant {
		case "v6":
			env = append(env, "GOARM=6")
		case "v7", "":
			env = append(env, "GOARM=7")
		default:
			return nil, fmt.Errorf("platform %s: unknown arm variant", p)
		}
	}
	return env, nil
}

// compile cross-compiles huddle for p into dir and returns the binary's
// path. -trimpath keeps the checkout's location out of the binary, so two
// checkouts of one commit build the same bytes.
func compile(ctx context.Context, srcDir string, p v1.Platform, dir string) (string, error) {
	env, err := goEnv(p)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "huddle-"+platformSlug(p))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, mainPackage)
	cmd.Dir = srcDir
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s for %s: %w\n%s", mainPackage, p, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// platformSlug names p in file names: "linux-amd64", "linux-arm-v7".
func platformSlug(p v1.Platform) string {
	return strings.ReplaceAll(p.String(), "/", "-")
}

// moduleRoot finds the go.mod above dir, so `go run ./hack/image` and the
// tests (run from internal/image) build the same tree.
func moduleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod in %s or above it; set Options.SourceDir to huddle's checkout", dir)
		}
	}
}
