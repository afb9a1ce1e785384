package charts

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestSchemaRejects: a bad value is refused before anything renders, with
// the field named.
func TestSchemaRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   []string // in the error
	}{
		{"unknown mode", map[string]any{"mode": "everywhere"}, []string{"/mode", "namespaces", "cluster"}},
		{"negative replicas", map[string]any{"replicas": -1}, []string{"/replicas", "minimum"}},
		{"fractional replicas", map[string]any{"replicas": 1.5}, []string{"/replicas"}},
		{"failover as a string", map[string]any{"failover": "yes"}, []string{"/failover", "boolean"}},
		{"misspelt top-level key", map[string]any{"replica": 2}, []string{"replica", "not allowed"}},
		{"misspelt nested key", map[string]any{"certManager": map[string]any{"enable": true}}, []string{"/certManager", "enable"}},
		{"unknown log level", map[string]any{"logLevel": "verbose"}, []string{"/logLevel"}},
		{"not a duration", map[string]any{"missingClaimGrace": "30"}, []string{"/missingClaimGrace"}},
		{"no move deadline", map[string]any{"moveDeadline": "0"}, []string{"/moveDeadline"}},
		{"zero move deadline", map[string]any{"moveDeadline": "0s"}, []string{"/moveDeadline"}},
		{"zero sync period", map[string]any{"attachDetachSyncPeriod": "0m"}, []string{"/attachDetachSyncPeriod"}},
		{"zero unschedulable deadline", map[string]any{"unschedulableDeadline": "0.0s"}, []string{"/unschedulableDeadline"}},
		{"unschedulable deadline not a duration", map[string]any{"unschedulableDeadline": "5"}, []string{"/unschedulableDeadline"}},
		{"recreating owner as kind.group", map[string]any{"recreatingOwners": []any{"CloneSet.apps.kruise.io"}}, []string{"/recreatingOwners/0"}},
		{"webhook timeout above the API server's 30 s", map[string]any{"webhook": map[string]any{"timeoutSeconds": 31}}, []string{"/webhook/timeoutSeconds"}},
		{"zero workers", map[string]any{"workers": 0}, []string{"/workers"}},
		{"extra arg not a flag", map[string]any{"extraArgs": []any{"cluster-wide"}}, []string{"/extraArgs/0"}},
		{"issuer kind", map[string]any{"certManager": map[string]any{"issuerRef": map[string]any{"name": "x", "kind": "Vault"}}}, []string{"/certManager/issuerRef/kind"}},
		{"spread policy", map[string]any{"topologySpread": map[string]any{"whenUnsatisfiable": "Sometimes"}}, []string{"/topologySpread/whenUnsatisfiable"}},
		{"budget as a fraction", map[string]any{"podDisruptionBudget": map[string]any{"minAvailable": "half"}}, []string{"/podDisruptionBudget/minAvailable"}},
		{"pull policy", map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}, []string{"/image/pullPolicy"}},
		// null removes a key in helm's values, chart default included: a
		// flag huddle needs would render empty and crash-loop it.
		{"failover set to null", map[string]any{"failover": nil}, []string{"failover", "missing"}},
		{"lease duration set to null", map[string]any{"leaderElection": map[string]any{"leaseDuration": nil}}, []string{"/leaderElection", "leaseDuration"}},
		// client-go's leader election would refuse these at start.
		{"lease duration zero", map[string]any{"leaderElection": map[string]any{"leaseDuration": "0"}}, []string{"/leaderElection/leaseDuration"}},
		{"lease not longer than renew deadline", map[string]any{"leaderElection": map[string]any{"leaseDuration": "10s"}}, []string{"leaderElection.leaseDuration (10s) must be longer than leaderElection.renewDeadline (10s)"}},
		{"renew deadline within 1.2 retry periods", map[string]any{"leaderElection": map[string]any{"renewDeadline": "2s"}}, []string{"leaderElection.renewDeadline (2s) must be longer than 1.2 × leaderElection.retryPeriod (2s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(tc.values, release, namespace)
			if err == nil {
				t.Fatalf("values %v accepted", tc.values)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestSchemaAccepts: values as users and huddle-sim give them, including
// --set's int64 and Go ints.
func TestSchemaAccepts(t *testing.T) {
	for _, values := range []map[string]any{
		{"replicas": int64(3), "logLevel": int64(2), "workers": 8},
		{"replicas": 0},
		{"mode": "cluster", "missingClaimGrace": "2s"},
		{"missingClaimGrace": "1m30s", "leaderElection": map[string]any{"leaseDuration": "20s"}},
		{"podDisruptionBudget": map[string]any{"minAvailable": "50%"}},
		{"logLevel": "debug"},
		{"unschedulableDeadline": "90s", "moveDeadline": "1h", "recreatingOwners": []any{"apps.kruise.io/CloneSet", "Pod"}},
		{"resources": map[string]any{"requests": map[string]any{"cpu": 1, "memory": "1.5Gi"}}},
		{"global": map[string]any{"anything": true}},
	} {
		if _, err := Render(values, release, namespace); err != nil {
			t.Errorf("values %v refused: %v", values, err)
		}
	}
}

// TestValuesDocumented: every key of values.yaml has a comment line just
// above it (keys inside resource lists excepted), and every key is typed
// in values.schema.json.
func TestValuesDocumented(t *testing.T) {
	text := string(mustRead(t, "huddle/values.yaml"))
	key := regexp.MustCompile(`^(\s*)([A-Za-z][A-Za-z0-9]*):`)
	lines := strings.Split(text, "\n")
	var parents []string // key path by indentation
	for i, line := range lines {
		mk := key.FindStringSubmatch(line)
		if mk == nil {
			continue
		}
		depth := len(mk[1]) / 2
		parents = append(parents[:min(depth, len(parents))], mk[2])
		if depth > 0 && (parents[depth-1] == "requests" || parents[depth-1] == "limits") {
			continue
		}
		prev := ""
		for j := i - 1; j >= 0 && prev == ""; j-- {
			prev = strings.TrimSpace(lines[j])
		}
		if !strings.HasPrefix(prev, "#") {
			t.Errorf("values.yaml:%d: %s has no comment above it", i+1, strings.Join(parents, "."))
		}
	}

	var schema map[string]any
	if err := json.Unmarshal(mustRead(t, "huddle/values.schema.json"), &schema); err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal([]byte(text), &values); err != nil {
		t.Fatal(err)
	}
	checkTyped(t, "", values, schema)
}

// checkTyped reports values without a type in schema, descending into
// objects the schema describes property by property.
func checkTyped(t *testing.T, path string, values map[string]any, schema map[string]any) {
	props, _ := schema["properties"].(map[string]any)
	for k, v := range values {
		p := path + "." + k
		s, ok := props[k].(map[string]any)
		if !ok {
			if _, free := schema["additionalProperties"].(map[string]any); !free {
				t.Errorf("%s is not in values.schema.json", p)
			}
			continue
		}
		_, typed := s["type"]
		_, oneOf := s["oneOf"]
		if !typed && !oneOf {
			t.Errorf("%s has no type in values.schema.json", p)
		}
		if _, ok := s["description"]; !ok && props != nil && path == "" {
			t.Errorf("%s has no description in values.schema.json", p)
		}
		if sub, ok := v.(map[string]any); ok && s["properties"] != nil {
			if s["additionalProperties"] != false {
				t.Errorf("%s: the schema lets a misspelt key through (additionalProperties: false)", p)
			}
			checkTyped(t, p, sub, s)
		}
	}
}
