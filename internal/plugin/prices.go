package plugin

import (
	_ "embed"
	"fmt"
	"os"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Storage price keys, per GB-month.
const (
	PriceEBSGP3        = "ebs-gp3"
	PriceEFSStandard   = "efs-standard"
	PriceEFSStandardIA = "efs-standard-ia"
	PriceEFSOneZone    = "efs-one-zone"
	PriceEFSOneZoneIA  = "efs-one-zone-ia"
)

var priceKeys = []string{PriceEBSGP3, PriceEFSStandard, PriceEFSOneZone, PriceEFSStandardIA, PriceEFSOneZoneIA}

// Prices are storage prices of one region on one date: the format of
// --prices files (YAML or JSON).
type Prices struct {
	Region string `json:"region"`
	// AsOf is the date the prices were read, YYYY-MM-DD.
	AsOf string `json:"asOf"`
	// Source says where they were read.
	Source string `json:"source"`
	// GBMonth is the price in USD of one GB stored for a month, by
	// storage class: ebs-gp3, efs-standard, efs-standard-ia, efs-one-zone,
	// efs-one-zone-ia.
	GBMonth map[string]float64 `json:"gbMonth"`
}

//go:embed prices.yaml
var defaultPrices []byte

// DefaultPrices are the prices kubectl huddle ships with.
func DefaultPrices() Prices {
	p, err := parsePrices(defaultPrices)
	if err != nil {
		panic("embedded prices.yaml: " + err.Error())
	}
	return p
}

// LoadPrices reads a --prices file.
func LoadPrices(path string) (Prices, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Prices{}, fmt.Errorf("--prices: %w", err)
	}
	p, err := parsePrices(b)
	if err != nil {
		return Prices{}, fmt.Errorf("--prices %s: %w", path, err)
	}
	return p, nil
}

func parsePrices(b []byte) (Prices, error) {
	var p Prices
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return Prices{}, err
	}
	var missing []string
	for _, k := range priceKeys {
		v, ok := p.GBMonth[k]
		if !ok {
			missing = append(missing, k)
		} else if v < 0 {
			return Prices{}, fmt.Errorf("gbMonth.%s is negative (%g)", k, v)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return Prices{}, fmt.Errorf("gbMonth lacks %s (want USD per GB-month for each of %s)", strings.Join(missing, ", "), strings.Join(priceKeys, ", "))
	}
	if p.Region == "" || p.AsOf == "" {
		return Prices{}, fmt.Errorf("region and asOf are required (say which region's prices, read on which date)")
	}
	return p, nil
}
