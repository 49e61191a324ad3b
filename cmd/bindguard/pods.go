package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bindguard/bindguard/podcheck"
)

func init() {
	register("pods", "judge the host ports a cluster's pods declare against a registry (exit 3 on violations)", runPods)
}

type podsFlags struct {
	registry   []string
	kubeconfig string
	context    string
	pods       string
	nodes      string
	labels     []string
	output     string
	strict     bool
	timeout    time.Duration
}

func (f *podsFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.registry, "registry", nil, "registry file, directory of fragments, or builtin:NAME (repeatable)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to read; without it and without --pods: $KUBECONFIG, ~/.kube/config, or the in-cluster service account")
	fs.StringVar(&f.context, "context", "", "kubeconfig context to use (default: the current context)")
	fs.StringVar(&f.pods, "pods", "", "read pods from this file (the JSON of kubectl get pods -A -o json, or rendered workloads; - for stdin) instead of the API server")
	fs.StringVar(&f.nodes, "nodes", "", "with --pods: read nodes and their labels from this file (the JSON of kubectl get nodes -o json; - for stdin)")
	fs.StringArrayVar(&f.labels, "node-label", nil, "judge pods without spec.nodeName, or on nodes not given, as on a node with this label key=value (repeatable); without any such pods are warnings")
	fs.StringVarP(&f.output, "output", "o", "table", "table or json")
	fs.BoolVar(&f.strict, "strict", false, "exit 3 on warnings too (no-ports, unscheduled, unknown-node, sctp)")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "give up reading the API server after this long")
}

// usage checks the combination of flags; a bad one exits 2.
func (f *podsFlags) usage(fs *pflag.FlagSet) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q: the registry is given with --registry", fs.Args())
	case len(f.registry) == 0:
		return fmt.Errorf("no --registry given")
	case f.pods != "" && (f.kubeconfig != "" || f.context != ""):
		return fmt.Errorf("--pods reads a file: --kubeconfig and --context are for the API server")
	case f.nodes != "" && f.pods == "":
		return fmt.Errorf("--nodes needs --pods: the API server's nodes are read with its pods")
	case f.pods == "-" && f.nodes == "-":
		return fmt.Errorf("--pods and --nodes cannot both read stdin")
	case f.output != "table" && f.output != "json":
		return fmt.Errorf("--output %q: want table or json", f.output)
	}
	return nil
}

func runPods(args []string, stdout, stderr io.Writer) error {
	var f podsFlags
	fs, done, err := parseFlags("pods", "", &f, args, stdout, stderr)
	if done {
		return err
	}
	if err := f.usage(fs); err != nil {
		return &exitError{code: 2, msg: "pods: " + err.Error()}
	}
	var opt podcheck.Options
	if len(f.labels) > 0 {
		labels, err := parseLabels(f.labels)
		if err != nil {
			return &exitError{code: 2, msg: "pods: " + err.Error()}
		}
		opt.Labels = labels
	}
	reg, err := loadAndValidate(f.registry, nil, stderr)
	if err != nil {
		return err
	}
	cl, err := f.cluster()
	if err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	rep, err := podcheck.Check(reg, cl, opt)
	if err != nil {
		return err
	}
	if f.output == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		return err
	}
	switch {
	case rep.Summary.ViolationCount() > 0:
		return &exitError{code: 3}
	case f.strict && rep.Summary.WarningCount() > 0:
		return &exitError{code: 3, msg: fmt.Sprintf("pods: --strict: %d warnings", rep.Summary.WarningCount())}
	}
	return nil
}

// cluster reads the pods and nodes from the files or the API server.
func (f *podsFlags) cluster() (podcheck.Cluster, error) {
	if f.pods != "" {
		return readCluster(f.pods, f.nodes)
	}
	cs, err := kubeClient(f.kubeconfig, f.context)
	if err != nil {
		return podcheck.Cluster{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	return podcheck.List(ctx, cs)
}

func readCluster(podsFile, nodesFile string) (podcheck.Cluster, error) {
	var cl podcheck.Cluster
	data, err := readInputFile(podsFile, "kubectl get pods -A -o json")
	if err != nil {
		return cl, err
	}
	if cl.Pods, err = podcheck.ReadPods(data, podsFile); err != nil {
		return cl, err
	}
	if nodesFile != "" {
		cl.Nodes, err = readNodesFile(nodesFile)
	}
	return cl, err
}

// kubeClient follows client-go's rules: an explicit --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config, else the in-cluster service account.
func kubeClient(kubeconfig, kubeContext string) (kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: kubeContext}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "bindguard-pods"
	return kubernetes.NewForConfig(cfg)
}
