package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// setupCerts arranges for the webhook's serving certificate to appear in
// c.certDir and returns a channel closed once it is there.
//
// With c.manageCerts, the cert-controller rotator keeps a CA and serving
// certificate in the Secret and injects the CA into the webhook
// configuration, and huddle writes the Secret's files into the directory
// itself (certFiles): a kubelet refreshes a Secret volume only about once
// a minute, which would make every first start that slow. Otherwise
// someone else (cert-manager) mounts the files and injects the CA; huddle
// only waits for the files.
func setupCerts(ctx context.Context, mgr ctrl.Manager, c runConfig, secret types.NamespacedName) (<-chan struct{}, error) {
	ready := make(chan struct{})
	if !c.manageCerts {
		go waitCertFiles(ctx, c.certDir, ready)
		return ready, nil
	}
	if err := ensureSecret(ctx, mgr, secret); err != nil {
		return nil, fmt.Errorf("create the webhook certificate Secret %s: %w", secret, err)
	}
	if err := mgr.Add(&certFiles{reader: mgr.GetAPIReader(), key: secret, dir: c.certDir}); err != nil {
		return nil, err
	}
	if err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:              secret,
		CertDir:                c.certDir,
		CAName:                 "huddle-ca",
		CAOrganization:         "huddle",
		DNSName:                c.dnsName,
		IsReady:                ready,
		Webhooks:               []rotator.WebhookInfo{{Name: c.webhookName, Type: rotator.Mutating}},
		RequireLeaderElection:  false,
		RotationCheckFrequency: c.certRotateCheck,
	}); err != nil {
		return nil, fmt.Errorf("set up certificate rotation: %w", err)
	}
	return ready, nil
}

// ensureSecret creates the empty Secret the certificate rotator keeps the
// CA and serving certificate in, when it does not exist yet. It looks
// first, so an installation that creates the Secret itself need not grant
// huddle create: without it, a create of an existing Secret is refused as
// Forbidden, not AlreadyExists.
func ensureSecret(ctx context.Context, mgr ctrl.Manager, key types.NamespacedName) error {
	cl, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	s := &corev1.Secret{}
	err = cl.Get(ctx, key, s)
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return err
	}
	s.Namespace, s.Name = key.Namespace, key.Name
	if err := cl.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// waitCertFiles closes ready once dir holds tls.crt and tls.key.
func waitCertFiles(ctx context.Context, dir string, ready chan<- struct{}) {
	logger := log.FromContext(ctx).WithName("cert-files")
	for waited := 0; ; waited++ {
		if fileExists(filepath.Join(dir, corev1.TLSCertKey)) && fileExists(filepath.Join(dir, corev1.TLSPrivateKeyKey)) {
			close(ready)
			return
		}
		if waited%30 == 29 {
			logger.Info("Waiting for the webhook certificate to be mounted", "dir", dir)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
