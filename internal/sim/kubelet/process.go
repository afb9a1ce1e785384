package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/podnet"
)

// Processes makes the kubelets run the containers of some images as real
// processes: huddle's own pods, installed from its chart, so what the
// simulator tests is the shipped artifact. Every other container stays
// simulated.
type Processes struct {
	// Images maps an image repository (no tag or digest) to what runs.
	Images map[string]Image
	// Network gives each process pod a network namespace and its IP.
	Network *podnet.Network
	// Server and CA are the API server's URL and CA, as pods reach it.
	Server string
	CA     []byte
	// Dir holds one directory per pod: volumes, kubeconfig, container
	// logs (<container>/<restart>.log, as /var/log/pods lays them out).
	Dir string
}

// Image is what a container of an image runs.
type Image struct {
	// Binary is the local program.
	Binary string
	// Entrypoint is the image's ENTRYPOINT path; a container command
	// naming it runs Binary.
	Entrypoint string
}

// image finds the process image of a container image reference.
func (ps *Processes) image(ref string) (Image, bool) {
	if ps == nil {
		return Image{}, false
	}
	repo, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo = repo[:i]
	}
	im, ok := ps.Images[repo]
	return im, ok
}

// runsProcesses says whether any container of pod runs as a process.
func (ps *Processes) runsProcesses(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if _, ok := ps.image(c.Image); ok {
			return true
		}
	}
	return false
}

// Crash-loop back-off of the kubelet: 10 s doubling to 5 minutes, scaled
// like the profile's other clocks.
const (
	restartBackoffBase = 10 * time.Second
	restartBackoffMax  = 5 * time.Minute
)

// procPod is a pod whose containers run as processes in a sandbox.
type procPod struct {
	pod         *corev1.Pod
	dir, ip     string
	hostIP      string
	allocatable corev1.ResourceList
	cfg         *Processes
	client      corev1client.CoreV1Interface
	recorder    record.EventRecorder
	notify      func()
	backoff     float64 // scale of restart back-off
	tokenFile   string  // path of the service account token in its volume
	gid         int     // group of the pod's files (podGroup)

	mu         sync.Mutex
	sandbox    *podnet.Sandbox
	dirs       map[string]string
	containers []*container
	stopping   bool
	cancel     context.CancelFunc
	// version counts changes that the pod's status shows.
	version int
}

// container is one container of a procPod.
type container struct {
	spec  corev1.Container
	image *Image // nil: the container is simulated (always running)

	cmd       *exec.Cmd
	done      chan struct{} // closed when cmd has exited
	running   bool
	startedAt time.Time
	restarts  int32
	// term is how the current run ended (nil while running); last is the
	// previous run's, shown as lastState after a restart.
	term, last *corev1.ContainerStateTerminated
	restartAt  time.Time
	ready      bool
	started    bool // startup probe passed (or none)
	stopProbes context.CancelFunc
}

func newProcPod(p *Pool, n *node, pod *corev1.Pod, ip string) *procPod {
	pp := &procPod{
		pod:    pod.DeepCopy(),
		dir:    filepath.Join(p.procs.Dir, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID)),
		ip:     ip,
		hostIP: n.ip,
		allocatable: corev1.ResourceList{
			corev1.ResourceCPU: n.spec.Allocatable[corev1.ResourceCPU], corev1.ResourceMemory: n.spec.Allocatable[corev1.ResourceMemory],
		},
		cfg:      p.procs,
		client:   n.client.core,
		recorder: n.recorder,
		backoff:  p.timing.GraceScale,
		gid:      podGroup(pod),
	}
	key := pod.Namespace + "/" + pod.Name
	pp.notify = func() { p.enqueue(key) }
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken != nil {
				pp.tokenFile = src.ServiceAccountToken.Path
			}
		}
	}
	for _, c := range pod.Spec.Containers {
		ct := &container{spec: c}
		if im, ok := p.procs.image(c.Image); ok {
			ct.image = &im
		} else {
			ct.running, ct.ready, ct.started, ct.startedAt = true, true, true, time.Now()
		}
		pp.containers = append(pp.containers, ct)
	}
	return pp
}

// setUp creates the sandbox and the volumes.
func (pp *procPod) setUp(ctx context.Context) error {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.sandbox != nil {
		return nil
	}
	// Every pod's process traverses the pods directory to its own; none
	// can list it.
	if err := os.MkdirAll(pp.cfg.Dir, 0o711); err != nil {
		return err
	}
	if err := os.Chmod(pp.cfg.Dir, 0o711); err != nil {
		return err
	}
	if err := pp.mkdir(pp.dir); err != nil {
		return err
	}
	dirs, err := pp.materialiseVolumes(ctx)
	if err != nil {
		return err
	}
	s, err := pp.cfg.Network.NewSandbox(pp.ip)
	if err != nil {
		return err
	}
	pp.sandbox, pp.dirs = s, dirs
	var pctx context.Context
	pctx, pp.cancel = context.WithCancel(context.Background())
	if pp.tokenFile != "" {
		go pp.renewTokens(pctx)
	}
	return nil
}

