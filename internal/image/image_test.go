package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/huddle-io/huddle/internal/version"
)

// entry is one file of a layer, as a test wants to see it.
type entry struct {
	hdr  *tar.Header
	body []byte
}

// readLayer reads an uncompressed layer into its entries, keyed by path
// without the leading "/" or trailing "/".
func readLayer(t *testing.T, r io.Reader) map[string]entry {
	t.Helper()
	files := map[string]entry{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("reading the layer: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", hdr.Name, err)
		}
		files[strings.Trim(hdr.Name, "/")] = entry{hdr: hdr, body: body}
	}
}

func TestRootfs(t *testing.T) {
	mtime := time.Unix(1700000000, 0)
	fs, err := rootfs([]byte("\x7fELF not really"), mtime)
	if err != nil {
		t.Fatal(err)
	}
	files := readLayer(t, bytes.NewReader(fs))

	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"etc", "etc/group", "etc/passwd", "huddle", "tmp"}; !slices.Equal(names, want) {
		t.Errorf("layer holds %v, want exactly %v (no shell, no /bin)", names, want)
	}
	for n, e := range files {
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 {
			t.Errorf("%s is owned by %d:%d, want 0:0", n, e.hdr.Uid, e.hdr.Gid)
		}
		if !e.hdr.ModTime.Equal(mtime) {
			t.Errorf("%s has mtime %v, want %v", n, e.hdr.ModTime, mtime)
		}
	}
	if h := files["huddle"].hdr; h.Typeflag != tar.TypeReg || h.Mode != 0o755 {
		t.Errorf("/huddle: type %q mode %o, want a regular file 0755", h.Typeflag, h.Mode)
	}
	if h := files["tmp"].hdr; h.Typeflag != tar.TypeDir || h.Mode != 0o1777 {
		t.Errorf("/tmp: type %q mode %o, want a directory 1777", h.Typeflag, h.Mode)
	}
	if got := string(files["etc/passwd"].body); !strings.Contains(got, "\nnonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd names no nonroot user 65532:\n%s", got)
	}
	if got := string(files["etc/group"].body); !strings.Contains(got, "\nnonroot:x:65532:\n") {
		t.Errorf("/etc/group names no nonroot group 65532:\n%s", got)
	}

	again, err := rootfs([]byte("\x7fELF not really"), mtime)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fs, again) {
		t.Error("the same binary and time gave two different layers")
	}
}

func TestParsePlatforms(t *testing.T) {
	for _, tc := range []struct {
		specs []string
		ok    bool
	}{
		{specs: []string{"linux/amd64", "linux/arm64"}, ok: true},
		{specs: []string{"linux/arm/v7"}, ok: true},
		{specs: []string{"linux/arm64/v8"}, ok: true},
		{specs: nil},
		{specs: []string{"windows/amd64"}},
		{specs: []string{"linux"}},
		{specs: []string{"linux/amd64/v3"}},
		{specs: []string{"linux/amd64", "linux/amd64"}},
	} {
		_, err := parsePlatforms(tc.specs)
		if (err == nil) != tc.ok {
			t.Errorf("parsePlatforms(%q): error %v, want ok=%v", tc.specs, err, tc.ok)
		}
	}
}

// TestDockerfileMatches keeps the Dockerfile's labels and default version
// the ones `make image` uses, so both ways of building describe the same
// image.
func TestDockerfileMatches(t *testing.T) {
	root, err := moduleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ARG VERSION=` + regexp.QuoteMeta(version.Version) + `$`).Match(df) {
		t.Errorf("the Dockerfile's ARG VERSION default is not version.Version %s", version.Version)
	}
	labels := map[string]string{}
	for _, m := range regexp.MustCompile(`(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"`).FindAllSubmatch(df, -1) {
		labels[string(m[1])] = string(m[2])
	}
	want := Labels("${VERSION}")
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("Dockerfile label %s=%q, want %q", k, labels[k], v)
		}
	}
	for k := range labels {
		if _, ok := want[k]; !ok {
			t.Errorf("Dockerfile label %s is not one make image sets", k)
		}
	}
}

