package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/autobind"
	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/daemon"
	"github.com/bindguard/bindguard/features"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

func init() {
	register("run", "enforce a registry: attach the bind programs and log violations", runRun)
}

type runFlags struct {
	registry      []string
	mode          string
	cgroup        string
	pinPath       string
	labels        []string
	logFormat     string
	logLevel      string
	readyFile     string
	allNetns      bool
	keepOnExit    bool
	eventInterval time.Duration
	metricsAddr   string
	noWatch       bool
	checkInterval time.Duration
	criSocket     string
	kubepods      []string
	podPorts      string
	reserveState  string
	node          nodeFlags
}

func (f *runFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.registry, "registry", nil, "registry file, directory of fragments, or builtin:NAME (repeatable)")
	fs.StringVar(&f.mode, "mode", "audit", "audit (report violations) or enforce (refuse them with EPERM); with --node-name, the Node label bindguard.io/mode overrides it")
	fs.StringVar(&f.cgroup, "cgroup", "/", "cgroup to attach to: a path below the cgroup2 mount (/sys/fs/cgroup/x) or relative to its root (x, /x)")
	fs.StringVar(&f.pinPath, "pin-path", loader.DefaultPinPath, "bpffs directory for pinned links and maps (\"\" pins nothing)")
	fs.StringArrayVar(&f.labels, "node-label", nil, "this node's label key=value, for nodeSelectors (repeatable); with --node-name, added to the Node's labels and overriding them")
	fs.StringVar(&f.logFormat, "log-format", "text", "json or text")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.readyFile, "ready-file", "", "file written once the programs are attached")
	fs.BoolVar(&f.allNetns, "all-netns", false, "judge binds in every network namespace, not only the host's")
	fs.BoolVar(&f.keepOnExit, "keep-on-exit", false, "leave programs and pins in force on exit (for restarts and upgrades)")
	fs.DurationVar(&f.eventInterval, "event-interval", 10*time.Second, "at most one event per interval per (cgroup, port, protocol, reason), and a bounded rate per cgroup and per non-root uid; 0 turns all rate limiting off and reports every violation")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on [host]:port (loopback when no host); off when empty")
	fs.BoolVar(&f.noWatch, "no-watch", false, "do not reload when registry files change (SIGHUP still reloads)")
	fs.DurationVar(&f.checkInterval, "check-interval", daemon.DefaultCheckInterval, "how often to ask the kernel whether the programs are still attached")
	fs.StringVar(&f.criSocket, "cri-socket", "", "container runtime (CRI) socket for pod identity: a path or unix:///path; \"\" detects containerd's or CRI-O's; \"none\" turns pod identity off")
	fs.StringArrayVar(&f.kubepods, "kubepods-cgroup", nil, "kubelet's kubepods cgroup, relative to the cgroup2 root (repeatable; default kubepods and kubepods.slice below --cgroup)")
	fs.StringVar(&f.reserveState, "reserve-state", autobind.DefaultStateFile, "in enforce mode, keep the registry's restricted ports out of the kernel's autobind (net.ipv4.ip_local_reserved_ports), recording the ports added in this file; \"none\" leaves the sysctl alone")
	fs.StringVar(&f.podPorts, "pod-ports", "ignore", "ignore, or require: a pod may bind only the ports its containers declare (reason pod-undeclared; needs pod identity, so not with --cri-socket none)")
	f.node.register(fs)
}

func newLogger(format, level string, w io.Writer) (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(w)
	switch format {
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	default:
		return nil, fmt.Errorf("--log-format %q: want json or text", format)
	}
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	log.SetLevel(lvl)
	return log, nil
}

// validate checks what pflag cannot: values that parse but make no sense.
func (f *runFlags) validate() error {
	if len(f.registry) == 0 {
		return fmt.Errorf("--registry is required (a file, a directory or builtin:NAME)")
	}
	if f.eventInterval < 0 {
		return fmt.Errorf("--event-interval %v: must be 0 (report every violation) or more", f.eventInterval)
	}
	if f.checkInterval <= 0 {
		return fmt.Errorf("--check-interval %v: must be more than 0", f.checkInterval)
	}
	// Flags that would be silently ignored together (daemon.Config refuses
	// them too; here they are bad flags, exit 2, before anything is loaded).
	if f.podPorts == string(policy.PodPortsRequire) && f.criSocket == "none" {
		return fmt.Errorf("--pod-ports=require with --cri-socket none: pod ports are checked only for pods identified through the container runtime, which none turns off, so no port would be checked")
	}
	if f.node.kubeconfig != "" && f.node.name == "" {
		return fmt.Errorf("--kubeconfig without --node-name: the kubeconfig is used only to follow the Node that --node-name names, so it would be ignored")
	}
	return nil
}

func runRun(args []string, stdout, stderr io.Writer) error {
	var f runFlags
	fs, done, err := parseFlags("run", "[REGISTRY...]", &f, args, stdout, stderr)
	if done {
		return err
	}
	f.registry = append(f.registry, fs.Args()...)
	if err := f.validate(); err != nil {
		return &exitError{code: 2, msg: "run: " + err.Error()}
	}
	mode, err := policy.ParseMode(f.mode)
	if err != nil {
		return &exitError{code: 2, msg: "run: --" + err.Error()}
	}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return &exitError{code: 2, msg: "run: " + err.Error()}
	}
	podPorts, err := policy.ParsePodPortsMode(f.podPorts)
	if err != nil {
		return &exitError{code: 2, msg: "run: --pod-ports: " + err.Error()}
	}
	log, err := newLogger(f.logFormat, f.logLevel, stderr)
	if err != nil {
		return &exitError{code: 2, msg: "run: " + err.Error()}
	}
	if err := features.Require(); err != nil {
		return &exitError{code: 1, msg: "run: " + err.Error()}
	}
	missing := features.MissingCapabilities()
	for _, c := range missing {
		log.WithField("capability", c.Name).Warn("running without a capability bindguard needs to " + c.Needed + ": the kernel's probes passed, the load may still fail")
	}
	err = daemon.Run(context.Background(), daemon.Config{
		Registry:      f.registry,
		Mode:          mode,
		Cgroup:        cgroups.ArgPath(f.cgroup),
		PinPath:       f.pinPath,
		NodeLabels:    labels,
		ReadyFile:     f.readyFile,
		AllNetns:      f.allNetns,
		KeepOnExit:    f.keepOnExit,
		EventInterval: f.eventInterval,
		MetricsAddr:   f.metricsAddr,
		Watch:         !f.noWatch,
		CheckInterval: f.checkInterval,
		CRISocket:     f.criSocket,
		Kubepods:      f.kubepods,
		PodPorts:      podPorts == policy.PodPortsRequire,
		ReserveState:  f.reserveState,
		Node:          f.node.config(),
	}, log)
	if err != nil {
		return fmt.Errorf("run: %w", features.WithCapabilities(missing, err))
	}
	return nil
}
