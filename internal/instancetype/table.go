package instancetype

// The table of the instance types huddle-sim knows.
//
// Sources, checked for every row:
//   - vCPUs, memory and architecture: the AWS instance type pages
//     (https://aws.amazon.com/ec2/instance-types/ and the EC2 User Guide's
//     "Amazon EC2 instance type specifications"); m7g is Graviton3, arm64.
//   - ENIs and IPv4 addresses per ENI: amazon-eks-ami,
//     nodeadm/internal/kubelet/instance-info.jsonl (defaultMaxENIs,
//     ipv4AddressesPerInterface), the successor of its eni-max-pods.txt; the
//     max pods those give (ENIs*(IPs-1)+2) are eni-max-pods.txt's figures.
//   - EBS attachments: aws-ebs-csi-driver, pkg/cloud/limits: none of these
//     types is in its volumeLimits table (generated from EC2
//     DescribeInstanceTypes), so each gets the driver's default for Nitro
//     instances, a limit of 27 shared with network interfaces (the EC2
//     docs' 28 attachments, less the primary ENI). Types with a dedicated
//     EBS limit (m7i, c7i, r7i, the 8th generation) are not in this table.
var table = []Type{
	// General purpose, 4 GiB per vCPU.
	{Name: "m5.large", VCPUs: 2, MemoryGiB: 8, Arch: AMD64, ENIs: 3, IPv4PerENI: 10, EBSAttachments: nitroSharedEBS},
	{Name: "m5.xlarge", VCPUs: 4, MemoryGiB: 16, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "m5.2xlarge", VCPUs: 8, MemoryGiB: 32, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "m5.4xlarge", VCPUs: 16, MemoryGiB: 64, Arch: AMD64, ENIs: 8, IPv4PerENI: 30, EBSAttachments: nitroSharedEBS},
	{Name: "m6i.large", VCPUs: 2, MemoryGiB: 8, Arch: AMD64, ENIs: 3, IPv4PerENI: 10, EBSAttachments: nitroSharedEBS},
	{Name: "m6i.xlarge", VCPUs: 4, MemoryGiB: 16, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "m6i.2xlarge", VCPUs: 8, MemoryGiB: 32, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "m6i.4xlarge", VCPUs: 16, MemoryGiB: 64, Arch: AMD64, ENIs: 8, IPv4PerENI: 30, EBSAttachments: nitroSharedEBS},
	{Name: "m7g.large", VCPUs: 2, MemoryGiB: 8, Arch: ARM64, ENIs: 3, IPv4PerENI: 10, EBSAttachments: nitroSharedEBS},
	{Name: "m7g.xlarge", VCPUs: 4, MemoryGiB: 16, Arch: ARM64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "m7g.2xlarge", VCPUs: 8, MemoryGiB: 32, Arch: ARM64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "m7g.4xlarge", VCPUs: 16, MemoryGiB: 64, Arch: ARM64, ENIs: 8, IPv4PerENI: 30, EBSAttachments: nitroSharedEBS},
	// Compute optimized, 2 GiB per vCPU.
	{Name: "c5.large", VCPUs: 2, MemoryGiB: 4, Arch: AMD64, ENIs: 3, IPv4PerENI: 10, EBSAttachments: nitroSharedEBS},
	{Name: "c5.xlarge", VCPUs: 4, MemoryGiB: 8, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "c5.2xlarge", VCPUs: 8, MemoryGiB: 16, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "c5.4xlarge", VCPUs: 16, MemoryGiB: 32, Arch: AMD64, ENIs: 8, IPv4PerENI: 30, EBSAttachments: nitroSharedEBS},
	{Name: "c6i.large", VCPUs: 2, MemoryGiB: 4, Arch: AMD64, ENIs: 3, IPv4PerENI: 10, EBSAttachments: nitroSharedEBS},
	{Name: "c6i.xlarge", VCPUs: 4, MemoryGiB: 8, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "c6i.2xlarge", VCPUs: 8, MemoryGiB: 16, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "c6i.4xlarge", VCPUs: 16, MemoryGiB: 32, Arch: AMD64, ENIs: 8, IPv4PerENI: 30, EBSAttachments: nitroSharedEBS},
	// Memory optimized, 8 GiB per vCPU.
	{Name: "r5.large", VCPUs: 2, MemoryGiB: 16, Arch: AMD64, ENIs: 3, IPv4PerENI: 10, EBSAttachments: nitroSharedEBS},
	{Name: "r5.xlarge", VCPUs: 4, MemoryGiB: 32, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "r5.2xlarge", VCPUs: 8, MemoryGiB: 64, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "r5.4xlarge", VCPUs: 16, MemoryGiB: 128, Arch: AMD64, ENIs: 8, IPv4PerENI: 30, EBSAttachments: nitroSharedEBS},
	{Name: "r6i.large", VCPUs: 2, MemoryGiB: 16, Arch: AMD64, ENIs: 3, IPv4PerENI: 10, EBSAttachments: nitroSharedEBS},
	{Name: "r6i.xlarge", VCPUs: 4, MemoryGiB: 32, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "r6i.2xlarge", VCPUs: 8, MemoryGiB: 64, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "r6i.4xlarge", VCPUs: 16, MemoryGiB: 128, Arch: AMD64, ENIs: 8, IPv4PerENI: 30, EBSAttachments: nitroSharedEBS},
	// Burstable, 4 GiB per vCPU; t3.large has 12 addresses per ENI.
	{Name: "t3.large", VCPUs: 2, MemoryGiB: 8, Arch: AMD64, ENIs: 3, IPv4PerENI: 12, EBSAttachments: nitroSharedEBS},
	{Name: "t3.xlarge", VCPUs: 4, MemoryGiB: 16, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
	{Name: "t3.2xlarge", VCPUs: 8, MemoryGiB: 32, Arch: AMD64, ENIs: 4, IPv4PerENI: 15, EBSAttachments: nitroSharedEBS},
}
