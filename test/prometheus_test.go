package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"github.com/bindguard/bindguard/internal/testutils"
)

// promWindow stands in for the 7 days of the shipped graduation query, so
// that the test sees a whole window pass.
const promWindow = "15s"

// TestPrometheusFleet: Debian's Prometheus scrapes two daemons, one in audit
// mode and one enforcing, each in its own test cgroup with its own pins and
// metrics port. The test makes violations on both, then runs the shipped
// rules (deploy/monitoring/prometheusrule.yaml, evaluated by Prometheus) and
// the dashboard's queries through Prometheus's HTTP API, and checks them
// against the violations it made.
func TestPrometheusFleet(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		testutils.Need(t, "prometheus not installed (Debian: apt-get install prometheus; scripts/ci-setup.sh does)")
	}
	const reg = `entries:
  - port: 43100
    process: owned
    owners:
      - cgroup: %CG%/owner
`
	ea, eb := newEnv(t), newEnv(t)
	ea.writeRegistry(reg)
	eb.writeRegistry(reg)
	// A folds repeats for a second, so that 1 + suppressed is what is counted.
	da := ea.start("audit", "--metrics-addr", "127.0.0.1:0", "--event-interval", "1s")
	db := eb.start("enforce", "--metrics-addr", "127.0.0.1:0")
	a, b := metricsAddr(da), metricsAddr(db)
	p := startPrometheus(t, promBin, []string{a, b})
	p.waitFor(t, "both targets up", `sum(up{job="bindguard"})`, func(r promResult) bool { return r.one() == 2 })

	// Before any violation, and once a whole window has passed in audit
	// mode: the audit node is ready to graduate; the enforcing one is not
	// in audit mode at all.
	time.Sleep(dur(t, promWindow))
	p.waitFor(t, "the audit node in the graduation query", "instance:bindguard_would_deny:zero_7d",
		func(r promResult) bool { return r.instances() == a })
	if got := p.query(t, `count by (mode) (bindguard_mode == 1)`); got.byLabel("mode") != "audit=1 enforce=1" {
		t.Errorf("nodes by mode: %s", got.byLabel("mode"))
	}

	ba := testutils.StartBinder(t, ea.child("svc"), testutils.BinderOptions{})
	bb := testutils.StartBinder(t, eb.child("svc"), testutils.BinderOptions{})
	expect(t, ba, []bindCase{{"owner", "tcp", "4", any4, 43100, nil}, {"undeclared", "tcp", "4", any4, 43110, nil}})
	for i := 0; i < 5; i++ {
		expect(t, ba, []bindCase{{"repeat", "udp", "4", any4, 43111, nil}})
	}
	entry := da.eventFor(43100, "tcp")["rule"].(string)
	da.eventFor(43111, "udp")
	time.Sleep(1100 * time.Millisecond) // past the interval: the next event carries the folded ones
	expect(t, ba, []bindCase{{"after the interval", "udp", "4", any4, 43111, nil}})
	da.waitLog("event with suppressed count", func(m map[string]any) bool { return m["suppressed"] != nil })
	expect(t, bb, []bindCase{{"denied", "tcp", "4", any4, 43120, unix.EPERM}, {"denied again", "tcp", "4", any4, 43120, unix.EPERM}})
	db.eventFor(43120, "tcp")

	want := lines(
		fmt.Sprintf("%s,%s,owner,,,audit 1", a, entry),
		fmt.Sprintf("%s,,undeclared,43110,tcp,audit 1", a),
		fmt.Sprintf("%s,,undeclared,43111,udp,audit 6", a),
		fmt.Sprintf("%s,,undeclared,43120,tcp,deny 2", b),
	)
	p.waitFor(t, "the violations made", `sum by (instance, entry, reason, port, protocol, verdict) (bindguard_violations_total) > 0`,
		func(r promResult) bool {
			return r.rows("instance", "entry", "reason", "port", "protocol", "verdict") == want
		})

	p.waitFor(t, "BindguardWouldDenyInAudit for the audit node's three violations", `ALERTS{alertname="BindguardWouldDenyInAudit"}`,
		func(r promResult) bool {
			return r.rows("instance", "entry", "port") == lines(a+",,43110", a+",,43111", a+","+entry+",")
		})
	p.waitFor(t, "BindguardBindDenied for the enforcing node", `ALERTS{alertname="BindguardBindDenied"}`,
		func(r promResult) bool {
			return r.rows("instance", "reason", "port", "protocol") == b+",undeclared,43120,tcp"
		})
	p.waitFor(t, "no node in the graduation query", "instance:bindguard_would_deny:zero_7d",
		func(r promResult) bool { return len(r) == 0 })
	// Every dashboard query runs; would-deny by node shows the audit node only.
	for id, expr := range dashboardExprs(t) {
		r := p.query(t, expr)
		if id == 3 && r.instances() != a {
			t.Errorf("dashboard panel 3 (would-deny by node): %q, want %s", r.instances(), a)
		}
	}
}

