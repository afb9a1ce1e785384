// Package binaries builds the real control-plane components the simulator
// runs — etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
// kubectl — from pinned Go modules, and caches them.
//
// The pins live in modules/ (kube.mod, etcd.mod and their sums) and are
// embedded in huddle-sim, so a huddle-sim binary can build its control plane
// anywhere Go is installed. The cache key is a hash of those files and the
// Go toolchain: binaries are rebuilt only when a pin or the toolchain
// changes. A file lock lets several processes (test packages run in
// parallel) share one cache; the first builds, the rest wait.
package binaries

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

//go:embed modules/*
var modules embed.FS

// Set names the paths of one cached build of every component.
type Set struct {
	Etcd, APIServer, ControllerManager, Scheduler, Kubectl string
}

// KubernetesVersion is the Kubernetes release the simulator runs.
const KubernetesVersion = "v1.36.3"

// components are built from the kube module; paths are package import paths.
var components = []struct{ name, pkg string }{
	{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"},
	{"kube-controller-manager", "./cmd/kube-controller-manager"},
	{"kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"},
	{"kubectl", "k8s.io/kubernetes/cmd/kubectl"},
}

// DefaultCacheDir is where binaries are cached unless told otherwise:
// $HUDDLE_SIM_CACHE; else .cache/huddle-sim in the huddle checkout that
// contains the working directory (git-ignored), so tests and `go run` in a
// clone share one cache; else the user cache directory.
func DefaultCacheDir() string {
	if d := os.Getenv("HUDDLE_SIM_CACHE"); d != "" {
		return d
	}
	if root := checkoutRoot(); root != "" {
		return filepath.Join(root, ".cache", "huddle-sim")
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "huddle-sim")
	}
	return filepath.Join(os.TempDir(), "huddle-sim-cache")
}

// modulePath is the huddle module's path, as its go.mod declares it.
const modulePath = "github.com/huddle-io/huddle"

// checkoutRoot finds the huddle module root above the working directory.
func checkoutRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			if strings.TrimSpace(first) == "module "+modulePath {
				return dir
			}
			return ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Key identifies a build: the pinned module files and the Go toolchain.
func Key() (string, error) {
	h := sha256.New()
	entries, err := modules.ReadDir("modules")
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		b, err := modules.ReadFile("modules/" + e.Name())
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", e.Name(), len(b))
		h.Write(b)
	}
	goVersion, err := goEnv("GOVERSION")
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "%s/%s/%s", goVersion, runtime.GOOS, runtime.GOARCH)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Ensure returns the cached binaries, building them first if the cache has
// none for the current pins. Progress goes to progress (nil: discard).
func Ensure(ctx context.Context, cacheDir string, progress io.Writer) (Set, error) {
	if progress == nil {
		progress = io.Discard
	}
	key, err := Key()
	if err != nil {
		return Set{}, err
	}
	binDir := filepath.Join(cacheDir, "bin", key)
	set := Set{
		Etcd:              filepath.Join(binDir, "etcd"),
		APIServer:         filepath.Join(binDir, "kube-apiserver"),
		ControllerManager: filepath.Join(binDir, "kube-controller-manager"),
		Scheduler:         filepath.Join(binDir, "kube-scheduler"),
		Kubectl:           filepath.Join(binDir, "kubectl"),
	}
	done := filepath.Join(binDir, ".complete")
	if _, err := os.Stat(done); err == nil {
		return set, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Set{}, fmt.Errorf("create cache directory: %w", err)
	}
	unlock, err := lock(ctx, filepath.Join(cacheDir, "build.lock"), progress)
	if err != nil {
		return Set{}, err
	}
	defer unlock()
	if _, err := os.Stat(done); err == nil { // another process built it while we waited
		return set, nil
	}
	if err := build(ctx, cacheDir, key, binDir, progress); err != nil {
		return Set{}, err
	}
	return set, os.WriteFile(done, []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644)
}

func build(ctx context.Context, cacheDir, key, binDir string, progress io.Writer) error {
	if _, err := exec.LookPath("go"); err != nil {
		return errors.New("the Go toolchain is needed to build the simulated control plane once: install Go 1.26+ and put it on PATH")
	}
	src := filepath.Join(cacheDir, "src", key)
	if err := writeModules(src); err != nil {
		return err
	}
	start := time.Now()
	fmt.Fprintf(progress, "Building the control plane from pinned modules (Kubernetes %s, etcd): the first build takes about 13 minutes on 2 cores (module download included); later runs reuse %s\n", KubernetesVersion, binDir)
	stop := ticker(progress, start)
	defer stop()

	ldflags := strings.Join([]string{
		"-s", "-w",
		"-X k8s.io/component-base/version.gitVersion=" + KubernetesVersion,
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=36",
		"-X k8s.io/component-base/version.gitTreeState=clean",
		"-X k8s.io/client-go/pkg/version.gitVersion=" + KubernetesVersion,
	}, " ")
	fmt.Fprintln(progress, "  etcd ...")
	if err := goBuild(ctx, filepath.Join(src, "etcd"), filepath.Join(binDir, "etcd"), "-s -w", "go.etcd.io/etcd/server/v3"); err != nil {
		return err
	}
	for _, c := range components {
		fmt.Fprintf(progress, "  %s ...\n", c.name)
		if err := goBuild(ctx, filepath.Join(src, "kube"), filepath.Join(binDir, c.name), ldflags, c.pkg); err != nil {
			return err
		}
	}
	fmt.Fprintf(progress, "Control plane built in %s\n", time.Since(start).Round(time.Second))
	return nil
}

