package timing

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// quantile returns the q-quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[int(q*float64(len(sorted)-1)+0.5)]
}

// TestLatencyDrawsMatchProfiles draws many times from every latency of
// every profile and checks that the sample's median and p99 are the
// profile's, within tolerance, and that no draw exceeds the cap.
func TestLatencyDrawsMatchProfiles(t *testing.T) {
	const n = 200_000
	for _, name := range Names() {
		p, err := ByName(name)
		if err != nil {
			t.Fatal(err)
		}
		for op, l := range map[string]Latency{"attach": p.AttachLatency, "detach": p.DetachLatency, "provision": p.ProvisionLatency} {
			t.Run(name+"/"+op, func(t *testing.T) {
				if err := l.Validate(); err != nil {
					t.Fatal(err)
				}
				r := rand.New(rand.NewPCG(1, 2))
				sample := make([]time.Duration, n)
				for i := range sample {
					sample[i] = l.Draw(r)
				}
				slices.Sort(sample)
				within := func(what string, got, want time.Duration, tol float64) {
					if d := float64(got-want) / float64(want); d > tol || d < -tol {
						t.Errorf("%s %s, want %s ± %.0f%%", what, got, want, tol*100)
					}
				}
				within("median", quantile(sample, 0.5), l.Median, 0.02)
				within("p99", quantile(sample, 0.99), l.P99, 0.05)
				if maxDraw := sample[n-1]; maxDraw > l.Max {
					t.Errorf("a draw took %s, above the cap %s", maxDraw, l.Max)
				}
				if sample[0] <= 0 {
					t.Errorf("a draw took %s", sample[0])
				}
				t.Logf("median %s p99 %s max %s", quantile(sample, 0.5).Round(time.Millisecond), quantile(sample, 0.99).Round(time.Millisecond), sample[n-1].Round(time.Millisecond))
			})
		}
	}
}

// TestLatencyCapBinds: a cap below the distribution's tail cuts every draw
// above it, so the slowest draw equals the cap.
func TestLatencyCapBinds(t *testing.T) {
	l := Latency{Median: time.Second, P99: 10 * time.Second, Max: 10 * time.Second}
	r := rand.New(rand.NewPCG(3, 4))
	capped := 0
	for range 10_000 {
		if d := l.Draw(r); d > l.Max {
			t.Fatalf("draw %s above the cap %s", d, l.Max)
		} else if d == l.Max {
			capped++
		}
	}
	// 1% of draws lie above the p99, which is the cap here.
	if capped < 50 || capped > 150 {
		t.Errorf("%d of 10000 draws at the cap, want about 100", capped)
	}
}

// TestLatencyDrawsReproducible: the same seed gives the same draws.
func TestLatencyDrawsReproducible(t *testing.T) {
	l := EKS().AttachLatency
	a, b := rand.New(rand.NewPCG(42, 0)), rand.New(rand.NewPCG(42, 0))
	for i := range 100 {
		if x, y := l.Draw(a), l.Draw(b); x != y {
			t.Fatalf("draw %d: %s and %s with the same seed", i, x, y)
		}
	}
}

func TestLatencyValidate(t *testing.T) {
	for _, l := range []Latency{
		{},
		{Median: time.Second, P99: time.Millisecond, Max: time.Minute},
		{Median: time.Second, P99: 2 * time.Second, Max: time.Second},
	} {
		if l.Validate() == nil {
			t.Errorf("%s: valid, want an error", l)
		}
	}
}
