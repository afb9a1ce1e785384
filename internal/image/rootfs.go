package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"time"
)

// NonRoot is the user and group huddle runs as: distroless's "nonroot",
// so the engine-free image and the Dockerfile's distroless image run the
// container as the same uid and a pod's securityContext fits both.
const NonRoot = 65532

// passwd and group name the users the image knows. Without them a process
// running as 65532 has no name, and libraries that look the user up (for a
// home directory, say) fail; the lines are distroless's, so HOME is the same
// in both images.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\n" +
		"nobody:x:65534:\n" +
		"nonroot:x:65532:\n"
)

// rootfs returns the image's only layer, an uncompressed tar: /huddle, the
// user and group files, and an empty /tmp. Everything is owned by root and
// stamped with mtime, so the same binary always gives the same bytes; there
// is no shell, nothing to exec into but huddle.
func rootfs(huddle []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name string
		mode int64
		body []byte
		dir  bool
	}{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "huddle", mode: 0o755, body: huddle},
		// Sticky and world-writable like any /tmp: without --cert-dir
		// huddle writes its webhook certificate to a temporary directory.
		{name: "tmp/", mode: 0o1777, dir: true},
	}
	for _, e := range entries {
		hdr := &tar.Header{
			Name:     e.name,
			Mode:     e.mode,
			Size:     int64(len(e.body)),
			ModTime:  mtime,
			Typeflag: tar.TypeReg,
			// PAX would add access and change times; USTAR holds exactly
			// what is set here.
			Format: tar.FormatUSTAR,
		}
		if e.dir {
			hdr.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing %s into the layer: %w", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("writing %s into the layer: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
