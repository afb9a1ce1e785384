package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/huddle-io/huddle/internal/plugin"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// run runs kubectl huddle with args and returns its output and error.
func run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := plugin.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &out})
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestPlanGolden: plan's output for each manifest is testdata/<name>.golden
// (go test ./cmd/kubectl-huddle/... -update rewrites them).
func TestPlanGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		// want are facts the golden file must state, so a wrong -update
		// is caught too.
		want []string
	}{
		{"one-claim", nil, []string{
			"HUDDLE app/files (50Gi, 4 pods, 5 during rolling updates)",
			"Deployment/web                      3             1 CPU", // the init container's 1 CPU, not the app's 500m
			"3350m CPU, 3712Mi memory, 5 pods",
			"fits:                               yes",
			"DaemonSets (100m CPU, 200Mi memory, 1 pod)",
			"EBS gp3 + huddle                    RWO     4.00",
			"EFS Standard                        RWX     15.00",
		}},
		{"two-claims", nil, []string{
			"HUDDLE uploads (100Gi, 4 pods, 5 during rolling updates)",
			"HUDDLE cache (20Gi, 5 pods, 6 during rolling updates)",
			"Pod/uploader", "Job/warm-cache                      2",
			"lock (ReadWriteOncePod):      not huddled",
			"shared-docs (ReadWriteMany):  not huddled",
			"db (ReadWriteOnce):           mounted by one pod (Deployment/db)",
			"DaemonSet/scanner:",
		}},
		{"statefulset", nil, []string{
			"StatefulSet/search                  3",
			"2 CPU, 8Gi memory, 5 pods",
			"PER-POD CLAIMS",
			"volumeClaimTemplate data (10Gi ReadWriteOnce):  one claim per pod (3)",
		}},
		{"too-big", []string{"--instance-type", "m5.large"}, []string{
			"against one m5.large node (allocatable 1930m CPU",
			"of which the EKS add-ons' DaemonSets take 180m CPU, 104Mi memory, 4 pods",
			"fits:                               NO: node m5.large lacks 3250m CPU", // 5 CPU less 1930m allocatable plus the add-ons' 180m
			"smallest types that fit:            m5.2xlarge,",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join("testdata", tc.name+".yaml")
			out, err := run(t, "", append([]string{"plan", "-f", path}, tc.args...)...)
			if err != nil {
				t.Fatalf("plan: %v\n%s", err, out)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/kubectl-huddle/... -update to create it)", err)
			}
			if out != string(want) {
				t.Errorf("plan -f %s differs from %s (rerun with -update if the change is intended):\n%s", path, golden, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
		})
	}
}

// TestPlanStdinAndJSON: -f - reads standard input; -o json is the report.
func TestPlanStdinAndJSON(t *testing.T) {
	in, err := os.ReadFile("testdata/one-claim.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, string(in), "plan", "-f", "-", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, w := range []string{`"file": "-"`, `"claim": "app/files"`, `"demand": "3350m CPU, 3712Mi memory, 5 pods"`, `"monthlyUSD": 4`, `"region": "us-east-1"`} {
		if !strings.Contains(out, w) {
			t.Errorf("json lacks %s:\n%s", w, out)
		}
	}
}

// TestPlanErrors: each error names what is wrong and what to do.
func TestPlanErrors(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.yaml")
	if err := os.WriteFile(prices, []byte("region: eu-west-1\nasOf: \"2025-06-01\"\ngbMonth: {ebs-gp3: 0.088}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"bad file", []string{"plan", "-f", "testdata/bad.yaml"}, []string{"testdata/bad.yaml: document 1 does not parse", "line 3"}},
		{"missing file", []string{"plan", "-f", "testdata/nope.yaml"}, []string{"-f testdata/nope.yaml", "no such file"}},
		{"no file", []string{"plan"}, []string{"-f FILE", "-f -"}},
		{"unknown type", []string{"plan", "-f", "testdata/one-claim.yaml", "--instance-type", "m9.huge"}, []string{`unknown instance type "m9.huge"`, "m5.xlarge", "r6i.4xlarge"}},
		{"nothing shared", []string{"plan", "-f", "testdata/nothing-shared.yaml"}, []string{"nothing to huddle in testdata/nothing-shared.yaml", "mounted by two or more pods"}},
		{"both targets", []string{"plan", "-f", "testdata/one-claim.yaml", "--from-cluster", "--instance-type", "m5.large"}, []string{"exclude each other"}},
		{"bad prices", []string{"plan", "-f", "testdata/one-claim.yaml", "--prices", prices}, []string{"gbMonth lacks efs-one-zone, efs-one-zone-ia, efs-standard, efs-standard-ia"}},
		{"bad output", []string{"plan", "-f", "testdata/one-claim.yaml", "-o", "xml"}, []string{`unknown output format "xml"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, "", tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestPlanPricesFile: --prices replaces the built-in table.
func TestPlanPricesFile(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.yaml")
	body := "region: eu-west-1\nasOf: \"2025-06-01\"\nsource: test\ngbMonth: {ebs-gp3: 0.088, efs-standard: 0.33, efs-standard-ia: 0.0176, efs-one-zone: 0.176, efs-one-zone-ia: 0.0146}\n"
	if err := os.WriteFile(prices, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "", "plan", "-f", "testdata/one-claim.yaml", "--prices", prices)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, w := range []string{"EBS gp3 + huddle                    RWO     4.40", "EFS Standard                        RWX     16.50", "Prices: eu-west-1, as of 2025-06-01; test"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