// sync starts containers that should run: the first time, and after
// back-off for those that exited under restartPolicy Always/OnFailure. It
// returns how long until a back-off ends (0: nothing pending).
func (pp *procPod) sync(ctx context.Context) time.Duration {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.stopping || pp.sandbox == nil {
		return 0
	}
	var next time.Duration
	now := time.Now()
	for _, c := range pp.containers {
		if c.image == nil && !c.running && c.term != nil {
			// A simulated container that died with the node starts again
			// with the sandbox.
			c.last, c.term = c.term, nil
			c.restarts++
			c.running, c.ready, c.started, c.startedAt = true, true, true, now
			pp.version++
		}
		if c.image == nil || c.running {
			continue
		}
		if c.term != nil {
			if !restarts(pp.pod.Spec.RestartPolicy, c.term.ExitCode) {
				continue
			}
			if c.restartAt.IsZero() {
				c.restartAt = now.Add(pp.backoffFor(c.restarts))
			}
			if wait := c.restartAt.Sub(now); wait > 0 {
				if next == 0 || wait < next {
					next = wait
				}
				continue
			}
			c.last, c.term, c.restartAt = c.term, nil, time.Time{}
			c.restarts++
		}
		if err := pp.start(ctx, c); err != nil {
			// As containerd reports a container that could not start: it
			// ends at once with StartError, and restarts with back-off.
			pp.recorder.Eventf(pp.pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
			c.term = &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: err.Error(),
				StartedAt: metav1.Now(), FinishedAt: metav1.Now()}
		}
		pp.version++
	}
	return next
}

func (pp *procPod) backoffFor(restarts int32) time.Duration {
	d := time.Duration(float64(restartBackoffBase) * max(pp.backoff, 0.01))
	limit := time.Duration(float64(restartBackoffMax) * max(pp.backoff, 0.01))
	for range restarts {
		d *= 2
		if d >= limit {
			return limit
		}
	}
	return d
}

func restarts(policy corev1.RestartPolicy, code int32) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return true
}

// start runs one container's process in the sandbox. Called with pp.mu.
func (pp *procPod) start(ctx context.Context, c *container) error {
	mounts := mountsOf(&c.spec, pp.dirs)
	env, vars, err := pp.envOf(ctx, &c.spec)
	if err != nil {
		return err
	}
	argv := append(append([]string(nil), c.spec.Command...), c.spec.Args...)
	if len(c.spec.Command) == 0 {
		argv = append([]string{c.image.Entrypoint}, c.spec.Args...)
	}
	if argv[0] != c.image.Entrypoint {
		return fmt.Errorf("exec: %q: not found in the image (huddle-sim runs only its entrypoint %s)", argv[0], c.image.Entrypoint)
	}
	for i := range argv[1:] {
		argv[i+1] = mounts.translateArg(expand(argv[i+1], vars))
	}
	for i, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		env[i] = k + "=" + mounts.translate(v)
	}
	env = append(env, "HOME=/nonexistent", "PATH=/usr/local/bin:/usr/bin:/bin")
	if pp.tokenFile != "" {
		if host := mounts.translate(ServiceAccountMountPath); host != ServiceAccountMountPath {
			kubeconfig, err := pp.writeKubeconfig(filepath.Join(host, pp.tokenFile))
			if err != nil {
				return err
			}
			env = append(env, "KUBECONFIG="+kubeconfig)
		}
	}
	logDir := filepath.Join(pp.dir, c.spec.Name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(logDir, fmt.Sprintf("%d.log", c.restarts)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.image.Binary, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env, cmd.Stdout, cmd.Stderr = env, log, log
	cmd.Dir = pp.dir
	if wd := c.spec.WorkingDir; wd != "" {
		if host := mounts.translate(wd); host != wd {
			cmd.Dir = host
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true, Credential: credential(pp.pod, &c.spec)}
	if err := pp.sandbox.Start(cmd); err != nil {
		log.Close()
		return err
	}
	c.cmd, c.done, c.running, c.startedAt = cmd, make(chan struct{}), true, time.Now()
	c.ready, c.started = false, c.spec.StartupProbe == nil
	pp.recorder.Eventf(pp.pod, corev1.EventTypeNormal, "Started", "Started container %s", c.spec.Name)
	var pctx context.Context
	pctx, c.stopProbes = context.WithCancel(context.Background())
	pp.startProbes(pctx, c)
	go pp.wait(c, cmd, c.done, log)
	return nil
}

// wait records how a container's process ended.
func (pp *procPod) wait(c *container, cmd *exec.Cmd, done chan struct{}, log *os.File) {
	err := cmd.Wait()
	log.Close()
	defer close(done)
	code := int32(0)
	reason := "Completed"
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int32(ws.Signal()) // 143 for SIGTERM, 137 for SIGKILL
		} else {
			code = int32(exit.ExitCode())
		}
	}
	if code != 0 {
		reason = "Error"
	}
	pp.mu.Lock()
	if c.cmd == cmd {
		c.stopProbes()
		c.running, c.ready = false, false
		c.term = &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: reason, StartedAt: metav1.NewTime(c.startedAt), FinishedAt: metav1.Now(),
			ContainerID: containerID(pp.pod, fmt.Sprintf("%s-%d", c.spec.Name, c.restarts)),
		}
		pp.version++
	}
	pp.mu.Unlock()
	pp.notify()
}