// logWriter sends Build's progress to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles huddle for two platforms")
	}
	ctx := context.Background()
	res, err := Build(ctx, Options{OutDir: t.TempDir(), Progress: logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	ref := version.Image + ":" + version.Version
	if res.Ref != ref {
		t.Errorf("Ref = %s, want %s", res.Ref, ref)
	}

	// The layout has one entry, the index, named by its reference.
	lp, err := layout.FromPath(res.Layout)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	topm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(topm.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want 1", len(topm.Manifests))
	}
	if d := topm.Manifests[0]; d.Digest != res.Index || !d.MediaType.IsIndex() ||
		d.Annotations["org.opencontainers.image.ref.name"] != ref {
		t.Errorf("index.json entry is %s %s %v, want the index %s named %s", d.MediaType, d.Digest, d.Annotations, res.Index, ref)
	}
	idx, err := top.ImageIndex(res.Index)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
	}
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Errorf("index platforms = %v, want %v", platforms, want)
	}

	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for i, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if res.Images[i].Digest != d.Digest {
			t.Errorf("%s: Result says %s, the index %s", d.Platform, res.Images[i].Digest, d.Digest)
		}
		checkImage(t, img, *d.Platform, machine[d.Platform.Architecture])
		checkTarball(t, res.Images[i], ref, img)
	}

	// Reproducible: a second build of the same source gives the same bytes.
	// One platform is enough, and halves the extra compile time.
	again, err := Build(ctx, Options{OutDir: t.TempDir(), Platforms: []string{"linux/amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	if again.Images[0].Digest != res.Images[0].Digest {
		t.Errorf("rebuilding linux/amd64 gave %s, first build %s: the build is not reproducible", again.Images[0].Digest, res.Images[0].Digest)
	}
}

// checkImage checks one platform's config and its layer.
func checkImage(t *testing.T, img v1.Image, p v1.Platform, machine elf.Machine) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture {
		t.Errorf("%s: config is for %s/%s", p, cf.OS, cf.Architecture)
	}
	c := cf.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/huddle"}) || c.WorkingDir != "/" {
		t.Errorf("%s: User %q Entrypoint %q WorkingDir %q, want 65532:65532 [/huddle] /", p, c.User, c.Entrypoint, c.WorkingDir)
	}
	if v := c.Labels["org.opencontainers.image.version"]; v != version.Version {
		t.Errorf("%s: version label %q, want %s", p, v, version.Version)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%s: %d layers, want 1", p, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := readLayer(t, rc)
	for n := range files {
		if n == "bin" || strings.HasPrefix(n, "bin/") {
			t.Errorf("%s: the layer holds /%s; the image has no /bin, let alone a shell", p, n)
		}
	}
	huddle, ok := files["huddle"]
	if !ok || huddle.hdr.Mode&0o111 == 0 {
		t.Fatalf("%s: no executable /huddle in the layer", p)
	}
	f, err := elf.NewFile(bytes.NewReader(huddle.body))
	if err != nil {
		t.Fatalf("%s: /huddle is not an ELF binary: %v", p, err)
	}
	if f.Machine != machine {
		t.Errorf("%s: /huddle is built for %s, want %s", p, f.Machine, machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s: /huddle asks for a dynamic loader; it must be static (the image has no libc)", p)
		}
	}
}

// checkTarball loads the docker tarball the way `docker load` reads it and
// compares it with the image in the layout.
func checkTarball(t *testing.T, pi Platform, ref string, want v1.Image) {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(pi.Tarball, &tag)
	if err != nil {
		t.Fatalf("%s: loading %s as %s: %v", pi.Platform, pi.Tarball, ref, err)
	}
	// The manifest is the tarball's own (docker save has none to keep), but
	// config and layer must be the layout's.
	for _, digests := range []func(v1.Image) ([]v1.Hash, error){configDigest, layerDigests} {
		got, err := digests(img)
		if err != nil {
			t.Fatal(err)
		}
		wantd, err := digests(want)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, wantd) {
			t.Errorf("%s: the tarball holds %v, the layout %v", pi.Platform, got, wantd)
		}
	}
}

func configDigest(img v1.Image) ([]v1.Hash, error) {
	h, err := img.ConfigName()
	return []v1.Hash{h}, err
}

// layerDigests hashes the layers' compressed bytes as they are stored.
func layerDigests(img v1.Image) ([]v1.Hash, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	var hs []v1.Hash
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}
