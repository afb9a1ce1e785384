// Package image builds huddle's container image without a container
// engine: it cross-compiles cmd/huddle for each platform and assembles the
// image with go-containerregistry, FROM scratch, one layer. `make image`
// runs it (through hack/image); the Dockerfile at the repository root builds
// the same image with an engine.
//
// The build is reproducible: file times and the config's created time come
// from SOURCE_DATE_EPOCH (else the Unix epoch) and the binary is built with
// -trimpath, so one source tree always gives one digest.
package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/huddle-io/huddle/internal/version"
)

// DefaultPlatforms are the platforms `make image` builds: the two that EKS
// nodes (x86 and Graviton) run.
var DefaultPlatforms = []string{"linux/amd64", "linux/arm64"}

// DefaultOutDir is where the image is written, relative to the source
// directory: under bin/, which git ignores.
const DefaultOutDir = "bin/image"

// Options says what to build and where. The zero value builds huddle's
// release image for DefaultPlatforms into bin/image of the checkout the
// working directory is in.
type Options struct {
	// Version tags and labels the image; version.Version if empty. It
	// does not change the binary, whose version is version.Version.
	Version string
	// Repository is the image's name without a tag; version.Image if empty.
	Repository string
	// Platforms are "linux/<arch>" strings; DefaultPlatforms if empty.
	Platforms []string
	// OutDir receives the OCI layout and the tarballs; DefaultOutDir under
	// SourceDir if empty.
	OutDir string
	// SourceDir is huddle's module root; if empty, the go.mod above the
	// working directory.
	SourceDir string
	// Created stamps the config and every file; if zero, SOURCE_DATE_EPOCH
	// or else the Unix epoch, so that rebuilding changes no digest.
	Created time.Time
	// Progress receives a line per step; nothing is printed if nil.
	Progress io.Writer
}

// Result is what Build wrote.
type Result struct {
	// Ref is the tag the index and every tarball carry.
	Ref string
	// Layout is the OCI image layout directory holding the index.
	Layout string
	// Index is the digest of the multi-platform index: what a registry
	// reports for Ref after a push.
	Index v1.Hash
	// Images are the per-platform images, in the order of Options.Platforms.
	Images []Platform
}

// Platform is one platform's image.
type Platform struct {
	Platform v1.Platform
	// Digest is the image manifest's digest.
	Digest v1.Hash
	// Size is what a registry stores for the image: compressed layer,
	// config and manifest.
	Size int64
	// Tarball is the `docker load`-able file.
	Tarball string
}

