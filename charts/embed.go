// Package charts embeds huddle's Helm chart (charts/huddle) so that
// huddle-sim installs exactly what users install, and tests render it with
// the real Helm SDK without a cluster.
package charts

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
)

// files holds the chart directory; "all:" keeps .helmignore.
//
//go:embed all:huddle
var files embed.FS

// Name is the chart's directory and name.
const Name = "huddle"

// Load returns the embedded chart, as `helm install ./charts/huddle` loads
// the directory.
func Load() (*chart.Chart, error) {
	var buffered []*archive.BufferedFile
	err := fs.WalkDir(files, Name, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		buffered = append(buffered, &archive.BufferedFile{Name: strings.TrimPrefix(p, Name+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the embedded chart: %w", err)
	}
	ch, err := loader.LoadFiles(buffered)
	if err != nil {
		return nil, fmt.Errorf("load the embedded chart %s: %w", Name, err)
	}
	return ch, nil
}

// Render renders the chart with values over its defaults for a release
// installed in namespace, as `helm template` does: values are checked
// against values.schema.json first. It returns each template's output by
// its path (huddle/templates/deployment.yaml); empty outputs and partials
// are left out.
func Render(values map[string]any, release, namespace string) (map[string]string, error) {
	ch, err := Load()
	if err != nil {
		return nil, err
	}
	opts := common.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValues(ch, values, opts, common.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	for name, text := range out {
		if strings.TrimSpace(text) == "" || strings.HasPrefix(path.Base(name), "_") {
			delete(out, name)
		}
	}
	return out, nil
}
