package charts

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// grant is one verb on one resource, as a rule grants it:
// "group/resource verb" with "[names]" when narrowed to names.
func grants(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					s := fmt.Sprintf("%s/%s %s", g, res, v)
					if len(r.ResourceNames) > 0 {
						s += " " + fmt.Sprint(r.ResourceNames)
					}
					out = append(out, s)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func expand(groupResources string, verbs string) []string {
	var out []string
	for _, gr := range strings.Fields(groupResources) {
		for _, v := range strings.Split(verbs, ",") {
			out = append(out, gr+" "+v)
		}
	}
	return out
}

// huddleClusterGrants is every permission huddle's ClusterRole grants by
// default: adding one must change this list.
func huddleClusterGrants(failover, manageCerts bool) []string {
	var g []string
	g = append(g, expand("/pods", "get,list,watch,patch")...)
	g = append(g, expand("/pods/eviction", "create")...)
	g = append(g, expand("/nodes", "get,list,watch")...)
	if failover {
		// The out-of-service taint, the force deletion of a fenced
		// node's terminating pods, and the release of a deleted node's
		// volumes (its pods and VolumeAttachments, the release recorded on
		// the Huddle).
		g = append(g, "/nodes patch", "/pods delete", "storage.k8s.io/volumeattachments delete", "huddle.io/huddles patch")
	}
	g = append(g, expand("/persistentvolumeclaims /persistentvolumes /namespaces", "get,list,watch")...)
	g = append(g, expand("storage.k8s.io/volumeattachments storage.k8s.io/csidrivers storage.k8s.io/csinodes storage.k8s.io/storageclasses", "get,list,watch")...)
	g = append(g, expand("apps/deployments apps/replicasets apps/statefulsets batch/jobs", "get,list,watch")...)
	g = append(g, expand("policy/poddisruptionbudgets", "get,list,watch")...)
	g = append(g, expand("/events", "create,patch")...)
	g = append(g, expand("huddle.io/huddles", "get,list,watch,create,update")...)
	g = append(g, "huddle.io/huddles/status update")
	if manageCerts {
		g = append(g, expand("admissionregistration.k8s.io/mutatingwebhookconfigurations", "get,list,watch")...)
		g = append(g, "admissionregistration.k8s.io/mutatingwebhookconfigurations update [huddle]")
	}
	sort.Strings(g)
	return g
}

func huddleNamespaceGrants(manageCerts bool) []string {
	g := []string{"coordination.k8s.io/leases create", "coordination.k8s.io/leases get [huddle.huddle.io]", "coordination.k8s.io/leases update [huddle.huddle.io]"}
	if manageCerts {
		g = append(g, expand("/secrets", "list,watch,create")...)
		g = append(g, "/secrets get [huddle-webhook-cert]", "/secrets update [huddle-webhook-cert]")
	}
	sort.Strings(g)
	return g
}

// TestRBAC compares every rule to the expected list, for each combination
// of the options that change RBAC.
func TestRBAC(t *testing.T) {
	for _, tc := range []struct{ failover, certManager bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("failover=%v,certManager=%v", tc.failover, tc.certManager), func(t *testing.T) {
			m := render(t, map[string]any{"failover": tc.failover, "certManager": map[string]any{"enabled": tc.certManager}, "mode": "cluster"})
			cr := one[*rbacv1.ClusterRole](t, m, "huddle")
			if got, want := grants(cr.Rules), huddleClusterGrants(tc.failover, !tc.certManager); !reflect.DeepEqual(got, want) {
				t.Errorf("ClusterRole huddle grants\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			role := one[*rbacv1.Role](t, m, "huddle")
			if role.Namespace != namespace {
				t.Errorf("Role in %s, want %s", role.Namespace, namespace)
			}
			if got, want := grants(role.Rules), huddleNamespaceGrants(!tc.certManager); !reflect.DeepEqual(got, want) {
				t.Errorf("Role huddle grants\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			for _, rb := range []struct {
				kind, name, ns string
				subjects       []rbacv1.Subject
				ref            rbacv1.RoleRef
			}{
				{"ClusterRoleBinding", "huddle", "", one[*rbacv1.ClusterRoleBinding](t, m, "huddle").Subjects, one[*rbacv1.ClusterRoleBinding](t, m, "huddle").RoleRef},
				{"RoleBinding", "huddle", namespace, one[*rbacv1.RoleBinding](t, m, "huddle").Subjects, one[*rbacv1.RoleBinding](t, m, "huddle").RoleRef},
			} {
				want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "huddle", Namespace: namespace}}
				if !reflect.DeepEqual(rb.subjects, want) || rb.ref.Name != "huddle" {
					t.Errorf("%s binds %v to %v, want huddle's ServiceAccount to role huddle", rb.kind, rb.subjects, rb.ref)
				}
			}
		})
	}
}

// TestRBACPrinciples holds for every rendering: no wildcards, Secrets and
// Leases only in the release namespace, node writes only with failover,
// writes to the webhook configuration only by name.
func TestRBACPrinciples(t *testing.T) {
	for _, values := range []map[string]any{nil, everyOption(), {"failover": true}} {
		m := render(t, values)
		failover := values["failover"] == true
		var rules []rbacv1.PolicyRule
		for _, cr := range all[*rbacv1.ClusterRole](m) {
			for _, r := range cr.Rules {
				for _, res := range r.Resources {
					if res == "secrets" || res == "leases" {
						t.Errorf("ClusterRole %s grants %s: only the release namespace's Role may", cr.Name, res)
					}
					if res == "nodes" && !failover && slices.ContainsFunc(r.Verbs, isWrite) {
						t.Errorf("ClusterRole %s writes nodes %v without failover", cr.Name, r.Verbs)
					}
					if (res == "pods" || res == "volumeattachments") && !failover && slices.Contains(r.Verbs, "delete") {
						t.Errorf("ClusterRole %s deletes %s without failover", cr.Name, res)
					}
					if res == "mutatingwebhookconfigurations" && slices.ContainsFunc(r.Verbs, isWrite) && len(r.ResourceNames) == 0 {
						t.Errorf("ClusterRole %s writes every webhook configuration (%v): narrow it with resourceNames", cr.Name, r.Verbs)
					}
				}
			}
			rules = append(rules, cr.Rules...)
		}
		for _, r := range all[*rbacv1.Role](m) {
			if r.Namespace != namespace {
				t.Errorf("Role %s in %s, want %s", r.Name, r.Namespace, namespace)
			}
			rules = append(rules, r.Rules...)
		}
		for _, r := range rules {
			for _, list := range [][]string{r.APIGroups, r.Resources, r.Verbs, r.ResourceNames, r.NonResourceURLs} {
				for _, s := range list {
					if strings.Contains(s, "*") {
						t.Errorf("wildcard in rule %+v", r)
					}
				}
			}
			if slices.Contains(r.Verbs, "escalate") || slices.Contains(r.Verbs, "bind") || slices.Contains(r.Verbs, "impersonate") {
				t.Errorf("privilege-granting verb in rule %+v", r)
			}
		}
	}
}

func isWrite(verb string) bool {
	return !slices.Contains([]string{"get", "list", "watch"}, verb)
}

// TestCleanupRBAC: the uninstall hook may do exactly its three steps.
func TestCleanupRBAC(t *testing.T) {
	m := render(t, nil)
	want := []string{"/events create", "/pods get", "/pods list", "/pods patch", "admissionregistration.k8s.io/mutatingwebhookconfigurations delete [huddle]"}
	if got := grants(one[*rbacv1.ClusterRole](t, m, "huddle-cleanup").Rules); !reflect.DeepEqual(got, want) {
		t.Errorf("ClusterRole huddle-cleanup grants %v, want %v", got, want)
	}
	if got := grants(one[*rbacv1.Role](t, m, "huddle-cleanup").Rules); !reflect.DeepEqual(got, []string{"/secrets delete [huddle-webhook-cert]"}) {
		t.Errorf("Role huddle-cleanup grants %v", got)
	}
	for _, s := range append(one[*rbacv1.ClusterRoleBinding](t, m, "huddle-cleanup").Subjects, one[*rbacv1.RoleBinding](t, m, "huddle-cleanup").Subjects...) {
		if s.Name != "huddle-cleanup" || s.Namespace != namespace {
			t.Errorf("hook binding subject %+v", s)
		}
	}
}
