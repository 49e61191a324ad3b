package main

import (
	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/daemon"
)

// nodeFlags make `run` follow its own Node object.
type nodeFlags struct {
	name       string
	kubeconfig string
	stateFile  string
}

func (f *nodeFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.name, "node-name", "", "this node's Node object: its labels select registry entries, live, and its "+daemon.ModeLabel+" label (audit|enforce) overrides --mode (in a DaemonSet: spec.nodeName from the downward API)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig for --node-name, and only with it (default: $KUBECONFIG, then the in-cluster service account)")
	fs.StringVar(&f.stateFile, "node-state-file", defaultNodeStateFile, "where the labels and mode in force, the entries selected and the container runtime's connection are written for bindguard status, with --node-name or pod identity on (\"\" writes none)")
}

const defaultNodeStateFile = "/run/bindguard/node.json"

func (f *nodeFlags) config() daemon.NodeConfig {
	return daemon.NodeConfig{Name: f.name, Kubeconfig: f.kubeconfig, StateFile: f.stateFile, UserAgent: "bindguard/" + version}
}
