package timing

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// z99 is the standard normal distribution's 99th percentile: a log-normal
// variable's p99 is exp(mu + z99*sigma).
const z99 = 2.3263478740408408

// Latency is how long one kind of cloud operation takes: a log-normal
// distribution given by its median and 99th percentile, as operations that
// wait on a remote system are distributed (most finish near the median, a
// few take several times longer), cut off at Max so that every draw is
// bounded.
type Latency struct {
	Median time.Duration
	P99    time.Duration
	// Max bounds every draw; it is at least P99, so the cut leaves the
	// median and the p99 as given.
	Max time.Duration
}

// Validate reports a latency whose figures are not 0 < Median <= P99 <= Max.
func (l Latency) Validate() error {
	if l.Median <= 0 || l.P99 < l.Median || l.Max < l.P99 {
		return fmt.Errorf("latency median %s, p99 %s, max %s: want 0 < median <= p99 <= max", l.Median, l.P99, l.Max)
	}
	return nil
}

// Draw returns one duration from the distribution, using r. A Latency with
// P99 equal to Median (or unset) is a constant.
func (l Latency) Draw(r *rand.Rand) time.Duration {
	if l.P99 <= l.Median {
		return l.Median
	}
	mu := math.Log(float64(l.Median))
	sigma := (math.Log(float64(l.P99)) - mu) / z99
	d := time.Duration(math.Exp(mu + sigma*r.NormFloat64()))
	if l.Max > 0 && d > l.Max {
		return l.Max
	}
	return d
}

// String reads like the docs' table: "5s (p99 20s, max 1m0s)".
func (l Latency) String() string {
	return fmt.Sprintf("%s (p99 %s, max %s)", l.Median, l.P99, l.Max)
}