// Build compiles huddle for every platform, assembles the images and writes
// them: an OCI layout with one multi-platform index tagged with the image's
// reference, and a docker tarball per platform. It replaces the layout a
// previous build left.
func Build(ctx context.Context, o Options) (Result, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Result{}, err
	}
	platforms, err := parsePlatforms(o.Platforms)
	if err != nil {
		return Result{}, err
	}
	tag, err := name.NewTag(o.Repository + ":" + o.Version)
	if err != nil {
		return Result{}, fmt.Errorf("image reference: %w", err)
	}
	binDir, err := os.MkdirTemp("", "huddle-image-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(binDir)

	res := Result{Ref: tag.String(), Layout: filepath.Join(o.OutDir, "oci")}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var images []v1.Image
	for _, p := range platforms {
		fmt.Fprintf(o.Progress, "compiling huddle for %s\n", p)
		start := time.Now()
		bin, err := compile(ctx, o.SourceDir, p, binDir)
		if err != nil {
			return Result{}, err
		}
		took := time.Since(start).Round(time.Second)
		img, err := assemble(bin, p, o)
		if err != nil {
			return Result{}, fmt.Errorf("image for %s: %w", p, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return Result{}, err
		}
		size, err := storedSize(img)
		if err != nil {
			return Result{}, err
		}
		fmt.Fprintf(o.Progress, "  %s: compiled in %s; image %s, %.1f MB compressed\n",
			p, took, digest, float64(size)/1e6)
		res.Images = append(res.Images, Platform{
			Platform: p,
			Digest:   digest,
			Size:     size,
			Tarball:  filepath.Join(o.OutDir, fmt.Sprintf("huddle-%s-%s.tar", o.Version, platformSlug(p))),
		})
		images = append(images, img)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	if res.Index, err = idx.Digest(); err != nil {
		return Result{}, err
	}

	if err := writeLayout(res.Layout, idx, res.Ref); err != nil {
		return Result{}, err
	}
	fmt.Fprintf(o.Progress, "wrote %s: OCI layout, index %s tagged %s\n", res.Layout, res.Index, res.Ref)
	for i, img := range images {
		pi := res.Images[i]
		if err := tarball.WriteToFile(pi.Tarball, tag, img); err != nil {
			return Result{}, fmt.Errorf("writing %s: %w", pi.Tarball, err)
		}
		fmt.Fprintf(o.Progress, "wrote %s: %s, for docker load\n", pi.Tarball, pi.Platform)
	}
	return res, nil
}

// withDefaults fills what o leaves empty.
func (o Options) withDefaults() (Options, error) {
	if o.Version == "" {
		o.Version = version.Version
	}
	if o.Repository == "" {
		o.Repository = version.Image
	}
	if len(o.Platforms) == 0 {
		o.Platforms = DefaultPlatforms
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.SourceDir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return o, err
		}
		if o.SourceDir, err = moduleRoot(wd); err != nil {
			return o, err
		}
	}
	if o.OutDir == "" {
		o.OutDir = filepath.Join(o.SourceDir, DefaultOutDir)
	}
	if o.Created.IsZero() {
		created, err := sourceDateEpoch()
		if err != nil {
			return o, err
		}
		o.Created = created
	}
	o.Created = o.Created.UTC()
	return o, nil
}

// sourceDateEpoch is the time reproducible builds agree on
// (https://reproducible-builds.org/specs/source-date-epoch/): the
// SOURCE_DATE_EPOCH variable if set, else the Unix epoch.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds: %w", s, err)
	}
	return time.Unix(sec, 0), nil
}

// assemble makes the image of one platform: scratch, one layer, a config
// that runs /huddle as nonroot.
func assemble(bin string, p v1.Platform, o Options) (v1.Image, error) {
	huddle, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	fs, err := rootfs(huddle, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(fs)), nil },
		tarball.WithMediaType(types.OCILayer),
		// Pushed once, pulled by every node: worth the slower compression.
		tarball.WithCompressionLevel(gzip.BestCompression),
		// The digest, the layout and every tarball read the compressed
		// layer; compress it once.
		tarball.WithCompressedCaching,
	)
	if err != nil {
		return nil, err
	}

	user := strconv.Itoa(NonRoot) + ":" + strconv.Itoa(NonRoot)
	created := v1.Time{Time: o.Created}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Created:      created,
		OS:           p.OS,
		Architecture: p.Architecture,
		Variant:      p.Variant,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			User:       user,
			Entrypoint: []string{"/huddle"},
			WorkingDir: "/",
			Labels:     Labels(o.Version),
		},
	})
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   created,
			CreatedBy: "make image (internal/image): /huddle, /etc/passwd, /etc/group, /tmp",
		},
	})
}

// Labels are the OCI labels of huddle's image at version v; the Dockerfile
// sets the same ones.
func Labels(v string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "huddle",
		"org.opencontainers.image.version":     v,
		"org.opencontainers.image.source":      "https://github.com/huddle-io/huddle",
		"org.opencontainers.image.description": "Keeps the pods that share a ReadWriteOnce volume on the node that holds it.",
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

// storedSize is the bytes a registry stores for img.
func storedSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size, nil
}

// writeLayout writes idx as the only entry of a fresh OCI layout at dir,
// annotated with ref so `skopeo copy oci:<dir>:<ref>` finds it and
// `crane push <dir>` pushes the index itself.
func writeLayout(dir string, idx v1.ImageIndex, ref string) error {
	// Blobs of an earlier build would linger in blobs/ otherwise.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	l, err := layout.Write(dir, mutate.IndexMediaType(empty.Index, types.OCIImageIndex))
	if err != nil {
		return fmt.Errorf("writing %s: %w", dir, err)
	}
	err = l.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref,
	}))
	if err != nil {
		return fmt.Errorf("writing %s: %w", dir, err)
	}
	return nil
}
