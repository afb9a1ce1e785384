package kubelet

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// The kubelet admits every pod bound to its node again, whoever bound it:
// a pod bound directly (spec.nodeName set by its author, no scheduler)
// meets these checks first. They are its predicate admit handler's
// (kubernetes pkg/kubelet/lifecycle/predicate.go, Admit and
// generalFilter), which runs the scheduler's AdmissionCheck (resources,
// NodeAffinity, NodeName, NodePorts; pkg/scheduler/eventhandlers.go)
// and then rejects a pod that does not tolerate a NoExecute taint of the
// node. Only the first failure is reported, as the pod's reason.

// Reasons and descriptions of the scheduler plugins the kubelet names
// (pkg/scheduler/framework/plugins: nodeaffinity, nodename, nodeports,
// tainttoleration).
const (
	reasonNodeAffinity    = "NodeAffinity"
	reasonNodeName        = "NodeName"
	reasonNodePorts       = "NodePorts"
	reasonTaintToleration = "TaintToleration"

	descNodeAffinity    = "node(s) didn't match Pod's node affinity/selector"
	descNodeName        = "node(s) didn't match the requested node name"
	descNodePorts       = "node(s) didn't have free ports for the requested pod ports"
	descTaintToleration = "node(s) had taints that the pod didn't tolerate"
)

// nodeUsage is what the pods a kubelet already runs take of its node.
type nodeUsage struct {
	pods      int64
	requested corev1.ResourceList
	ports     []corev1.ContainerPort
}

// admission decides whether the kubelet of node admits pod, given its
// allocatable (the kubelet's own figures, with the extended resources the
// Node advertises) and what its other pods use. nil admits.
func admission(pod *corev1.Pod, node *corev1.Node, allocatable corev1.ResourceList, requests corev1.ResourceList, used nodeUsage) *rejection {
	if r := fits(requests, allocatable, used); r != nil {
		return r
	}
	if ok, _ := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node); !ok {
		return predicateFailure(reasonNodeAffinity, descNodeAffinity)
	}
	if pod.Spec.NodeName != "" && pod.Spec.NodeName != node.Name {
		return predicateFailure(reasonNodeName, descNodeName)
	}
	if portsConflict(hostPorts(pod), used.ports) {
		return predicateFailure(reasonNodePorts, descNodePorts)
	}
	// Kubelet is only interested in the NoExecute taint.
	noExecute := func(t *corev1.Taint) bool { return t.Effect == corev1.TaintEffectNoExecute }
	if _, untolerated := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), node.Spec.Taints, pod.Spec.Tolerations, noExecute, false); untolerated {
		return predicateFailure(reasonTaintToleration, descTaintToleration)
	}
	return nil
}

// predicateFailure is the kubelet's PredicateFailureError: the reason is
// the plugin's name.
func predicateFailure(name, desc string) *rejection {
	return &rejection{name, fmt.Sprintf("Predicate %s failed: %s", name, desc)}
}

// fits is the scheduler's noderesources.Fits as the kubelet runs it: pods
// first, then cpu, memory, ephemeral storage and extended resources, each
// against allocatable less what the other pods request. Requests of
// extended resources the node does not advertise are dropped first
// (removeMissingExtendedResources: "If a pod was manually bound to a node
// where a node-level extended resource it requires is not found, then
// kubelet will not fail admission while it should").
func fits(requests, allocatable corev1.ResourceList, used nodeUsage) *rejection {
	if maxPods := allocatable.Pods().Value(); used.pods+1 > maxPods {
		return insufficient(corev1.ResourcePods, 1, used.pods, maxPods)
	}
	names := []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage}
	var extended []corev1.ResourceName
	for r := range requests {
		if _, advertised := allocatable[r]; advertised && isExtendedResource(r) {
			extended = append(extended, r)
		}
	}
	sort.Slice(extended, func(i, j int) bool { return extended[i] < extended[j] })
	for _, r := range append(names, extended...) {
		req, ok := requests[r]
		if !ok {
			continue
		}
		u, capacity := used.requested[r], allocatable[r]
		reqV, usedV, capV := req.Value(), u.Value(), capacity.Value()
		if r == corev1.ResourceCPU {
			reqV, usedV, capV = req.MilliValue(), u.MilliValue(), capacity.MilliValue()
		}
		if reqV > 0 && reqV > capV-usedV {
			return insufficient(r, reqV, usedV, capV)
		}
	}
	return nil
}

// insufficient is the kubelet's InsufficientResourceError; its message
// says capacity and gives allocatable.
func insufficient(r corev1.ResourceName, requested, used, capacity int64) *rejection {
	return &rejection{"OutOf" + string(r), fmt.Sprintf("Node didn't have enough resource: %s, requested: %d, used: %d, capacity: %d", r, requested, used, capacity)}
}

// isExtendedResource follows v1helper.IsExtendedResourceName: a name with
// a domain outside kubernetes.io, not a quota "requests." name.
func isExtendedResource(r corev1.ResourceName) bool {
	s := string(r)
	return strings.Contains(s, "/") && !strings.Contains(s, corev1.ResourceDefaultNamespacePrefix) && !strings.HasPrefix(s, corev1.DefaultResourceRequestsPrefix)
}

// hostPorts are the pod's containers' ports that take a host port.
func hostPorts(pod *corev1.Pod) []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort > 0 {
				out = append(out, p)
			}
		}
	}
	return out
}

// portsConflict is NodePorts' rule: the same host port and protocol on the
// same host IP, where 0.0.0.0 (or none) takes the port on every IP.
func portsConflict(want, used []corev1.ContainerPort) bool {
	norm := func(p corev1.ContainerPort) (string, corev1.Protocol) {
		ip, proto := p.HostIP, p.Protocol
		if ip == "" {
			ip = "0.0.0.0"
		}
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		return ip, proto
	}
	for _, w := range want {
		wIP, wProto := norm(w)
		for _, u := range used {
			uIP, uProto := norm(u)
			if w.HostPort == u.HostPort && wProto == uProto && (wIP == uIP || wIP == "0.0.0.0" || uIP == "0.0.0.0") {
				return true
			}
		}
	}
	return false
}