// dashboardExprs returns the dashboard's queries by panel id, with
// Grafana's variables replaced as Grafana would for "All nodes".
func dashboardExprs(t *testing.T) map[int]string {
	raw, err := os.ReadFile("../deploy/monitoring/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			ID      int `json:"id"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$__rate_interval", "1m", "$node", ".*", "$window", promWindow)
	out := map[int]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.ID] = vars.Replace(tg.Expr)
		}
	}
	return out
}

// lines sorts rows as promResult.rows does.
func lines(rows ...string) string {
	sort.Strings(rows)
	return strings.Join(rows, "\n")
}

func dur(t *testing.T, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// metricsAddr is where a daemon started with --metrics-addr 127.0.0.1:0 listens.
func metricsAddr(d *daemon) string {
	m := d.waitLog("serving metrics", func(m map[string]any) bool { return m["msg"] == "serving metrics" })
	return m["addr"].(string)
}

type prometheus struct {
	base string
}

// startPrometheus runs Prometheus on a loopback port with its own config,
// storage and the shipped rules (7d windows replaced by promWindow), scraping
// targets every second; it is stopped when the test ends.
func startPrometheus(t *testing.T, bin string, targets []string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	raw, err := os.ReadFile("../deploy/monitoring/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &pr); err != nil {
		t.Fatal(err)
	}
	rules := strings.ReplaceAll(string(pr.Spec), "7d]", promWindow+"]")
	rules = strings.ReplaceAll(rules, "offset 7d", "offset "+promWindow)
	cfg, err := json.Marshal(map[string]any{
		"global":         map[string]string{"scrape_interval": "1s", "evaluation_interval": "1s"},
		"rule_files":     []string{"rules.json"},
		"scrape_configs": []any{map[string]any{"job_name": "bindguard", "static_configs": []any{map[string]any{"targets": targets}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"rules.json": rules, "prometheus.json": string(cfg)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.json"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		testutils.Terminate(cmd.Process, done, 10*time.Second)
	})
	p := &prometheus{base: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-done:
			t.Fatalf("prometheus exited: %v", cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus not ready after 30s")
		}
	}
}

// promResult is an instant vector.
type promResult []struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (p *prometheus) query(t *testing.T, q string) promResult {
	t.Helper()
	resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string     `json:"resultType"`
			Result     promResult `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	if body.Status != "success" || body.Data.ResultType != "vector" {
		t.Fatalf("query %s: %s %s (%s)", q, body.Status, body.Error, body.Data.ResultType)
	}
	return body.Data.Result
}

// waitFor polls a query until ok accepts its result; scrapes and rule
// evaluations run every second.
func (p *prometheus) waitFor(t *testing.T, what, q string, ok func(promResult) bool) {
	t.Helper()
	var r promResult
	for i := 0; i < 60; i++ {
		if r = p.query(t, q); ok(r) {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: %s gave\n%s", what, q, r.rows("__name__", "instance", "entry", "reason", "port", "protocol", "verdict", "alertstate"))
}

func (r promResult) one() float64 {
	if len(r) != 1 {
		return -1
	}
	var v float64
	fmt.Sscan(r[0].Value[1].(string), &v)
	return v
}

// rows renders each sample as its label values joined by commas (and the
// value, when the query kept the verdict label), sorted.
func (r promResult) rows(labels ...string) string {
	var out []string
	for _, s := range r {
		var vals []string
		for _, l := range labels {
			vals = append(vals, s.Metric[l])
		}
		row := strings.Join(vals, ",")
		if labels[len(labels)-1] == "verdict" {
			row += " " + s.Value[1].(string)
		}
		out = append(out, row)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func (r promResult) instances() string { return r.rows("instance") }

// byLabel renders "value=count" for a count by one label, sorted.
func (r promResult) byLabel(l string) string {
	var out []string
	for _, s := range r {
		out = append(out, s.Metric[l]+"="+s.Value[1].(string))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
