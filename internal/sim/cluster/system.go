package cluster

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/utils/ptr"
)

// The system pods of a fresh EKS cluster with the add-ons every cluster
// has (VPC CNI, kube-proxy, CoreDNS, EKS Pod Identity Agent) and the EBS
// CSI driver add-on huddle needs. Their requests are what a workload
// loses on every node: without them the simulator's nodes had room that
// EKS nodes do not.
//
// Sources of the figures (requests, tolerations, priority), as of August
// 2026:
//   - aws-node: github.com/aws/amazon-vpc-cni-k8s config/master/aws-k8s-cni.yaml
//     (v1.23.1; the chart charts/aws-vpc-cni renders the same): containers
//     aws-node and aws-eks-nodeagent (the network policy agent, present
//     even with network policy off) request 25m CPU each, the init
//     container 25m; tolerations [operator: Exists]; system-node-critical.
//   - kube-proxy: AWS publishes no source for the EKS add-on's manifest.
//     The DaemonSet EKS installs (kubectl get ds kube-proxy -o yaml, and
//     the aws-kube-proxy chart that reproduces it) requests 100m CPU,
//     tolerates everything, system-node-critical.
//   - ebs-csi-node: github.com/kubernetes-sigs/aws-ebs-csi-driver chart
//     aws-ebs-csi-driver 2.64.0, values.yaml node.resources (ebs-plugin 10m,
//     40Mi) and templates/_node.tpl's defaults for the sidecars
//     (node-driver-registrar and liveness-probe 10m, 32Mi each; 40Mi before
//     chart 2.57.1, PR #2884); node.tolerateAllTaints: true;
//     system-node-critical.
//   - eks-pod-identity-agent: github.com/aws/eks-pod-identity-agent chart
//     1.2.0 values.yaml: resources {} (no requests; the EKS add-on's
//     schema allows setting them, its defaults are not published, so the
//     chart's are used), tolerations [operator: Exists],
//     system-node-critical. It still takes one of the node's pods.
//   - coredns: eksctl's copy of the EKS add-on manifest
//     (github.com/eksctl-io/eksctl pkg/addons/default/assets/coredns-1.36.json):
//     2 replicas of 100m CPU and 70Mi, tolerating only CriticalAddonsOnly
//     and the control-plane taint, preferred anti-affinity by hostname,
//     a zone spread; the add-on adds a PodDisruptionBudget of
//     maxUnavailable 1.
//
// Their images are not runnable here, so the kubelets simulate them: they
// run and are Ready as any simulated pod is.

// SystemNamespace is where the add-ons run.
const SystemNamespace = metav1.NamespaceSystem

// systemDaemonSets are the add-ons' DaemonSets, one pod on every node.
func systemDaemonSets() []*appsv1.DaemonSet {
	return []*appsv1.DaemonSet{
		daemonSet("aws-node", map[string]string{"k8s-app": "aws-node"}, true,
			[]corev1.Container{
				{Name: "aws-vpc-cni-init", Image: "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni-init:v1.23.1", Resources: requests("25m", "")},
			},
			[]corev1.Container{
				{
					Name: "aws-node", Image: "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.23.1",
					Ports:     []corev1.ContainerPort{{Name: "metrics", ContainerPort: 61678}},
					Resources: requests("25m", ""),
				},
				{
					Name: "aws-eks-nodeagent", Image: "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon/aws-network-policy-agent:v1.4.2",
					Ports:     []corev1.ContainerPort{{Name: "agentmetrics", ContainerPort: 8162}},
					Resources: requests("25m", ""),
				},
			}),
		daemonSet("kube-proxy", map[string]string{"k8s-app": "kube-proxy"}, true, nil,
			[]corev1.Container{
				{Name: "kube-proxy", Image: "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/kube-proxy:v1.36.3-minimal-eksbuild.1", Resources: requests("100m", "")},
			}),
		daemonSet("ebs-csi-node", map[string]string{"app": "ebs-csi-node", "app.kubernetes.io/name": "aws-ebs-csi-driver"}, false, nil,
			[]corev1.Container{
				{
					Name: "ebs-plugin", Image: "public.ecr.aws/ebs-csi-driver/aws-ebs-csi-driver:v1.64.0",
					Ports:     []corev1.ContainerPort{{Name: "healthz", ContainerPort: 9808}},
					Resources: withMemoryLimit(requests("10m", "40Mi"), "256Mi"),
				},
				{Name: "node-driver-registrar", Image: "public.ecr.aws/csi-components/csi-node-driver-registrar:v2.15.0-eksbuild.4", Resources: withMemoryLimit(requests("10m", "32Mi"), "32Mi")},
				{Name: "liveness-probe", Image: "public.ecr.aws/csi-components/livenessprobe:v2.19.0-eksbuild.5", Resources: withMemoryLimit(requests("10m", "32Mi"), "32Mi")},
			}),
		daemonSet("eks-pod-identity-agent", map[string]string{"app.kubernetes.io/name": "eks-pod-identity-agent", "app.kubernetes.io/instance": "eks-pod-identity-agent"}, true,
			[]corev1.Container{
				{Name: "eks-pod-identity-agent-init", Image: "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/eks-pod-identity-agent:v0.1.20"},
			},
			[]corev1.Container{
				{
					Name: "eks-pod-identity-agent", Image: "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/eks-pod-identity-agent:v0.1.20",
					Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 80}, {Name: "probes-port", ContainerPort: 2703}},
				},
			}),
	}
}

