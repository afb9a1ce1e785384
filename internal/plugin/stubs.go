package plugin

import "github.com/spf13/cobra"

func newReleaseCommand(o *Options) *cobra.Command { return &cobra.Command{Use: "release", Hidden: true} }
func newExplainCommand(o *Options) *cobra.Command { return &cobra.Command{Use: "explain", Hidden: true} }
