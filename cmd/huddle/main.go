// Command huddle is the huddle controller manager: the pod webhook that
// gates pods of shared claims, the placement controller that releases them
// pinned to their huddle's home, and the status controller of Huddles.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/controller"
	"github.com/huddle-io/huddle/internal/scope"
	huddlewebhook "github.com/huddle-io/huddle/internal/webhook"
)

func main() {
	var (
		clusterWide     = flag.Bool("cluster-wide", false, "gate pods of every ReadWriteOnce claim outside kube-system and huddle's namespace, not only opted-in ones")
		namespace       = flag.String("namespace", envOr("POD_NAMESPACE", "huddle-system"), "huddle's own namespace: never gated; holds the webhook certificate Secret and the leader election lease")
		webhookPort     = flag.Int("webhook-port", 9443, "port of the webhook server")
		webhookHost     = flag.String("webhook-host", "", "address the webhook server binds (all if empty)")
		webhookURL      = flag.String("webhook-url", "", "if set, huddle registers its MutatingWebhookConfiguration itself with this URL (for out-of-cluster runs such as huddle-sim); otherwise it only injects the CA bundle into the installed one")
		webhookName     = flag.String("webhook-configuration", "huddle", "name of the MutatingWebhookConfiguration")
		certDir         = flag.String("cert-dir", "", "where the webhook serving certificate is written (a temporary directory if empty)")
		dnsName         = flag.String("webhook-dns-name", "", "DNS name of the webhook's certificate (default: the host of --webhook-url, else huddle-webhook.<namespace>.svc)")
		metricsAddr     = flag.String("metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 disables it")
		probeAddr       = flag.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
		leaderElect     = flag.Bool("leader-elect", false, "run the controllers on one replica at a time (the webhook serves on all)")
		missingGrace    = flag.Duration("missing-claim-grace", 30*time.Second, "how long a pod waits for a claim that does not exist before it is released anyway")
		maxCandidates   = flag.Int("max-candidates", 16, "most nodes a fresh huddle's first member is pinned to")
		workers         = flag.Int("workers", 4, "concurrent reconciles per controller")
		failover        = flag.Bool("failover", false, "fence a NotReady home node that the cloud reports shut down (taint "+controller.TaintShutdown+") with node.kubernetes.io/out-of-service, so its volumes detach at once instead of after 6 minutes; never an unreachable one")
		evictionRate    = flag.Float64("max-evictions-per-second", 5, "cluster-wide limit of repair's evictions (each huddle also has its own: a burst of 10, then one per 2s)")
		movesPerHour    = flag.Int("max-moves-per-hour", 6, "most whole-huddle moves (spec.move: WhenStuck) of one huddle per hour")
		pprofAddr       = flag.String("pprof-bind-address", "", "address of the pprof endpoints (off if empty)")
		qps             = flag.Float64("kube-api-qps", 100, "steady rate of requests to the API server")
		burst           = flag.Int("kube-api-burst", 200, "requests to the API server allowed in a burst above --kube-api-qps")
		certRotateCheck = flag.Duration("cert-check-interval", 12*time.Hour, "how often the webhook certificate is checked for rotation")
	)
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	if err := run(runConfig{
		clusterWide: *clusterWide, namespace: *namespace, webhookPort: *webhookPort, webhookHost: *webhookHost,
		webhookURL: *webhookURL, webhookName: *webhookName, certDir: *certDir, dnsName: *dnsName,
		metricsAddr: *metricsAddr, probeAddr: *probeAddr, leaderElect: *leaderElect,
		missingGrace: *missingGrace, maxCandidates: *maxCandidates, workers: *workers, certRotateCheck: *certRotateCheck,
		qps: float32(*qps), burst: *burst, failover: *failover, evictionsPerSecond: *evictionRate,
		maxMovesPerHour: *movesPerHour, pprofAddr: *pprofAddr,
	}); err != nil {
		log.Error(err, "huddle stopped")
		os.Exit(1)
	}
}

type runConfig struct {
	clusterWide                              bool
	namespace                                string
	webhookPort                              int
	webhookHost, webhookURL, webhookName     string
	certDir, dnsName, metricsAddr, probeAddr string
	leaderElect                              bool
	missingGrace                             time.Duration
	maxCandidates, workers                   int
	certRotateCheck                          time.Duration
	qps                                      float32
	burst                                    int
	failover                                 bool
	evictionsPerSecond                       float64
	maxMovesPerHour                          int
	pprofAddr                                string
}

