// Package controlplane runs the real Kubernetes control plane as local
// processes on 127.0.0.1: etcd, kube-apiserver (token auth, RBAC and Node
// authorization on), kube-controller-manager with its default controllers,
// and kube-scheduler with its default profile.
//
// Each component authenticates as itself, as on a real cluster: the
// controller manager as system:kube-controller-manager with one service
// account per controller, the scheduler as system:kube-scheduler. Timers
// that differ between the eks and fast timing profiles are passed as the
// components' own flags; see package timing.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/huddle-io/huddle/internal/sim/binaries"
	"github.com/huddle-io/huddle/internal/sim/podnet"
	"github.com/huddle-io/huddle/internal/sim/timing"
)

// Config says what to run and where.
type Config struct {
	Binaries binaries.Set
	// Dir holds certificates, kubeconfigs, etcd data and component logs.
	Dir    string
	Timing timing.Profile
	// Progress receives one line per boot step (nil: discard).
	Progress io.Writer
	// EgressSocket, if set, is the Unix socket of an HTTP CONNECT proxy
	// through which the API server reaches the cluster's pods (webhooks
	// behind Services, routed to their endpoints' IPs); see package podnet.
	EgressSocket string
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	// Kubeconfig is the path of an admin kubeconfig for users and tests.
	Kubeconfig string
	// Admin is the admin identity (system:masters); Simulator is the
	// identity the simulated kubelets and cloud controllers use.
	Admin, Simulator *rest.Config
	// HuddleKubeconfig authenticates as HuddleUser.
	HuddleKubeconfig string
	// Dir is Config.Dir; component logs are Dir/<component>.log.
	Dir string
	// AuditLog is the API server's audit log (JSON lines): who deleted or
	// evicted which pod, nothing else (see auditPolicy).
	AuditLog string
	URL      string
	// APIPort is the API server's port on 127.0.0.1; CA its CA (PEM).
	APIPort int
	CA      []byte
	procs   []*process
}

