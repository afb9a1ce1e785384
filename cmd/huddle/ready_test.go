package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// testCA is a CA that signs serving certificates for the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "huddle-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) serving(t *testing.T, dnsName string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestWebhookTrusted: a replica is ready only when the webhook
// configuration's CA bundle trusts the certificate it serves, for the name
// the API server dials.
func TestWebhookTrusted(t *testing.T) {
	const dns = "huddle-webhook.huddle-system.svc"
	ca, other := newTestCA(t), newTestCA(t)
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serving(t, dns)}}
	srv.StartTLS()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")

	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	config := func(bundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
		return &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "huddle"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "gate.huddle.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: bundle}}}}
	}
	req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
	for _, tc := range []struct {
		name    string
		bundle  []byte
		dnsName string
		wantErr string
	}{
		{"bundle trusts the served certificate", ca.pem, dns, ""},
		{"no bundle injected yet", nil, dns, "no CA bundle yet"},
		{"bundle of another CA (not injected since a rotation)", other.pem, dns, "does not serve a certificate"},
		{"certificate for another name", ca.pem, "huddle-webhook.other.svc", "does not serve a certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(config(tc.bundle)).Build()
			err := webhookTrusted(reader, "huddle", tc.dnsName, addr)(req)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("not ready: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want one that says %q", err, tc.wantErr)
			}
		})
	}
	empty := fake.NewClientBuilder().WithScheme(scheme).Build()
	if err := webhookTrusted(empty, "huddle", dns, addr)(req); err == nil {
		t.Fatal("ready with no webhook configuration")
	}
}
