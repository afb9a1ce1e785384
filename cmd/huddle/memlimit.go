package main

import (
	"fmt"
	"math"
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

// goMemoryLimit is the soft memory limit Go keeps to in a container whose
// memory limit is containerLimit: codeReserve below it, and never below
// half of it (a tiny limit is the operator's to fix, not a reason to
// collect without end).
func goMemoryLimit(containerLimit int64) int64 {
	return max(containerLimit-codeReserve, containerLimit/2)
}

// setMemoryLimit sets Go's soft memory limit from the container's memory
// limit, given as a quantity in limit (the chart passes limits.memory in
// HUDDLE_MEMORY_LIMIT). It returns the limit set, or 0 when it set none:
// no container limit, or GOMEMLIMIT set, which Go has already applied and
// which wins.
func setMemoryLimit(limit string) (int64, error) {
	if limit == "" || os.Getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(limit)
	if err != nil {
		return 0, fmt.Errorf("memory limit %q: %w (a quantity such as 512Mi or a number of bytes)", limit, err)
	}
	v, ok := q.AsInt64()
	if !ok || v <= 0 || v == math.MaxInt64 {
		return 0, fmt.Errorf("memory limit %q: want a positive number of bytes such as 512Mi", limit)
	}
	goLimit := goMemoryLimit(v)
	debug.SetMemoryLimit(goLimit)
	return goLimit, nil
}