// Start boots the control plane and returns when every component is
// healthy and the controller manager has created the default service
// account. On error, everything started is stopped.
func Start(ctx context.Context, cfg Config) (cp *ControlPlane, err error) {
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	pki, err := newPKI(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("generate certificates: %w", err)
	}
	ports, err := FreePorts(5)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	url := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	started := &ControlPlane{Dir: cfg.Dir, URL: url, APIPort: apiPort, CA: pki.caPEM, Kubeconfig: filepath.Join(cfg.Dir, "kubeconfig")}
	cp = started
	// `return nil, err` sets cp to nil before this runs: stop what was
	// started through its own variable.
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()

	write := func(name, user, tok string) (string, error) {
		path := filepath.Join(cfg.Dir, name)
		return path, writeKubeconfig(path, url, pki.caPEM, user, tok)
	}
	if _, err := write("kubeconfig", adminUser, pki.AdminToken); err != nil {
		return nil, err
	}
	kcmKubeconfig, err := write("kube-controller-manager.kubeconfig", "system:kube-controller-manager", pki.ControllerManagerTok)
	if err != nil {
		return nil, err
	}
	schedKubeconfig, err := write("kube-scheduler.kubeconfig", "system:kube-scheduler", pki.SchedulerToken)
	if err != nil {
		return nil, err
	}
	if cp.HuddleKubeconfig, err = write("huddle.kubeconfig", HuddleUser, pki.HuddleToken); err != nil {
		return nil, err
	}
	cp.Admin = restConfig(url, pki.caPEM, pki.AdminToken)
	cp.Simulator = restConfig(url, pki.caPEM, pki.SimToken)

	t := cfg.Timing
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	if ctx.Err() != nil { // interrupted: start nothing more
		return nil, context.Cause(ctx)
	}
	fmt.Fprintln(progress, "Starting etcd")
	etcd, err := startProcess("etcd", cp.logPath("etcd"), nil, cfg.Binaries.Etcd,
		"--name=huddle-sim",
		"--data-dir="+filepath.Join(cfg.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=huddle-sim="+peerURL,
		"--unsafe-no-fsync", // a throwaway cluster: speed over durability
		"--quota-backend-bytes=8589934592",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	cp.procs = append(cp.procs, etcd)

	tol := strconv.Itoa(int(t.NotReadyToleration.Seconds()))
	var egress []string
	if cfg.EgressSocket != "" {
		path := filepath.Join(cfg.Dir, "egress-selector.yaml")
		if err := os.WriteFile(path, []byte(podnet.EgressConfig(cfg.EgressSocket)), 0o600); err != nil {
			return nil, err
		}
		// No kube-proxy gives Services virtual IPs here, so webhooks are
		// called at their endpoints (pod IPs), through the egress proxy.
		egress = []string{"--egress-selector-config-file=" + path, "--enable-aggregator-routing=true"}
	}
	if ctx.Err() != nil { // interrupted: start nothing more
		return nil, context.Cause(ctx)
	}
	auditPolicyPath := filepath.Join(cfg.Dir, "audit-policy.yaml")
	if err := os.WriteFile(auditPolicyPath, []byte(auditPolicy), 0o600); err != nil {
		return nil, err
	}
	cp.AuditLog = filepath.Join(cfg.Dir, "audit.log")
	fmt.Fprintln(progress, "Starting kube-apiserver")
	apiserver, err := startProcess("kube-apiserver", cp.logPath("kube-apiserver"), nil, cfg.Binaries.APIServer, append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--tls-cert-file=" + pki.ServingCert, "--tls-private-key-file=" + pki.ServKey,
		"--client-ca-file=" + pki.CACert,
		"--token-auth-file=" + pki.TokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.SAPub,
		"--service-account-signing-key-file=" + pki.SAKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		// The kubernetes Service cannot point at a loopback address.
		"--endpoint-reconciler-type=none",
		"--default-not-ready-toleration-seconds=" + tol,
		"--default-unreachable-toleration-seconds=" + tol,
		"--allow-privileged=true",
		"--profiling=false",
		"--cert-dir=" + filepath.Join(cfg.Dir, "apiserver-certs"),
		"--audit-policy-file=" + auditPolicyPath,
		"--audit-log-path=" + cp.AuditLog,
		"--audit-log-format=json",
		"--audit-log-mode=batch", "--audit-log-batch-max-wait=1s",
	}, egress...)...)
	if err != nil {
		return nil, err
	}
	cp.procs = append(cp.procs, apiserver)

	// The controller manager and scheduler retry until the API server
	// answers, so all three boot in parallel.
	if ctx.Err() != nil { // interrupted: start nothing more
		return nil, context.Cause(ctx)
	}
	fmt.Fprintln(progress, "Starting kube-controller-manager and kube-scheduler")
	kcm, err := startProcess("kube-controller-manager", cp.logPath("kube-controller-manager"),
		[]string{"HUDDLE_SIM_MAX_WAIT_FOR_UNMOUNT=" + t.MaxWaitForUnmount.String()},
		cfg.Binaries.ControllerManager,
		"--kubeconfig="+kcmKubeconfig,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(kcmPort),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+pki.SAKey,
		"--root-ca-file="+pki.CACert,
		"--cluster-signing-cert-file="+pki.CACert, "--cluster-signing-key-file="+pki.CAKey,
		"--controllers=*",
		"--node-monitor-period="+t.NodeMonitorPeriod.String(),
		"--node-monitor-grace-period="+t.NodeMonitorGracePeriod.String(),
		"--node-startup-grace-period="+t.NodeStartupGracePeriod.String(),
		"--attach-detach-reconcile-sync-period="+t.AttachDetachSyncPeriod.String(),
		"--kube-api-qps=100", "--kube-api-burst=200",
		"--profiling=false",
	)
	if err != nil {
		return nil, err
	}
	cp.procs = append(cp.procs, kcm)
	schedConfig := filepath.Join(cfg.Dir, "kube-scheduler.yaml")
	if err := os.WriteFile(schedConfig, []byte(fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %s
  qps: 100
  burst: 200
leaderElection:
  leaderElect: false
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: %d
`, schedKubeconfig, max(1, int(t.SchedulerMaxBackoff.Seconds())))), 0o600); err != nil {
		return nil, err
	}
	sched, err := startProcess("kube-scheduler", cp.logPath("kube-scheduler"), nil, cfg.Binaries.Scheduler,
		"--config="+schedConfig,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(schedPort),
		"--profiling=false",
	)
	if err != nil {
		return nil, err
	}
	cp.procs = append(cp.procs, sched)

	if err := cp.waitReady(ctx, progress, kcmPort, schedPort); err != nil {
		return nil, err
	}
	return cp, nil
}

// readyTimeout bounds the wait for each component to be ready.
const readyTimeout = 2 * time.Minute

func (cp *ControlPlane) waitReady(parent context.Context, progress io.Writer, kcmPort, schedPort int) error {
	ctx, cancel := context.WithTimeout(parent, readyTimeout)
	defer cancel()
	client, err := kubernetes.NewForConfig(cp.Admin)
	if err != nil {
		return err
	}
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // components' self-signed healthz
	}}
	healthy := func(url string) func(context.Context) error {
		return func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := insecure.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", url, resp.Status)
			}
			return nil
		}
	}
	steps := []struct {
		what, component string
		check           func(context.Context) error
	}{
		{"kube-apiserver ready", "kube-apiserver", func(ctx context.Context) error {
			_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			return err
		}},
		{"kube-controller-manager healthy", "kube-controller-manager", healthy(fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort))},
		{"kube-scheduler healthy", "kube-scheduler", healthy(fmt.Sprintf("https://127.0.0.1:%d/healthz", schedPort))},
		// The service account controller runs: pods can be admitted.
		{"default service account created", "kube-controller-manager", func(ctx context.Context) error {
			_, err := client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("service account default/default not created yet by kube-controller-manager")
			}
			return err
		}},
	}
	for _, s := range steps {
		err := poll(ctx, 100*time.Millisecond, cp.procs, s.check)
		var failed *ComponentError
		switch {
		case err == nil:
			fmt.Fprintf(progress, "  %s\n", s.what)
			continue
		case errors.As(err, &failed), parent.Err() != nil:
			// A component exited, or the caller gave up.
			return fmt.Errorf("waiting for %s: %w", s.what, err)
		default:
			return &ComponentError{Component: s.component, Log: cp.logPath(s.component),
				Err: fmt.Errorf("runs, but waiting for %s timed out after %s: %v", s.what, readyTimeout, err)}
		}
	}
	return nil
}

// Process is a component the caller started next to the control plane.
type Process struct{ p *process }

// StartProcess runs bin as an extra component logging to Dir/<name>.log;
// Stop stops it too.
func (cp *ControlPlane) StartProcess(name string, env []string, bin string, args ...string) (*Process, error) {
	p, err := startProcess(name, cp.logPath(name), env, bin, args...)
	if err != nil {
		return nil, err
	}
	cp.procs = append(cp.procs, p)
	return &Process{p}, nil
}

// Stop stops the process: SIGTERM, then SIGKILL after grace.
func (p *Process) Stop(grace time.Duration) { p.p.stop(grace) }

// Kill kills the process at once, as a crash would.
func (p *Process) Kill() { p.p.stop(0) }

// Running returns an error if the process has exited.
func (p *Process) Running() error { return p.p.running() }

// Check returns an error naming the first component that has exited.
func (cp *ControlPlane) Check() error {
	for _, p := range cp.procs {
		if err := p.running(); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops every component, the scheduler and controllers first and
// etcd last.
func (cp *ControlPlane) Stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		cp.procs[i].stop(5 * time.Second)
	}
	cp.procs = nil
}

func (cp *ControlPlane) logPath(component string) string {
	return filepath.Join(cp.Dir, component+".log")
}

func restConfig(url string, ca []byte, token string) *rest.Config {
	return &rest.Config{
		Host:            url,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		QPS:             200,
		Burst:           400,
	}
}

func writeKubeconfig(path, url string, ca []byte, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["huddle-sim"] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["huddle-sim"] = &clientcmdapi.Context{Cluster: "huddle-sim", AuthInfo: user}
	cfg.CurrentContext = "huddle-sim"
	return clientcmd.WriteToFile(*cfg, path)
}

// auditPolicy records, once each (at ResponseComplete), the deletions of
// pods (with their DeleteOptions, whose UID precondition names the pod
// deleted) and the evictions: enough for a test to tell an eviction
// through the Eviction API from a plain delete, and who made it, at a
// tiny cost.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
- level: Request
  verbs: [delete, deletecollection]
  resources: [{group: "", resources: [pods]}]
- level: Metadata
  verbs: [create]
  resources: [{group: "", resources: [pods/eviction]}]
- level: None
`
