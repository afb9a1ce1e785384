// Command huddle is the huddle controller manager: the pod webhook that
// gates pods of shared claims, the placement controller that releases them
// pinned to their huddle's home, and the status controller of Huddles.
// `huddle cleanup` undoes what it leaves in a cluster (the chart's
// uninstall hook).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/controller"
	"github.com/huddle-io/huddle/internal/scope"
	"github.com/huddle-io/huddle/internal/version"
	huddlewebhook "github.com/huddle-io/huddle/internal/webhook"
)

// defaultCertDir is controller-runtime's default certificate directory,
// where the chart mounts an emptyDir (or cert-manager's Secret).
const defaultCertDir = "/tmp/k8s-webhook-server/serving-certs"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "cleanup" {
		os.Exit(cleanupMain(os.Args[2:]))
	}
	var (
		showVersion     = flag.Bool("version", false, "print huddle's version and exit")
		clusterWide     = flag.Bool("cluster-wide", false, "gate pods of every ReadWriteOnce claim outside kube-system and huddle's namespace, not only opted-in ones")
		requireLabel    = flag.Bool("require-namespace-label", false, "only claims in namespaces labelled huddle.io/enabled=true are in scope, whatever their annotation: set when the webhook configuration's namespaceSelector calls huddle for those namespaces only (the chart's namespaces mode)")
		namespace       = flag.String("namespace", envOr("POD_NAMESPACE", "huddle-system"), "huddle's own namespace: never gated; holds the webhook certificate Secret and the leader election lease")
		webhookPort     = flag.Int("webhook-port", 9443, "port of the webhook server")
		webhookHost     = flag.String("webhook-host", "", "address the webhook server binds (all if empty)")
		webhookURL      = flag.String("webhook-url", "", "if set, huddle registers its MutatingWebhookConfiguration itself with this URL (for out-of-cluster runs such as huddle-sim); otherwise it only injects the CA bundle into the installed one")
		webhookName     = flag.String("webhook-configuration", "huddle", "name of the MutatingWebhookConfiguration")
		certDir         = flag.String("cert-dir", defaultCertDir, "directory of the webhook serving certificate (tls.crt, tls.key), created if missing; with --webhook-url and no --cert-dir, a temporary directory")
		manageCerts     = flag.Bool("manage-certs", true, "generate and rotate the webhook certificate (CA and serving certificate in --cert-secret, caBundle injected into the webhook configuration, files written into --cert-dir); false when someone else (cert-manager) mounts them into --cert-dir and injects the caBundle")
		certSecret      = flag.String("cert-secret", "huddle-webhook-cert", "name of the Secret (in --namespace) that holds the webhook certificate with --manage-certs")
		dnsName         = flag.String("webhook-dns-name", "", "DNS name of the webhook's certificate (default: the host of --webhook-url, else huddle-webhook.<namespace>.svc)")
		metricsAddr     = flag.String("metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 disables it")
		probeAddr       = flag.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
		leaderElect     = flag.Bool("leader-elect", false, "run the controllers on one replica at a time (the webhook serves on all)")
		leaseDuration   = flag.Duration("leader-elect-lease-duration", 15*time.Second, "how long a leader's lease lasts without renewal before another replica may take it")
		renewDeadline   = flag.Duration("leader-elect-renew-deadline", 10*time.Second, "how long the leader retries renewing its lease before it stops leading")
		retryPeriod     = flag.Duration("leader-elect-retry-period", 2*time.Second, "how often replicas try to acquire or renew the lease")
		missingGrace    = flag.Duration("missing-claim-grace", 30*time.Second, "how long a pod waits for a claim that does not exist before it is released anyway")
		maxCandidates   = flag.Int("max-candidates", 16, "most nodes a fresh huddle's first member is pinned to")
		workers         = flag.Int("workers", 4, "concurrent reconciles per controller")
		failover        = flag.Bool("failover", false, "fence a NotReady home node that the cloud reports shut down (taint "+controller.TaintShutdown+") with node.kubernetes.io/out-of-service, so its volumes detach at once instead of after 6 minutes (never an unreachable one); and release the volumes of a node whose Node is deleted after its kubelet stopped posting (a terminated instance): force-delete its pods of huddles and delete their VolumeAttachments (never delete the Node of a machine that may still run)")
		detachSync      = flag.Duration("attach-detach-reconcile-sync-period", time.Minute, "kube-controller-manager's --attach-detach-reconcile-sync-period (1m unless your control plane sets it): with --failover, pods of a volume released from a deleted node wait this long for the attach/detach controller to notice")
		evictionRate    = flag.Float64("max-evictions-per-second", 5, "cluster-wide limit of repair's evictions (each huddle also has its own: a burst of 10, then one per 2s)")
		movesPerHour    = flag.Int("max-moves-per-hour", 6, "most whole-huddle moves of one huddle per hour, automatic (spec.move: WhenStuck) or requested (kubectl huddle move) (0: no moves)")
		moveDeadline    = flag.Duration("move-deadline", 10*time.Minute, "how long a whole-huddle move may take from its start; an unfinished move is then abandoned and the huddle comes together where its members run")
		stuckDeadline   = flag.Duration("unschedulable-deadline", 5*time.Minute, "how long a pod huddle pinned may stay Unschedulable before it is deleted (if its controller recreates it) and its replacement placed again; a pod pinned to a full home in use waits there (the move's job) and is only reported")
		recreating      = flag.String("recreating-owners", "", "comma-separated controller kinds (group/Kind, e.g. apps.kruise.io/CloneSet) besides ReplicaSet and StatefulSet that recreate a pod huddle evicts; pods of other owners (Jobs, DaemonSets, bare pods, pipeline and batch operators) are never evicted, only reported")
		pprofAddr       = flag.String("pprof-bind-address", "", "address of the pprof endpoints (off if empty)")
		qps             = flag.Float64("kube-api-qps", 100, "steady rate of requests to the API server")
		burst           = flag.Int("kube-api-burst", 200, "requests to the API server allowed in a burst above --kube-api-qps")
		certRotateCheck = flag.Duration("cert-check-interval", 12*time.Hour, "how often the webhook certificate is checked for rotation")
		memoryLimit     = flag.String("memory-limit", os.Getenv("HUDDLE_MEMORY_LIMIT"), "the container's memory limit, at least 64Mi, e.g. 512Mi (the chart passes limits.memory in HUDDLE_MEMORY_LIMIT): Go collects garbage harder to stay 32Mi below it, the room huddle's code takes in memory (empty: no limit; GOMEMLIMIT, if set, wins)")
	)
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println("huddle", version.Version)
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	goLimit, ignored, err := setMemoryLimit(*memoryLimit)
	switch {
	case err != nil:
		log.Error(err, "invalid --memory-limit")
		os.Exit(2)
	case ignored:
		log.Info("GOMEMLIMIT is set, so --memory-limit is ignored", "GOMEMLIMIT", os.Getenv("GOMEMLIMIT"), "memoryLimit", *memoryLimit)
	case goLimit > 0:
		log.Info("Go memory limit set below the container's", "container", *memoryLimit, "goMemLimitBytes", goLimit)
	}
	if *moveDeadline <= 0 || *stuckDeadline <= 0 || *detachSync <= 0 || *movesPerHour < 0 {
		log.Error(errors.New("--move-deadline, --unschedulable-deadline and --attach-detach-reconcile-sync-period must be positive, --max-moves-per-hour at least 0"), "invalid flags")
		os.Exit(2)
	}
	// Out of a cluster (--webhook-url) several huddles may share a machine:
	// each keeps its certificate in a directory of its own.
	tempCertDir := *webhookURL != "" && !flagSet("cert-dir")
	if err := run(runConfig{
		clusterWide: *clusterWide, requireLabel: *requireLabel, namespace: *namespace, webhookPort: *webhookPort, webhookHost: *webhookHost,
		webhookURL: *webhookURL, webhookName: *webhookName, certDir: *certDir, tempCertDir: tempCertDir,
		manageCerts: *manageCerts, certSecret: *certSecret, dnsName: *dnsName,
		metricsAddr: *metricsAddr, probeAddr: *probeAddr, leaderElect: *leaderElect,
		leaseDuration: *leaseDuration, renewDeadline: *renewDeadline, retryPeriod: *retryPeriod,
		missingGrace: *missingGrace, maxCandidates: *maxCandidates, workers: *workers, certRotateCheck: *certRotateCheck,
		qps: float32(*qps), burst: *burst, failover: *failover, detachSync: *detachSync, evictionsPerSecond: *evictionRate,
		maxMovesPerHour: *movesPerHour, pprofAddr: *pprofAddr,
		moveDeadline: *moveDeadline, unschedulableDeadline: *stuckDeadline, recreatingOwners: splitList(*recreating),
	}); err != nil {
		log.Error(err, "huddle stopped")
		os.Exit(1)
	}
}