// writeModules lays the embedded pins out as two buildable modules.
func writeModules(src string) error {
	files := map[string]string{
		"kube/go.mod": "kube.mod",
		"kube/go.sum": "kube.sum",
		"kube/cmd/kube-controller-manager/main.go": "kube-controller-manager.go",
		"etcd/go.mod": "etcd.mod",
		"etcd/go.sum": "etcd.sum",
	}
	for dst, name := range files {
		b, err := modules.ReadFile("modules/" + name)
		if err != nil {
			return err
		}
		// The wrapper is excluded from the huddle module by a build
		// constraint; in the build module it is an ordinary main package.
		b = []byte(strings.Replace(string(b), "//go:build ignore\n\n", "", 1))
		p := filepath.Join(src, dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func goBuild(ctx context.Context, dir, out, ldflags, pkg string) error {
	env := []string{"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=mod -buildvcs=false"}
	if err := runGo(ctx, dir, env, out+".build.log", "build", "-trimpath", "-ldflags", ldflags, "-o", out+".tmp", pkg); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("building %s failed (is the Go module proxy reachable? set GOPROXY): %w", filepath.Base(out), err)
	}
	return os.Rename(out+".tmp", out)
}

// runGo runs the go command in dir. When ctx ends, go and the compilers
// and linkers it started are killed together; go's work directory (in a
// directory of ours, as go would not remove it when killed) and the
// partial output (-o's argument) are removed. A failure is told in one
// line, the last line go printed, with the file that holds all of its
// output.
func runGo(ctx context.Context, dir string, env []string, logPath string, args ...string) error {
	var partial string
	for i, a := range args {
		if a == "-o" && i+1 < len(args) {
			partial = args[i+1]
		}
	}
	work, err := os.MkdirTemp("", "huddle-sim-go-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), env...), "GOTMPDIR="+work)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err == nil {
		os.Remove(logPath)
		return nil
	}
	if partial != "" {
		os.Remove(partial)
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if werr := os.WriteFile(logPath, out, 0o644); werr != nil {
		return fmt.Errorf("%w: %s", err, tail(out, 1))
	}
	return fmt.Errorf("%w: %s; its output: %s", err, tail(out, 1), logPath)
}

func goEnv(name string) (string, error) {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w (is Go installed?)", name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// lock takes an exclusive flock on path, telling the user if it waits.
func lock(ctx context.Context, path string, progress io.Writer) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told {
			fmt.Fprintf(progress, "Waiting for another huddle-sim to finish building the control plane (%s)\n", path)
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// ticker prints elapsed time every 30 seconds so a long build shows life.
func ticker(w io.Writer, start time.Time) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(w, "  ... still building (%s)\n", time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done) }
}

func tail(b []byte, lines int) string {
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(s) > lines {
		s = s[len(s)-lines:]
	}
	return strings.Join(s, "\n")
}

// Huddle returns a huddle controller binary: built from the checkout that
// contains the working directory (into the cache; Go's build cache makes
// this quick when nothing changed), else the one next to the running
// executable, else one on PATH. Each checkout gets a binary of its own:
// several checkouts (git worktrees) share one cache, and a cluster of one
// restarts its huddle pods from that file long after it was built.
func Huddle(ctx context.Context, cacheDir string) (string, error) {
	if root := checkoutRoot(); root != "" {
		sum := sha256.Sum256([]byte(root))
		out := filepath.Join(cacheDir, "bin", "huddle-"+hex.EncodeToString(sum[:6]))
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return "", err
		}
		tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
		if err := runGo(ctx, root, nil, out+".build.log", "build", "-o", tmp, "./cmd/huddle"); err != nil {
			if ctx.Err() != nil {
				return "", err
			}
			return "", fmt.Errorf("build huddle from %s: %w", root, err)
		}
		return out, os.Rename(tmp, out)
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "huddle"); fileExists(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("huddle"); err == nil {
		return p, nil
	}
	return "", errors.New("no huddle binary: run huddle-sim from a huddle checkout (it builds ./cmd/huddle), or put the huddle binary next to huddle-sim or on PATH")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