// daemonSet builds an add-on's DaemonSet as its manifest has it where it
// matters to scheduling: every taint tolerated, system-node-critical
// priority, Linux nodes of either architecture that are not Fargate, and
// the host's network for those that use it (their ports are then the
// node's, which the scheduler's NodePorts plugin holds against other pods).
func daemonSet(name string, labels map[string]string, hostNetwork bool, initContainers, containers []corev1.Container) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SystemNamespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromString("10%"))},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					PriorityClassName:  "system-node-critical",
					HostNetwork:        hostNetwork,
					Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
							MatchExpressions: []corev1.NodeSelectorRequirement{
								{Key: corev1.LabelOSStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"linux"}},
								{Key: corev1.LabelArchStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"amd64", "arm64"}},
								{Key: "eks.amazonaws.com/compute-type", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"fargate"}},
							},
						}}},
					}},
					InitContainers:                initContainers,
					Containers:                    containers,
					TerminationGracePeriodSeconds: ptr.To(int64(10)),
				},
			},
		},
	}
}

func requests(cpu, memory string) corev1.ResourceRequirements {
	r := corev1.ResourceList{}
	if cpu != "" {
		r[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if memory != "" {
		r[corev1.ResourceMemory] = resource.MustParse(memory)
	}
	return corev1.ResourceRequirements{Requests: r}
}

func withMemoryLimit(r corev1.ResourceRequirements, limit string) corev1.ResourceRequirements {
	r.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(limit)}
	return r
}

// coreDNSLabels select CoreDNS's pods, as the add-on's Deployment does.
var coreDNSLabels = map[string]string{"k8s-app": "kube-dns", "eks.amazonaws.com/component": "coredns"}

// coreDNS is the CoreDNS add-on: its Deployment, its PodDisruptionBudget
// and the kube-dns Service. Unlike the DaemonSets it tolerates only the
// taints EKS reserves for add-ons, so nodes tainted for one workload (a
// test's pool) never hold it.
func coreDNS() (*appsv1.Deployment, *policyv1.PodDisruptionBudget, *corev1.Service) {
	spread := metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: SystemNamespace, Labels: coreDNSLabels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: coreDNSLabels},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxSurge:       ptr.To(intstr.FromString("25%")),
					MaxUnavailable: ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: coreDNSLabels},
				Spec: corev1.PodSpec{
					ServiceAccountName: "coredns",
					PriorityClassName:  "system-cluster-critical",
					DNSPolicy:          corev1.DNSDefault,
					Tolerations: []corev1.Toleration{
						{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule},
						{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists},
					},
					Affinity: &corev1.Affinity{
						NodeAffinity: &corev1.NodeAffinity{
							RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
								MatchExpressions: []corev1.NodeSelectorRequirement{
									{Key: corev1.LabelOSStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"linux"}},
									{Key: corev1.LabelArchStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"amd64", "arm64"}},
								},
							}}},
						},
						PodAntiAffinity: &corev1.PodAntiAffinity{
							PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
								Weight: 100,
								PodAffinityTerm: corev1.PodAffinityTerm{
									LabelSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
										{Key: "k8s-app", Operator: metav1.LabelSelectorOpIn, Values: []string{"kube-dns"}},
									}},
									TopologyKey: corev1.LabelHostname,
								},
							}},
						},
					},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone,
						WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &spread,
					}},
					Containers: []corev1.Container{{
						Name: "coredns", Image: "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.14.3-eksbuild.3",
						Args: []string{"-conf", "/etc/coredns/Corefile"},
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
						},
						Resources: withMemoryLimit(requests("100m", "70Mi"), "170Mi"),
					}},
				},
			},
		},
	}
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: SystemNamespace, Labels: coreDNSLabels},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: coreDNSLabels},
		},
	}
	// The tenth address of the service range, as EKS gives kube-dns the
	// tenth of its own (10.100.0.10 or 172.20.0.10).
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: SystemNamespace, Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.10",
			Selector:  map[string]string{"k8s-app": "kube-dns"},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
				{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
			},
		},
	}
	return dep, pdb, svc
}