type runConfig struct {
	clusterWide, requireLabel                   bool
	namespace                                   string
	webhookPort                                 int
	webhookHost, webhookURL, webhookName        string
	certDir                                     string
	tempCertDir, manageCerts                    bool
	certSecret, dnsName, metricsAddr, probeAddr string
	leaderElect                                 bool
	leaseDuration, renewDeadline, retryPeriod   time.Duration
	missingGrace                                time.Duration
	maxCandidates, workers                      int
	certRotateCheck                             time.Duration
	qps                                         float32
	burst                                       int
	failover                                    bool
	detachSync                                  time.Duration
	evictionsPerSecond                          float64
	maxMovesPerHour                             int
	pprofAddr                                   string
	moveDeadline, unschedulableDeadline         time.Duration
	recreatingOwners                            []string
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
	if c.tempCertDir {
		dir, err := os.MkdirTemp("", "huddle-certs-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c.certDir = dir
	}
	if err := os.MkdirAll(c.certDir, 0o700); err != nil {
		return fmt.Errorf("--cert-dir: %w", err)
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
	const leaseName = "huddle.huddle.io"
	lock, err := leaderLock(cfg, c, leaseName)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: c.metricsAddr},
		HealthProbeBindAddress:  c.probeAddr,
		LeaderElection:          c.leaderElect,
		LeaderElectionID:        leaseName,
		LeaderElectionNamespace: c.namespace,
		LeaseDuration:           &c.leaseDuration,
		RenewDeadline:           &c.renewDeadline,
		RetryPeriod:             &c.retryPeriod,
		// A replica that stops (rollout, scale down, deleted pod) hands the
		// controllers over at once instead of after the lease expires.
		LeaderElectionReleaseOnCancel:       true,
		LeaderElectionResourceLockInterface: lock,
		WebhookServer:                       webhook.NewServer(webhook.Options{Host: c.webhookHost, Port: c.webhookPort, CertDir: c.certDir}),
		// Pods, nodes, their owners, claims, volumes and attachments are
		// cached trimmed to what huddle reads; every kind without
		// managedFields.
		Cache:            controller.CacheOptions(),
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
	secret := types.NamespacedName{Namespace: c.namespace, Name: c.certSecret}
	certsReady, err := setupCerts(ctx, mgr, c, secret)
	if err != nil {
		return err
	}

	sc := scope.Scope{ClusterWide: c.clusterWide, NamespaceLabelRequired: c.requireLabel, Excluded: []string{c.namespace}}
	recorder, stopEvents, err := controller.NewEventRecorder(cfg, scheme)
	if err != nil {
		return fmt.Errorf("event recorder: %w", err)
	}
	defer stopEvents()
	if err := controller.Setup(ctx, mgr, controller.Options{Recorder: recorder, Scope: sc, MissingClaimGrace: c.missingGrace, MaxCandidates: c.maxCandidates, Workers: c.workers,
		EvictionsPerSecond: c.evictionsPerSecond, Failover: c.failover, DetachSync: c.detachSync, MaxMovesPerHour: c.maxMovesPerHour,
		MoveDeadline: c.moveDeadline, UnschedulableDeadline: c.unschedulableDeadline, RecreatingOwners: c.recreatingOwners}); err != nil {
		return fmt.Errorf("set up controllers: %w", err)
	}
	// The webhook reads namespaces and claims from the cache only: start
	// those informers now, not on the first admission.
	for _, obj := range []client.Object{&corev1.Namespace{}, &corev1.PersistentVolumeClaim{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return err
		}
	}
	// The webhook server is added once the certificate files exist: it
	// reads them when it starts.
	webhookReady := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-certsReady:
		}
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
	// The API server must trust the certificate this replica serves, or
	// every review fails and pods are created ungated. Checked only when
	// huddle manages the certificate: otherwise it may not read the
	// webhook configuration (cert-manager injects its bundle).
	if c.manageCerts {
		trusted := webhookTrusted(mgr.GetClient(), c.webhookName, c.dnsName, webhookAddr(c.webhookHost, c.webhookPort))
		if err := mgr.AddReadyzCheck("webhook-certificate", func(req *http.Request) error {
			select {
			case <-webhookReady:
				return trusted(req)
			default:
				return errors.New("webhook certificates not ready yet")
			}
		}); err != nil {
			return err
		}
	}
	// The webhook answers from the Namespace and claim caches: a replica
	// is ready for reviews only once they have synced, or a review would
	// wait on them until the API server's timeout and the pod be created
	// ungated.
	if err := mgr.AddReadyzCheck("caches", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 50*time.Millisecond)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("informer caches not synced yet")
		}
		return nil
	}); err != nil {
		return err
	}
	log.Info("Starting huddle", "version", version.Version, "clusterWide", c.clusterWide, "namespace", c.namespace,
		"leaderElect", c.leaderElect, "manageCerts", c.manageCerts, "certDir", c.certDir)
	return mgr.Start(ctx)
}

// flagSet reports whether the command line set the named flag.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
