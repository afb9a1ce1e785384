package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestExpandFollowsKubernetesRules(t *testing.T) {
	vars := map[string]string{"POD_NAMESPACE": "huddle-system", "A": "x"}
	for in, want := range map[string]string{
		"--namespace=$(POD_NAMESPACE)": "--namespace=huddle-system",
		"$(A)$(A)":                     "xx",
		"$$(A)":                        "$(A)", // $$ escapes
		"$(MISSING)":                   "$(MISSING)",
		"cost $5":                      "cost $5",
		"$(A":                          "$(A",
		"plain":                        "plain",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMountTableTranslatesPathsUnderMounts(t *testing.T) {
	c := &corev1.Container{VolumeMounts: []corev1.VolumeMount{
		{Name: "tmp", MountPath: "/tmp"},
		{Name: "certs", MountPath: "/tmp/k8s-webhook-server/serving-certs"},
		{Name: "sa", MountPath: ServiceAccountMountPath},
	}}
	m := mountsOf(c, map[string]string{"tmp": "/pod/volumes/tmp", "certs": "/pod/volumes/certs", "sa": "/pod/volumes/sa"})
	for in, want := range map[string]string{
		"/tmp":     "/pod/volumes/tmp",
		"/tmp/x/y": "/pod/volumes/tmp/x/y",
		"/tmpfoo":  "/tmpfoo", // not under /tmp
		"/tmp/k8s-webhook-server/serving-certs/tls": "/pod/volumes/certs/tls", // the longest mount wins
		"--cert-dir=/tmp/certs":                     "--cert-dir=/pod/volumes/tmp/certs",
		"--name=value":                              "--name=value",
		"/etc/passwd":                               "/etc/passwd", // the image's own files
	} {
		if got := m.translateArg(in); got != want {
			t.Errorf("translateArg(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImageMatchesRepositoryWhateverTheTag(t *testing.T) {
	ps := &Processes{Images: map[string]Image{"ghcr.io/huddle-io/huddle": {Binary: "/bin/huddle", Entrypoint: "/huddle"}}}
	for ref, want := range map[string]bool{
		"ghcr.io/huddle-io/huddle:0.1.0":          true,
		"ghcr.io/huddle-io/huddle":                true,
		"ghcr.io/huddle-io/huddle@sha256:abc":     true,
		"ghcr.io/huddle-io/huddle:0.1.0@sha256:a": true,
		"ghcr.io/huddle-io/huddle-other:0.1.0":    false,
		"localhost:5000/huddle:1":                 false,
	} {
		if _, got := ps.image(ref); got != want {
			t.Errorf("image(%q) = %v, want %v", ref, got, want)
		}
	}
	var none *Processes
	if _, ok := none.image("ghcr.io/huddle-io/huddle:0.1.0"); ok {
		t.Error("a pool without processes runs none")
	}
}

func TestRestartPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy corev1.RestartPolicy
		code   int32
		want   bool
	}{
		{corev1.RestartPolicyAlways, 0, true},
		{corev1.RestartPolicyAlways, 1, true},
		{corev1.RestartPolicyOnFailure, 0, false},
		{corev1.RestartPolicyOnFailure, 137, true},
		{corev1.RestartPolicyNever, 1, false},
	} {
		if got := restarts(tc.policy, tc.code); got != tc.want {
			t.Errorf("restarts(%s, %d) = %v", tc.policy, tc.code, got)
		}
	}
}

func TestBackoffDoublesToTheCap(t *testing.T) {
	pp := &procPod{backoff: 1}
	want := []string{"10s", "20s", "40s", "1m20s", "2m40s", "5m0s", "5m0s"}
	for i, w := range want {
		if got := pp.backoffFor(int32(i)).String(); got != w {
			t.Errorf("back-off after %d restarts = %s, want %s", i, got, w)
		}
	}
}
