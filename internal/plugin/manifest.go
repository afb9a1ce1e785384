package plugin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// Manifest is the objects of a -f file that plan reads.
type Manifest struct {
	// Path is the file as given ("-" for standard input).
	Path    string
	Objects []runtime.Object
	// Skipped counts objects of kinds plan does not read (custom
	// resources, Services, ConfigMaps...).
	Skipped int
}

// ReadManifest reads the YAML or JSON documents of path ("-": stdin), as
// kubectl apply -f and helm template write them. A document that does not
// parse is an error naming the file and the document's number; objects of
// kinds the client does not know are counted and skipped.
func ReadManifest(path string, stdin io.Reader) (*Manifest, error) {
	var r io.Reader
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("-f %s: %w", path, err)
		}
		defer f.Close()
		r = f
	}
	m := &Manifest{Path: path}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	decode := scheme.Codecs.UniversalDeserializer().Decode
	for doc := 1; ; doc++ {
		b, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, doc, err)
		}
		if len(bytes.TrimSpace(stripComments(b))) == 0 {
			continue
		}
		obj, _, err := decode(b, nil, nil)
		switch {
		case runtime.IsNotRegisteredError(err):
			m.Skipped++
			continue
		case err != nil:
			return nil, fmt.Errorf("%s: document %d does not parse as a Kubernetes object: %w", path, doc, err)
		}
		m.add(obj)
	}
	return m, nil
}

// add appends obj, or the items of a List.
func (m *Manifest) add(obj runtime.Object) {
	list, ok := obj.(*corev1.List)
	if !ok {
		m.Objects = append(m.Objects, obj)
		return
	}
	for _, raw := range list.Items {
		item, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw.Raw, nil, nil)
		if err != nil {
			m.Skipped++
			continue
		}
		m.add(item)
	}
}

// stripComments drops YAML comment lines, so a document of only comments
// (helm template writes "# Source: ..." before each) counts as empty.
func stripComments(b []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
