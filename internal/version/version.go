// Package version holds huddle's release version: the one place it is
// set. `huddle --version` prints it, `make image` labels and tags the image
// with it, and the chart's appVersion must equal it (a chart test checks).
package version

// Version is huddle's release version (semantic versioning, no "v").
const Version = "0.1.0"

// Image is the repository huddle's image is published to; the chart's
// default image.repository.
const Image = "ghcr.io/huddle-io/huddle"
