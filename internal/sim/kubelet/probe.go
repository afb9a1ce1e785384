package kubelet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeKind is which of a container's probes runs.
type probeKind string

const (
	startupProbe   probeKind = "Startup"
	livenessProbe  probeKind = "Liveness"
	readinessProbe probeKind = "Readiness"
)

// startProbes runs the container's probes, as the kubelet's prober does:
// the startup probe first; then liveness (failures restart the container)
// and readiness (which makes the pod Ready or not). Called with pp.mu.
func (pp *procPod) startProbes(ctx context.Context, c *container) {
	if c.spec.ReadinessProbe == nil && c.spec.StartupProbe == nil {
		c.ready = true
	}
	go func() {
		if p := c.spec.StartupProbe; p != nil {
			if !pp.probeLoop(ctx, c, startupProbe, p) {
				return
			}
		}
		if p := c.spec.LivenessProbe; p != nil {
			go pp.probeLoop(ctx, c, livenessProbe, p)
		}
		if p := c.spec.ReadinessProbe; p != nil {
			go pp.probeLoop(ctx, c, readinessProbe, p)
		}
	}()
}

// probeLoop probes every period until ctx ends. A startup probe returns
// true once it succeeds.
func (pp *procPod) probeLoop(ctx context.Context, c *container, kind probeKind, p *corev1.Probe) bool {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	failureThreshold := int(max(p.FailureThreshold, 1))
	successThreshold := int(max(p.SuccessThreshold, 1))
	if !sleep(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return false
	}
	failures, successes := 0, 0
	for {
		err := pp.probe(ctx, c, p)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			failures, successes = 0, successes+1
		} else {
			failures, successes = failures+1, 0
			pp.recorder.Eventf(pp.pod, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %v", kind, err)
		}
		switch kind {
		case startupProbe:
			if err == nil {
				// Without a readiness probe a started container is ready.
				pp.update(c, func() { c.started, c.ready = true, c.ready || c.spec.ReadinessProbe == nil })
				return true
			}
			if failures >= failureThreshold {
				pp.restartUnhealthy(c, kind)
				return false
			}
		case livenessProbe:
			if failures >= failureThreshold {
				pp.restartUnhealthy(c, kind)
				return false
			}
		case readinessProbe:
			if successes >= successThreshold {
				pp.update(c, func() { c.ready = true })
			}
			if failures >= failureThreshold {
				pp.update(c, func() { c.ready = false })
			}
		}
		if !sleep(ctx, period) {
			return false
		}
	}
}

// update changes a container's state and requeues the pod if that shows.
func (pp *procPod) update(c *container, f func()) {
	pp.mu.Lock()
	before := *c
	f()
	changed := before.ready != c.ready || before.started != c.started
	if changed {
		pp.version++
	}
	pp.mu.Unlock()
	if changed {
		pp.notify()
	}
}

// restartUnhealthy kills a container whose liveness or startup probe
// failed; it restarts under the pod's restart policy.
func (pp *procPod) restartUnhealthy(c *container, kind probeKind) {
	pp.mu.Lock()
	cmd, done, running, spec := c.cmd, c.done, c.running, c.spec
	pp.mu.Unlock()
	if !running || cmd == nil {
		return
	}
	pp.recorder.Eventf(pp.pod, corev1.EventTypeNormal, "Killing", "Container %s failed %s probe, will be restarted", c.spec.Name, kind)
	grace := time.Duration(gracePeriod(pp.pod)) * time.Second
	go pp.terminate(cmd, done, &spec, time.Now().Add(grace))
}

// probe runs one probe through the sandbox's network.
func (pp *procPod) probe(ctx context.Context, c *container, p *corev1.Probe) error {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pp.mu.Lock()
	s := pp.sandbox
	pp.mu.Unlock()
	if s == nil {
		return fmt.Errorf("no sandbox")
	}
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := containerPort(&c.spec, g.Port)
		if err != nil {
			return err
		}
		host := g.Host
		if host == "" {
			host = pp.ip
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		client := &http.Client{Timeout: timeout, Transport: &http.Transport{
			DialContext:       func(ctx context.Context, _, addr string) (net.Conn, error) { return s.Dial(ctx, addr) },
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the kubelet does not verify probe certificates
			DisableKeepAlives: true,
		}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), g.Path), nil)
		if err != nil {
			return err
		}
		for _, h := range g.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		req.Header.Set("User-Agent", "kube-probe/1.36")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := containerPort(&c.spec, p.TCPSocket.Port)
		if err != nil {
			return err
		}
		conn, err := s.Dial(ctx, net.JoinHostPort(pp.ip, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	}
	// exec and gRPC probes cannot run here: count them as passing.
	return nil
}

// containerPort resolves a probe's port, by number or by name.
func containerPort(c *corev1.Container, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("port %q is not a named port of container %s", port.StrVal, c.Name)
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