func run(c runConfig) error {
	log := ctrl.Log.WithName("setup")
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := huddlev1.AddToScheme(scheme); err != nil {
		return err
	}
	syncCerts := c.certDir == ""
	if syncCerts {
		dir, err := os.MkdirTemp("", "huddle-certs-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c.certDir = dir
	}
	if c.dnsName == "" {
		c.dnsName = "huddle-webhook." + c.namespace + ".svc"
		if c.webhookURL != "" {
			u, err := url.Parse(c.webhookURL)
			if err != nil {
				return fmt.Errorf("--webhook-url: %w", err)
			}
			c.dnsName = u.Hostname()
		}
	}
	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = c.qps, c.burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: c.metricsAddr},
		HealthProbeBindAddress:  c.probeAddr,
		LeaderElection:          c.leaderElect,
		LeaderElectionID:        "huddle.huddle.io",
		LeaderElectionNamespace: c.namespace,
		WebhookServer:           webhook.NewServer(webhook.Options{Host: c.webhookHost, Port: c.webhookPort, CertDir: c.certDir}),
		// huddle never reads managedFields; on pods they are a large share
		// of what the informer caches hold.
		Cache:            cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
		PprofBindAddress: c.pprofAddr,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	ctx := ctrl.SetupSignalHandler()

	if c.webhookURL != "" {
		if err := registerWebhook(ctx, mgr.GetAPIReader(), mgr, c); err != nil {
			return fmt.Errorf("register webhook configuration %s: %w", c.webhookName, err)
		}
	}
	secret := types.NamespacedName{Namespace: c.namespace, Name: "huddle-webhook-cert"}
	if err := ensureSecret(ctx, mgr, secret); err != nil {
		return fmt.Errorf("create the webhook certificate Secret %s: %w", secret, err)
	}
	if syncCerts {
		// In a pod the kubelet mounts the Secret into --cert-dir; without
		// one, huddle writes the files itself.
		if err := mgr.Add(&certFiles{reader: mgr.GetAPIReader(), key: secret, dir: c.certDir}); err != nil {
			return err
		}
	}
	certsReady := make(chan struct{})
	if err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:              secret,
		CertDir:                c.certDir,
		CAName:                 "huddle-ca",
		CAOrganization:         "huddle",
		DNSName:                c.dnsName,
		IsReady:                certsReady,
		Webhooks:               []rotator.WebhookInfo{{Name: c.webhookName, Type: rotator.Mutating}},
		RequireLeaderElection:  false,
		RotationCheckFrequency: c.certRotateCheck,
	}); err != nil {
		return fmt.Errorf("set up certificate rotation: %w", err)
	}

	sc := scope.Scope{ClusterWide: c.clusterWide, Excluded: []string{c.namespace}}
	if err := controller.Setup(ctx, mgr, controller.Options{Scope: sc, MissingClaimGrace: c.missingGrace, MaxCandidates: c.maxCandidates, Workers: c.workers,
		EvictionsPerSecond: c.evictionsPerSecond, Failover: c.failover, MaxMovesPerHour: c.maxMovesPerHour}); err != nil {
		return fmt.Errorf("set up controllers: %w", err)
	}
	// The webhook reads namespaces and claims from the cache only: start
	// those informers now, not on the first admission.
	for _, obj := range []client.Object{&corev1.Namespace{}, &corev1.PersistentVolumeClaim{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return err
		}
	}
	webhookReady := make(chan struct{})
	go func() {
		<-certsReady
		srv := mgr.GetWebhookServer()
		srv.Register(huddlewebhook.Path, &webhook.Admission{Handler: &huddlewebhook.Gate{
			Reader: mgr.GetClient(), Scope: sc, Decoder: admission.NewDecoder(scheme),
		}})
		close(webhookReady)
		log.Info("Webhook serving", "path", huddlewebhook.Path, "port", c.webhookPort)
	}()
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		select {
		case <-webhookReady:
			return mgr.GetWebhookServer().StartedChecker()(req)
		default:
			return errors.New("webhook certificates not ready yet")
		}
	}); err != nil {
		return err
	}
	log.Info("Starting huddle", "clusterWide", c.clusterWide, "namespace", c.namespace, "leaderElect", c.leaderElect)
	return mgr.Start(ctx)
}

// registerWebhook writes the MutatingWebhookConfiguration for a webhook
// reached by URL. The rotator fills in its CA bundle.
func registerWebhook(ctx context.Context, reader client.Reader, mgr ctrl.Manager, c runConfig) error {
	cl, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	want := webhookConfiguration(c)
	existing := &admissionregistrationv1.MutatingWebhookConfiguration{}
	err = reader.Get(ctx, client.ObjectKey{Name: c.webhookName}, existing)
	if err == nil {
		// Keep the CA bundle the rotator injected before a restart.
		for i := range want.Webhooks {
			if i < len(existing.Webhooks) {
				want.Webhooks[i].ClientConfig.CABundle = existing.Webhooks[i].ClientConfig.CABundle
			}
		}
		existing.Webhooks = want.Webhooks
		return cl.Update(ctx, existing)
	}
	if client.IgnoreNotFound(err) != nil {
		return err
	}
	return cl.Create(ctx, want)
}

func webhookConfiguration(c runConfig) *admissionregistrationv1.MutatingWebhookConfiguration {
	w := &admissionregistrationv1.MutatingWebhookConfiguration{}
	w.Name = c.webhookName
	ignore := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	w.Webhooks = []admissionregistrationv1.MutatingWebhook{{
		Name:         "gate.huddle.io",
		ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(c.webhookURL)},
		Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
		}},
		NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: "NotIn", Values: []string{"kube-system", c.namespace},
		}}},
		// Pods are never blocked by huddle being down; repair brings
		// pods created meanwhile home.
		FailurePolicy:           &ignore,
		SideEffects:             &none,
		AdmissionReviewVersions: []string{"v1"},
		TimeoutSeconds:          ptr.To(int32(5)),
	}}
	return w
}

// ensureSecret creates the empty Secret the certificate rotator keeps the
// CA and serving certificate in, when the installation did not.
func ensureSecret(ctx context.Context, mgr ctrl.Manager, key types.NamespacedName) error {
	cl, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	s := &corev1.Secret{}
	s.Namespace, s.Name = key.Namespace, key.Name
	if err := cl.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
