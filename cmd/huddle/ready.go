package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// webhookTrusted is a readiness check: the webhook configuration carries a
// CA bundle for every webhook, and a TLS handshake with this replica's
// webhook server, made as the API server makes it (the bundle as roots,
// the Service's DNS name), succeeds. A replica that serves a certificate
// the API server does not trust yet gets every review refused, and with
// failurePolicy: Ignore its pods are created ungated; it must not be
// ready, so that nothing (the Service's endpoints, huddle-sim, a rollout)
// counts on it gating.
func webhookTrusted(reader client.Reader, configuration, dnsName, addr string) healthz.Checker {
	return func(req *http.Request) error {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := reader.Get(req.Context(), client.ObjectKey{Name: configuration}, mwc); err != nil {
			return fmt.Errorf("webhook configuration %s: %w", configuration, err)
		}
		if len(mwc.Webhooks) == 0 {
			return fmt.Errorf("webhook configuration %s has no webhook", configuration)
		}
		for _, w := range mwc.Webhooks {
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(w.ClientConfig.CABundle) {
				return fmt.Errorf("webhook %s of %s has no CA bundle yet", w.Name, configuration)
			}
			ctx, cancel := context.WithTimeout(req.Context(), time.Second)
			d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: dnsName, MinVersion: tls.VersionTLS12}}
			conn, err := d.DialContext(ctx, "tcp", addr)
			cancel()
			if err != nil {
				return fmt.Errorf("the webhook server at %s does not serve a certificate for %s that the CA bundle of webhook %s trusts: %w", addr, dnsName, w.Name, err)
			}
			conn.Close()
		}
		return nil
	}
}

// webhookAddr is where this replica's webhook server listens, as a client
// on the same host reaches it.
func webhookAddr(host string, port int) string {
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