// stop runs each container's preStop hook, then sends SIGTERM, and
// SIGKILL when grace (counted from the start, hooks included) runs out, as
// the kubelet does to a deleted pod.
func (pp *procPod) stop(grace time.Duration) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.stopping {
		return
	}
	pp.stopping = true
	deadline := time.Now().Add(grace)
	for _, c := range pp.containers {
		if !c.running || c.cmd == nil {
			continue
		}
		cmd, spec, done := c.cmd, c.spec, c.done
		pp.recorder.Eventf(pp.pod, corev1.EventTypeNormal, "Killing", "Stopping container %s", c.spec.Name)
		go pp.terminate(cmd, done, &spec, deadline)
	}
}

// terminate runs the container's preStop hook, sends SIGTERM, and SIGKILL
// at the deadline (at least 2 s after SIGTERM, as the kubelet allows) if
// the process is still there.
func (pp *procPod) terminate(cmd *exec.Cmd, done <-chan struct{}, spec *corev1.Container, deadline time.Time) {
	if spec.Lifecycle != nil && spec.Lifecycle.PreStop != nil {
		pp.preStop(spec, spec.Lifecycle.PreStop, deadline)
	}
	kill(cmd, done, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(max(time.Until(deadline), 2*time.Second)):
		kill(cmd, done, syscall.SIGKILL)
	}
}

// kill signals a container's process group unless its process has been
// reaped: by then its pid may belong to another process.
func kill(cmd *exec.Cmd, done <-chan struct{}, sig syscall.Signal) {
	select {
	case <-done:
	default:
		_ = syscall.Kill(-cmd.Process.Pid, sig)
	}
}

// preStop runs a preStop hook until it ends or the deadline passes: a
// sleep (the kubelet's own action) or an HTTP GET into the sandbox; exec
// hooks cannot run here and are skipped.
func (pp *procPod) preStop(spec *corev1.Container, h *corev1.LifecycleHandler, deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	switch {
	case h.Sleep != nil:
		sleep(ctx, time.Duration(h.Sleep.Seconds)*time.Second)
	case h.HTTPGet != nil:
		_ = pp.probe(ctx, &container{spec: *spec}, &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: h.HTTPGet}, TimeoutSeconds: int32(max(time.Until(deadline).Seconds(), 1))})
	}
}

// powerOff kills every process at once and removes the sandbox, as a
// crashed instance loses them; containers restart when power returns.
func (pp *procPod) powerOff() {
	pp.mu.Lock()
	var exits []chan struct{}
	lost := map[*container]bool{}
	for _, c := range pp.containers {
		lost[c] = c.running
		if c.running && c.cmd != nil {
			exits = append(exits, c.done)
			kill(c.cmd, c.done, syscall.SIGKILL)
		}
	}
	pp.mu.Unlock()
	for _, done := range exits {
		<-done // SIGKILL cannot be caught: the exit comes at once
	}
	pp.mu.Lock()
	defer pp.mu.Unlock()
	now := metav1.Now()
	for _, c := range pp.containers {
		if c.image != nil {
			c.restartAt = time.Now() // a rebooted node starts its pods without back-off
		}
		if !lost[c] {
			continue
		}
		// containerd, restarting, records a container whose task vanished
		// as exited 255, Unknown (internal/cri/server/restart.go); the
		// simulated containers of the pod die with it too.
		c.term = &corev1.ContainerStateTerminated{
			ExitCode: exitLost.code, Reason: exitLost.reason, StartedAt: metav1.NewTime(c.startedAt), FinishedAt: now,
			ContainerID: containerID(pp.pod, fmt.Sprintf("%s-%d", c.spec.Name, c.restarts)),
		}
		if c.image == nil {
			c.running, c.ready = false, false
		}
		pp.version++
	}
	pp.teardown()
}