// SystemRequests is what the add-ons' DaemonSets take on every node: the
// sum of their pods' requests (cpu and memory, as the scheduler counts
// them: the larger of the containers' sum and any init container) and one
// pod each. On an m5.xlarge: 180m of 3920m CPU, 104Mi, 4 of 58 pods.
func SystemRequests() corev1.ResourceList {
	total := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("0"),
		corev1.ResourceMemory: resource.MustParse("0"),
		corev1.ResourcePods:   resource.MustParse("0"),
	}
	for _, ds := range systemDaemonSets() {
		pod := &corev1.Pod{Spec: ds.Spec.Template.Spec}
		for r, q := range resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{}) {
			if sum, ok := total[r]; ok {
				sum.Add(q)
				total[r] = sum
			}
		}
		pods := total[corev1.ResourcePods]
		pods.Add(resource.MustParse("1"))
		total[corev1.ResourcePods] = pods
	}
	return total
}

// installSystem creates the add-ons in kube-system: their service
// accounts (the ServiceAccount admission plugin refuses pods without
// them), the DaemonSets and CoreDNS. The DaemonSet controller then
// creates the pods, on the nodes registered so far and on every node
// added later.
func installSystem(ctx context.Context, client kubernetes.Interface) error {
	dep, pdb, svc := coreDNS()
	accounts := []string{dep.Spec.Template.Spec.ServiceAccountName}
	for _, ds := range systemDaemonSets() {
		accounts = append(accounts, ds.Spec.Template.Spec.ServiceAccountName)
	}
	for _, name := range accounts {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SystemNamespace}}
		if _, err := client.CoreV1().ServiceAccounts(SystemNamespace).Create(ctx, sa, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("service account %s: %w", name, err)
		}
	}
	for _, ds := range systemDaemonSets() {
		if _, err := client.AppsV1().DaemonSets(SystemNamespace).Create(ctx, ds, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("DaemonSet %s: %w", ds.Name, err)
		}
	}
	if _, err := client.CoreV1().Services(SystemNamespace).Create(ctx, svc, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return fmt.Errorf("Service kube-dns: %w", err)
	}
	if _, err := client.PolicyV1().PodDisruptionBudgets(SystemNamespace).Create(ctx, pdb, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return fmt.Errorf("PodDisruptionBudget coredns: %w", err)
	}
	if _, err := client.AppsV1().Deployments(SystemNamespace).Create(ctx, dep, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return fmt.Errorf("Deployment coredns: %w", err)
	}
	return nil
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// WaitSystemPods waits until every add-on DaemonSet that should run on
// the named nodes has a Ready pod on each, so that a caller that fills a
// node next fills only the room they leave (the add-ons' pods, being
// system-node-critical, would otherwise preempt what took their place).
// It returns at once if the cluster has no system pods.
func (c *Cluster) WaitSystemPods(ctx context.Context, nodes []string, timeout time.Duration) error {
	if !c.SystemPods || len(nodes) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sets := systemDaemonSets()
	for {
		missing, err := c.missingSystemPods(ctx, nodes, sets)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil && len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			sort.Strings(missing)
			if len(missing) > 5 {
				missing = append(missing[:5], fmt.Sprintf("and %d more", len(missing)-5))
			}
			return fmt.Errorf("system pods not Ready after %s: %s (see kubectl -n kube-system get pods -o wide; a node too small for them keeps them Pending, as on EKS)", timeout, strings.Join(missing, ", "))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// missingSystemPods names, as "DaemonSet on node", the add-on pods that
// should run on nodes and are not Running and Ready yet.
func (c *Cluster) missingSystemPods(ctx context.Context, nodes []string, sets []*appsv1.DaemonSet) ([]string, error) {
	pods, err := c.Client.CoreV1().Pods(SystemNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	ready := map[string]bool{} // "<DaemonSet> on <node>"
	for i := range pods.Items {
		p := &pods.Items[i]
		owner := metav1.GetControllerOf(p)
		if owner == nil || owner.Kind != "DaemonSet" || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ready[owner.Name+" on "+p.Spec.NodeName] = true
			}
		}
	}
	list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	byName := make(map[string]*corev1.Node, len(list.Items))
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	var missing []string
	for _, name := range nodes {
		node := byName[name]
		if node == nil {
			continue // gone (terminated): nothing runs there
		}
		for _, ds := range sets {
			// A node the DaemonSet does not select (another OS or
			// architecture, from a manifest) runs none of its pods.
			pod := &corev1.Pod{Spec: ds.Spec.Template.Spec}
			if ok, _ := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node); !ok {
				continue
			}
			if key := ds.Name + " on " + name; !ready[key] {
				missing = append(missing, key)
			}
		}
	}
	return missing, nil
}

// SystemPodsTimeout is how long n new nodes may take to run their system
// pods: the DaemonSet controller creates them in slow-start batches and
// the scheduler binds them at its client's rate.
func SystemPodsTimeout(n int) time.Duration {
	return time.Minute + time.Duration(n)*100*time.Millisecond
}
