// Package plugin is kubectl huddle, the kubectl plugin that shows where
// huddles are and why (status, explain), lets a user act on them
// (release), and plans a chart offline (plan): which claims its pods
// share, whether each huddle fits one node of an EKS instance type or of
// the current cluster, and what the storage alternatives cost.
//
// Every figure comes from the code the controller runs: a huddle's demand
// from controller.WorkloadOwner and placement.Demand, its fit from
// placement.Assess, instance types from internal/instancetype. cmd/
// kubectl-huddle only calls NewCommand.
package plugin
