package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"k8s.io/apimachinery/pkg/api/resource"
)

// codeReserve is what huddle's container holds besides what Go allocates:
// the binary's code and data as the kernel pages them in, about 28 MiB
// resident (measured in the scale benchmark). The kernel charges those
// pages to the container's memory as well, so a Go limit equal to the
// container's would let the heap take their room: the kernel then drops
// the code pages and reads them back on every use, or kills the
// container.
const codeReserve = 32 << 20

// minMemoryLimit is the smallest container limit huddle accepts: below it
// Go would collect garbage almost without pause and still not fit.
const minMemoryLimit = 64 << 20

// setMemoryLimit sets Go's soft memory limit from the container's memory
// limit, given as a quantity in limit (the chart passes limits.memory in
// HUDDLE_MEMORY_LIMIT, as a number of bytes). It returns the limit set,
// or 0 when it set none: no container limit, or GOMEMLIMIT set, which Go
// has already applied and which wins (ignored then says so).
func setMemoryLimit(limit string) (set int64, ignored bool, err error) {
	if limit == "" {
		return 0, false, nil
	}
	q, err := resource.ParseQuantity(limit)
	if err != nil {
		return 0, false, fmt.Errorf("memory limit %q: %w (a quantity such as 512Mi or a number of bytes)", limit, err)
	}
	if q.Cmp(*resource.NewQuantity(minMemoryLimit, resource.BinarySI)) < 0 {
		return 0, false, fmt.Errorf("memory limit %q is below 64Mi, too little for huddle: raise the chart's resources.limits.memory (256Mi or more; see docs/install.md, Sizing)", limit)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, true, nil
	}
	// Go keeps to codeReserve below the container's limit. Value rounds
	// up and stops at the largest int64: a limit that large is no limit.
	goLimit := q.Value() - codeReserve
	debug.SetMemoryLimit(goLimit)
	return goLimit, false, nil
}
