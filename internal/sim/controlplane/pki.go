package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki is the cluster's key material, written under dir.
type pki struct {
	CACert, CAKey        string // cluster CA: signs serving certs and kcm's CSR signer
	ServingCert, ServKey string // kube-apiserver's serving certificate for 127.0.0.1
	SAKey, SAPub         string // service account token signing key pair
	TokenFile            string // kube-apiserver --token-auth-file
	caPEM                []byte
	AdminToken, SimToken string
	ControllerManagerTok string
	SchedulerToken       string
	HuddleToken          string
}

// identities the cluster authenticates by bearer token. The simulator's
// kubelets and EBS controller share one privileged identity because a single
// process plays every node (the Node authorizer would refuse that).
const (
	adminUser = "huddle-sim-admin"
	simUser   = "huddle-sim:simulator"
	// HuddleUser is the identity huddle runs as; it has only the RBAC of
	// config/rbac, as a real installation does.
	HuddleUser = "huddle-sim:huddle"
)

func newPKI(dir string) (*pki, error) {
	p := &pki{
		CACert:      filepath.Join(dir, "ca.crt"),
		CAKey:       filepath.Join(dir, "ca.key"),
		ServingCert: filepath.Join(dir, "apiserver.crt"),
		ServKey:     filepath.Join(dir, "apiserver.key"),
		SAKey:       filepath.Join(dir, "sa.key"),
		SAPub:       filepath.Join(dir, "sa.pub"),
		TokenFile:   filepath.Join(dir, "tokens.csv"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "huddle-sim-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	servKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	servTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	servDER, err := x509.CreateCertificate(rand.Reader, servTmpl, caCert, &servKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		p.CACert:      p.caPEM,
		p.CAKey:       mustKeyPEM(caKey),
		p.ServingCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: servDER}),
		p.ServKey:     mustKeyPEM(servKey),
		p.SAKey:       mustKeyPEM(saKey),
		p.SAPub:       mustPubPEM(&saKey.PublicKey),
	}
	p.AdminToken, p.SimToken, p.ControllerManagerTok, p.SchedulerToken, p.HuddleToken = token(), token(), token(), token(), token()
	files[p.TokenFile] = []byte(strings.Join([]string{
		fmt.Sprintf("%s,%s,%s,\"system:masters\"", p.AdminToken, adminUser, adminUser),
		fmt.Sprintf("%s,%s,%s,\"system:masters\"", p.SimToken, simUser, simUser),
		fmt.Sprintf("%s,system:kube-controller-manager,system:kube-controller-manager", p.ControllerManagerTok),
		fmt.Sprintf("%s,system:kube-scheduler,system:kube-scheduler", p.SchedulerToken),
		fmt.Sprintf("%s,%s,%s", p.HuddleToken, HuddleUser, HuddleUser),
	}, "\n") + "\n")
	for path, b := range files {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func mustKeyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err) // only fails for unsupported curves
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func mustPubPEM(k *ecdsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func token() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