// exited says whether every process has ended.
func (pp *procPod) exited() bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for _, c := range pp.containers {
		if c.image != nil && c.running {
			return false
		}
	}
	return true
}

// close removes the sandbox once the processes are gone.
func (pp *procPod) close() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.teardown()
}

func (pp *procPod) teardown() {
	if pp.cancel != nil {
		pp.cancel()
	}
	if pp.sandbox != nil {
		pp.sandbox.Close()
		pp.sandbox = nil
	}
}

// renewTokens rewrites the projected token at 80% of its lifetime, as
// the kubelet's token manager does.
func (pp *procPod) renewTokens(ctx context.Context) {
	every := time.Duration(defaultTokenSeconds) * time.Second * 8 / 10
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := pp.materialiseVolumes(ctx); err != nil {
				pp.recorder.Eventf(pp.pod, corev1.EventTypeWarning, "FailedMount", "renewing volumes: %v", err)
			}
		}
	}
}

// credential runs the process as the container's runAsUser/runAsGroup.
func credential(pod *corev1.Pod, c *corev1.Container) *syscall.Credential {
	var uid, gid *int64
	if sc := pod.Spec.SecurityContext; sc != nil {
		uid, gid = sc.RunAsUser, sc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	if uid == nil {
		return nil
	}
	cred := &syscall.Credential{Uid: uint32(*uid), Gid: uint32(ptr.Deref(gid, 0))}
	if sc := pod.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		cred.Groups = []uint32{uint32(*sc.FSGroup)}
	}
	return cred
}

// status is the pod status a process pod's containers show, and whether
// the pod is done (no container runs or will restart). stopped forces the
// final status of a deleted pod.
func (pp *procPod) status(pod *corev1.Pod, n *node, now time.Time, stopped bool) (corev1.PodStatus, int, bool) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	s := *pod.Status.DeepCopy()
	t := metav1.NewTime(now)
	s.HostIP, s.HostIPs = n.ip, []corev1.HostIP{{IP: n.ip}}
	s.PodIP, s.PodIPs = pp.ip, []corev1.PodIP{{IP: pp.ip}}
	allReady, active, failed := true, false, false
	s.ContainerStatuses = nil
	for _, c := range pp.containers {
		cs := corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: c.spec.Image,
			RestartCount: c.restarts, Ready: c.running && c.ready && c.started && !stopped, Started: ptr.To(c.running && c.started),
			ContainerID: containerID(pod, fmt.Sprintf("%s-%d", c.spec.Name, c.restarts)),
		}
		if c.last != nil {
			cs.LastTerminationState.Terminated = c.last
		}
		term := c.term
		if c.image == nil && stopped && c.running {
			// A simulated container honours SIGTERM at once.
			term = &corev1.ContainerStateTerminated{ExitCode: exitSIGTERM.code, Reason: exitSIGTERM.reason, StartedAt: metav1.NewTime(c.startedAt), FinishedAt: t}
		}
		switch {
		case c.running && !stopped:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
			active = true
		case term != nil && !stopped && restarts(pod.Spec.RestartPolicy, term.ExitCode):
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off restarting failed container %s in pod %s", c.spec.Name, pod.Name)}
			cs.LastTerminationState.Terminated = term
			active = true
		case term != nil:
			cs.State.Terminated = term
			failed = failed || term.ExitCode != 0
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
			active = !stopped
		}
		allReady = allReady && cs.Ready
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
	}
	done := !active
	ready, reason := corev1.ConditionTrue, ""
	if !allReady {
		ready, reason = corev1.ConditionFalse, "ContainersNotReady"
	}
	switch {
	case !done:
		s.Phase = corev1.PodRunning
	case failed:
		s.Phase, reason = corev1.PodFailed, "PodFailed"
	default:
		s.Phase, reason = corev1.PodSucceeded, "PodCompleted"
	}
	s.Conditions = setConditions(s.Conditions, t,
		cond(corev1.PodReadyToStartContainers, boolCondition(!done), "", ""),
		cond(corev1.PodInitialized, corev1.ConditionTrue, "", ""),
		cond(corev1.PodReady, ready, reason, ""),
		cond(corev1.ContainersReady, ready, reason, ""),
	)
	return s, pp.version, done
}

func boolCondition(b bool) corev1.ConditionStatus {
	if b {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
}
