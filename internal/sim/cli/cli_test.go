package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsageErrors: bad input exits 2 with a message that says what to do,
// before any cluster is booted.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\nkind: [unclosed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unsized := filepath.Join(dir, "unsized.yaml")
	if err := os.WriteFile(unsized, []byte("apiVersion: v1\nkind: Node\nmetadata: {name: big, labels: {node.kubernetes.io/instance-type: x9.huge}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noName := filepath.Join(dir, "noname.yaml")
	if err := os.WriteFile(noName, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no verb flag", []string{"--bogus"}, []string{"unknown flag: --bogus", "--help"}},
		{"unknown verb", []string{"launch"}, []string{`unknown command "launch"`}},
		{"run without -f", []string{"run"}, []string{"run needs at least one -f FILE"}},
		{"bad output", []string{"run", "-f", noName, "--output", "yaml"}, []string{`--output "yaml": use table or json`}},
		{"bad timing", []string{"run", "-f", noName, "--timing", "gke"}, []string{`unknown timing profile "gke": use one of eks, fast`}},
		{"yaml error names file and document", []string{"run", "-f", bad}, []string{bad + ": document 2"}},
		{"missing name", []string{"run", "-f", noName}, []string{noName + ":1: ConfigMap has no metadata.name"}},
		{"missing file", []string{"run", "-f", filepath.Join(dir, "nope.yaml")}, []string{"nope.yaml: no such file"}},
		{"bad node cpu", []string{"up", "--node-cpu", "lots"}, []string{`--node-cpu "lots"`}},
		{"bad zone", []string{"up", "--zones", "x"}, []string{`--zones "x"`}},
		{"unknown instance type", []string{"up", "--instance-type", "m5.huge"}, []string{`--instance-type: unknown instance type "m5.huge"`, "m5.large, m5.xlarge, m5.2xlarge"}},
		{"node of unknown type with no size", []string{"up", "-f", unsized}, []string{`node big: unknown instance type "x9.huge"`, "give the node's cpu and memory capacity"}},
		{"no nodes", []string{"up", "--nodes", "0"}, []string{"no nodes"}},
		{"stray argument", []string{"demo", "now"}, []string{`unknown command "now"`}},
		{"compare with keep", []string{"run", "-f", noName, "--compare", "--keep"}, []string{"--keep cannot be used with --compare"}},
		{"compare with huddle", []string{"run", "-f", noName, "--compare", "--huddle"}, []string{"--compare runs with and without huddle; drop --huddle"}},
		{"bad namespace", []string{"run", "-f", noName, "-n", "My_NS"}, []string{`--namespace "My_NS"`, "RFC 1123"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Run(tc.args, strings.NewReader(""), &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, exitUsage, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestHelpTeaches: every verb's help has an explanation, and run's has
// examples and the exit codes.
func TestHelpTeaches(t *testing.T) {
	for _, verb := range []string{"up", "run", "demo", "build"} {
		var stdout, stderr bytes.Buffer
		if code := Run([]string{verb, "--help"}, strings.NewReader(""), &stdout, &stderr); code != 0 {
			t.Fatalf("%s --help exit %d", verb, code)
		}
		if len(stdout.String()) < 300 {
			t.Errorf("%s --help is too short to teach:\n%s", verb, stdout.String())
		}
	}
	var stdout bytes.Buffer
	Run([]string{"run", "--help"}, strings.NewReader(""), &stdout, &stdout)
	for _, w := range []string{"helm template", "Exit status", "--timing", "--compare", "schemaVersion", "pre-install hooks", "huddle's own timers"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("run --help lacks %q", w)
		}
	}
}
