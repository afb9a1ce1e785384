// Command image builds huddle's container image without a container engine
// (`make image`). The work is in internal/image; this is flags and output.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/huddle-io/huddle/internal/image"
	"github.com/huddle-io/huddle/internal/version"
)

const usage = `Usage: go run ./hack/image [flags]

Builds huddle's container image without a container engine: cross-compiles
./cmd/huddle (static, CGO off) for each platform and assembles a one-layer
image FROM scratch that runs /huddle as 65532:65532 (nonroot). The same
source gives the same digests (times come from SOURCE_DATE_EPOCH, else 1970).

Writes, under --out:
  oci/    an OCI image layout holding one multi-platform index,
          tagged %[1]s
  huddle-%[2]s-linux-<arch>.tar
          one per platform, for docker load

Push it (see docs/image.md for ECR and GHCR logins):
  crane push %[3]s/oci <registry>/huddle:%[2]s
  skopeo copy --all oci:%[3]s/oci:%[1]s docker://<registry>/huddle:%[2]s
Or load one platform into a local engine:
  docker load -i %[3]s/huddle-%[2]s-linux-amd64.tar

Flags:
`

func main() {
	var (
		out        = flag.String("out", "", "directory to write the image into (default bin/image in the checkout)")
		platforms  = flag.String("platforms", strings.Join(image.DefaultPlatforms, ","), "comma-separated platforms to build")
		repository = flag.String("repository", version.Image, "image name the index and the tarballs are tagged with, without the tag")
	)
	flag.Usage = func() {
		ref := version.Image + ":" + version.Version
		fmt.Fprintf(flag.CommandLine.Output(), usage, ref, version.Version, image.DefaultOutDir)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	opts := image.Options{
		Repository: *repository,
		Platforms:  strings.Split(*platforms, ","),
		OutDir:     *out,
		Progress:   os.Stdout,
	}
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(opts image.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := image.Build(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Printf("%s  index %s\n", res.Ref, res.Index)
	return nil
}
