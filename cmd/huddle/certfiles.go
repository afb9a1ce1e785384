package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// certFiles copies the webhook certificate Secret into the certificate
// directory, as a Secret volume would, but within a second of the rotator
// writing it instead of a kubelet's minute: tls.crt and tls.key, replaced
// atomically when the rotator renews them. The webhook server's
// certificate watcher reloads them.
type certFiles struct {
	reader client.Reader
	key    types.NamespacedName
	dir    string
}

// NeedLeaderElection is false: every replica serves the webhook, so every
// replica needs the files.
func (c *certFiles) NeedLeaderElection() bool { return false }

// Start polls the Secret every second until the files exist, then every
// 30 seconds, until ctx ends.
func (c *certFiles) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("cert-files")
	wrote := false
	for {
		s := &corev1.Secret{}
		if err := c.reader.Get(ctx, c.key, s); err == nil {
			changed, err := c.write(s)
			if err != nil {
				logger.Error(err, "Writing the webhook certificate failed", "dir", c.dir)
			} else if changed {
				wrote = true
				logger.Info("Webhook certificate written", "dir", c.dir)
			}
		}
		wait := time.Second
		if wrote {
			wait = 30 * time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (c *certFiles) write(s *corev1.Secret) (bool, error) {
	crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return false, nil
	}
	if old, err := os.ReadFile(filepath.Join(c.dir, corev1.TLSCertKey)); err == nil && bytes.Equal(old, crt) {
		return false, nil
	}
	// Key first: the watcher reloads on the certificate's change.
	for _, f := range []struct {
		name string
		data []byte
	}{{corev1.TLSPrivateKeyKey, key}, {corev1.TLSCertKey, crt}} {
		tmp := filepath.Join(c.dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			return false, err
		}
		if err := os.Rename(tmp, filepath.Join(c.dir, f.name)); err != nil {
			return false, err
		}
	}
	return true, nil
}
