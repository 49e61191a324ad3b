package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/policy"
	"github.com/bindguard/bindguard/scan"
)

func init() {
	register("scan", "judge the sockets already bound on this host against a registry (exit 3 on violations)", runScan)
}

type scanFlags struct {
	registry []string
	labels   []string
	mode     string
	cgroup   string
	output   string
}

func (f *scanFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.registry, "registry", nil, "registry file, directory of fragments, or builtin:NAME (repeatable)")
	fs.StringArrayVar(&f.labels, "node-label", nil, "this node's label key=value, for nodeSelectors (repeatable)")
	fs.StringVar(&f.mode, "mode", string(policy.ModeEnforce), "judge as a node in this mode: enforce (what would be denied) or audit")
	fs.StringVar(&f.cgroup, "cgroup", "", "list only sockets of processes in this cgroup or below it (relative to the cgroup2 root)")
	fs.StringVarP(&f.output, "output", "o", "table", "table or json")
}

// scanReasons is the order reasons are counted in.
var scanReasons = []string{string(policy.ReasonUndeclared), string(policy.ReasonOwner), string(policy.ReasonAddress), string(policy.ReasonRemoved)}

// scanJSON is the JSON form of a scan:
//
//	{"mode": "enforce", "sockets": [
//	  {"protocol": "tcp", "family": 4, "address": "0.0.0.0", "port": 22, "pid": 812,
//	   "comm": "sshd", "uid": 0, "cgroup": "/system.slice/ssh.service", "unit": "ssh.service",
//	   "inode": 1060, "verdict": "allow", "reason": "", "rule": "reg.yaml:4", "process": "sshd"}],
//	 "summary": {"sockets": 1, "allowed": 1, "audited": 0, "denied": 0,
//	   "violations": {"undeclared": 0, "owner": 0, "address": 0, "removed": 0}}}
//
// pid is 0 for a socket no process holds; cgroup and unit are then "".
// rule and process are omitted when no rule applies.
type scanJSON struct {
	Mode    string           `json:"mode"`
	Sockets []scanSocketJSON `json:"sockets"`
	Summary scanSummaryJSON  `json:"summary"`
}

type scanSocketJSON struct {
	Protocol  string `json:"protocol"`
	Family    int    `json:"family"`
	Address   string `json:"address"`
	Port      uint16 `json:"port"`
	Connected bool   `json:"connected,omitempty"`
	PID       int    `json:"pid"`
	Comm      string `json:"comm"`
	UID       uint32 `json:"uid"`
	Cgroup    string `json:"cgroup"`
	Unit      string `json:"unit"`
	Inode     uint64 `json:"inode"`
	Verdict   string `json:"verdict"`
	Reason    string `json:"reason"`
	Rule      string `json:"rule,omitempty"`
	Process   string `json:"process,omitempty"`
}

type scanSummaryJSON struct {
	Sockets    int            `json:"sockets"`
	Allowed    int            `json:"allowed"`
	Audited    int            `json:"audited"`
	Denied     int            `json:"denied"`
	Violations map[string]int `json:"violations"`
}

func runScan(args []string, stdout, stderr io.Writer) error {
	var f scanFlags
	fs := newFlagSet("scan", "", stderr)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2, msg: "scan: " + err.Error()}
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, msg: fmt.Sprintf("scan: unexpected arguments %q: the registry is given with --registry", fs.Args())}
	}
	if len(f.registry) == 0 {
		return &exitError{code: 2, msg: "scan: no --registry given"}
	}
	mode, err := policy.ParseMode(f.mode)
	if err != nil {
		return &exitError{code: 2, msg: "scan: " + err.Error()}
	}
	if f.output != "table" && f.output != "json" {
		return &exitError{code: 2, msg: fmt.Sprintf("scan: --output %q: want table or json", f.output)}
	}
	if f.cgroup != "" && !strings.HasPrefix(f.cgroup, "/") {
		return &exitError{code: 2, msg: fmt.Sprintf("scan: --cgroup %q: want a path from the cgroup2 root like /system.slice", f.cgroup)}
	}
	c, err := compileForNode("scan", f.registry, f.labels, stderr)
	if err != nil {
		return err
	}
	owners, err := hostOwnerResolver()
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	defer owners.Close()
	socks, err := scan.Sockets(scan.Options{})
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "bindguard: scan: not root: sockets of other users' processes show pid 0")
	}
	if f.cgroup != "" {
		kept := socks[:0]
		for _, s := range socks {
			if s.PID != 0 && policy.InCgroup(s.Cgroup, f.cgroup) {
				kept = append(kept, s)
			}
		}
		socks = kept
	}
	findings := scan.Judge(c, mode, socks, policy.DecideOptions{Exists: owners.exists, FindUnit: owners.findUnit})
	sum := scan.Summarize(findings)
	if f.output == "json" {
		err = writeScanJSON(stdout, mode, findings, sum)
	} else {
		err = writeScanTable(stdout, findings, sum)
	}
	if err != nil {
		return err
	}
	if sum.Audited+sum.Denied > 0 {
		return &exitError{code: 3}
	}
	return nil
}

func writeScanJSON(w io.Writer, mode policy.Mode, fs []scan.Finding, sum scan.Summary) error {
	out := scanJSON{Mode: string(mode), Sockets: make([]scanSocketJSON, len(fs)), Summary: scanSummaryJSON{
		Sockets: sum.Sockets, Allowed: sum.Allowed, Audited: sum.Audited, Denied: sum.Denied, Violations: map[string]int{},
	}}
	for _, r := range scanReasons {
		out.Summary.Violations[r] = sum.Violations[r]
	}
	for i, f := range fs {
		s := scanSocketJSON{
			Protocol: f.Protocol.String(), Family: f.Family, Address: f.Address.String(), Port: f.Port,
			Connected: f.Connected, PID: f.PID, Comm: f.Comm, UID: f.UID, Cgroup: f.Cgroup, Unit: f.Unit,
			Inode: f.Inode, Verdict: string(f.Decision.Verdict), Reason: string(f.Decision.Reason),
		}
		if r := f.Decision.Rule; r != nil {
			s.Rule, s.Process = r.Pos.FileLine(), r.Process
		}
		out.Sockets[i] = s
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func writeScanTable(w io.Writer, fs []scan.Finding, sum scan.Summary) error {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tADDRESS\tPORT\tPID\tCOMM\tUID\tCGROUP\tUNIT\tVERDICT\tREASON\tRULE\tPROCESS")
	for _, f := range fs {
		rule, process := "-", "-"
		if r := f.Decision.Rule; r != nil {
			rule, process = r.Pos.FileLine(), r.Process
		}
		proto := f.Protocol.String()
		if f.Family == 6 {
			proto += "6"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", proto, f.Address, f.Port, f.PID,
			dash(f.Comm), f.UID, dash(f.Cgroup), dash(f.Unit), f.Decision.Verdict, dash(string(f.Decision.Reason)), rule, process)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var reasons []string
	for _, r := range scanReasons {
		reasons = append(reasons, r+" "+strconv.Itoa(sum.Violations[r]))
	}
	_, err := fmt.Fprintf(w, "%s: %d allowed, %s (%d denied, %d audited): %s\n",
		scanPlural(sum.Sockets, "socket"), sum.Allowed, scanPlural(sum.Audited+sum.Denied, "violation"), sum.Denied, sum.Audited,
		strings.Join(reasons, ", "))
	return err
}

func scanPlural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
