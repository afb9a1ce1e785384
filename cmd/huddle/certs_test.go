package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestCertFilesWrite(t *testing.T) {
	dir := t.TempDir()
	c := &certFiles{dir: dir}
	secret := func(crt, key string) *corev1.Secret {
		return &corev1.Secret{Data: map[string][]byte{corev1.TLSCertKey: []byte(crt), corev1.TLSPrivateKeyKey: []byte(key)}}
	}
	for _, tc := range []struct {
		name        string
		secret      *corev1.Secret
		wantChanged bool
		wantCrt     string
	}{
		{"empty Secret: nothing yet", &corev1.Secret{}, false, ""},
		{"first certificate", secret("crt1", "key1"), true, "crt1"},
		{"unchanged", secret("crt1", "key1"), false, "crt1"},
		{"rotated", secret("crt2", "key2"), true, "crt2"},
	} {
		changed, err := c.write(tc.secret)
		if err != nil || changed != tc.wantChanged {
			t.Fatalf("%s: write = %v, %v; want %v", tc.name, changed, err, tc.wantChanged)
		}
		got, _ := os.ReadFile(filepath.Join(dir, corev1.TLSCertKey))
		if string(got) != tc.wantCrt {
			t.Errorf("%s: tls.crt %q, want %q", tc.name, got, tc.wantCrt)
		}
	}
	if c.NeedLeaderElection() {
		t.Error("certFiles needs leader election: replicas that do not lead would never serve the webhook")
	}
}

func TestWaitCertFiles(t *testing.T) {
	dir := t.TempDir()
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go waitCertFiles(ctx, dir, ready)
	for _, f := range []string{corev1.TLSPrivateKeyKey, corev1.TLSCertKey} {
		select {
		case <-ready:
			t.Fatalf("ready before %s exists", f)
		case <-time.After(1500 * time.Millisecond):
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("not ready with both files mounted")
	}
}
