package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/huddle-io/huddle/internal/cleanup"
)

// cleanupMain runs `huddle cleanup` (see package cleanup) and returns the
// exit code.
func cleanupMain(args []string) int {
	fs := flag.NewFlagSet("huddle cleanup", flag.ContinueOnError)
	var (
		o          cleanup.Options
		kubeconfig string
	)
	fs.StringVar(&o.WebhookConfiguration, "webhook-configuration", "huddle", "the MutatingWebhookConfiguration to delete")
	fs.StringVar(&o.Namespace, "namespace", envOr("POD_NAMESPACE", "huddle-system"), "huddle's namespace, where --cert-secret lives")
	fs.StringVar(&o.CertSecret, "cert-secret", "huddle-webhook-cert", "the webhook certificate Secret to delete (none if empty)")
	fs.DurationVar(&o.Settle, "settle", 5*time.Second, "pause before a second look for gated pods, for admissions in flight when the webhook configuration was deleted")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, $KUBECONFIG or ~/.kube/config)")
	zopts := zap.Options{}
	zopts.BindFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: huddle cleanup [flags]\n\nDeletes huddle's webhook configuration, removes its scheduling gate from every pod\nthat still carries it, and deletes its certificate Secret (the chart's uninstall hook).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	logger := ctrl.Log.WithName("cleanup")

	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = ctrl.GetConfig()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "huddle cleanup: no API server to talk to: %v\n", err)
		return 1
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "huddle cleanup: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cleanup.Run(ctrl.LoggerInto(ctx, logger), cs, o); err != nil {
		logger.Error(err, "Cleanup incomplete")
		fmt.Fprintf(os.Stderr, "huddle cleanup failed (the hook retries; or fix the cause and run it again):\n%v\n", err)
		return 1
	}
	logger.Info("Cleanup done")
	return 0
}
