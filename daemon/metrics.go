package daemon

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

type metrics struct {
	reg        *prometheus.Registry
	reloads    *prometheus.CounterVec
	events     *prometheus.CounterVec
	entries    prometheus.Gauge
	generation prometheus.Gauge
	// ownersResolved counts cgroups that appeared after start and joined rules.
	ownersResolved prometheus.Counter
	// attachLost counts self-checks that found the programs detached.
	attachLost prometheus.Counter
	// podsResolved counts pod and container cgroups whose identity the
	// runtime reported and which were put in force.
	podsResolved prometheus.Counter
	// reserveFailed counts reservations of restricted ports that failed.
	reserveFailed prometheus.Counter
	// mode is 1 for the node's mode, 0 for the other.
	mode       *prometheus.GaugeVec
	violations *violations
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindguard_reloads_total", Help: "Registry reloads by result (ok, failed).",
		}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindguard_events_logged_total", Help: "Violation events the daemon logged, by verdict and reason.",
		}, []string{"verdict", "reason"}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bindguard_policy_entries", Help: "Policy map entries in force.",
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bindguard_policy_generation", Help: "Generation of the policy in force.",
		}),
		ownersResolved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bindguard_owner_cgroups_appeared_total", Help: "Owner cgroups that appeared after the policy was applied and were put in force.",
		}),
		mode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bindguard_mode", Help: "1 for the mode the node runs in (audit or enforce), 0 for the other.",
		}, []string{"mode"}),
		violations: newViolations(),
	}
	m.attachLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bindguard_attachment_lost_total", Help: "Periodic self-checks that found the bind programs no longer attached to the cgroup.",
	})
	m.podsResolved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bindguard_pod_identities_resolved_total", Help: "Pod and container cgroups whose identity the container runtime reported and that were put in force.",
	})
	m.reserveFailed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bindguard_port_reservation_failures_total", Help: "Times the restricted ports could not be kept out of the kernel's autobind (ip_local_reserved_ports).",
	})
	m.reg.MustRegister(m.reloads, m.events, m.entries, m.generation, m.ownersResolved, m.attachLost, m.podsResolved, m.reserveFailed,
		m.mode, m.violations.vec)
	return m
}

// applied records the policy now in force: its size, generation and mode,
// and a zero for every violation series it can produce.
func (m *metrics) applied(c *policy.Compiled, res *loader.ApplyResult, mode policy.Mode) {
	m.entries.Set(float64(res.Entries))
	m.generation.Set(float64(res.Generation))
	for _, md := range []policy.Mode{policy.ModeAudit, policy.ModeEnforce} {
		v := 0.0
		if md == mode {
			v = 1
		}
		m.mode.WithLabelValues(string(md)).Set(v)
	}
	m.violations.applied(c, mode)
}

// kernelCollector exports the kernel counters at scrape time.
type kernelCollector struct{ ld *loader.Loader }

var (
	descChecks     = prometheus.NewDesc("bindguard_binds_checked_total", "bind() calls the programs judged.", nil, nil)
	descAllowed    = prometheus.NewDesc("bindguard_binds_allowed_total", "bind() calls allowed without violation.", nil, nil)
	descAudited    = prometheus.NewDesc("bindguard_binds_audited_total", "Violations audited (bind proceeded), by reason.", []string{"reason"}, nil)
	descDenied     = prometheus.NewDesc("bindguard_binds_denied_total", "Violations denied with EPERM, by reason.", []string{"reason"}, nil)
	descDropped    = prometheus.NewDesc("bindguard_events_dropped_total", "Events lost because the ring buffer was full.", nil, nil)
	descSupp       = prometheus.NewDesc("bindguard_events_suppressed_total", "Events folded by rate limiting.", nil, nil)
	descThrottled  = prometheus.NewDesc("bindguard_events_throttled_total", "Of the events suppressed, those the per-cgroup bucket held back (a flood from one cgroup).", nil, nil)
	descCopyFailed = prometheus.NewDesc("bindguard_membership_copy_failed_total", "New cgroups whose owner membership the kernel could not copy at mkdir (the daemon repairs them).", nil, nil)
	descAttach     = prometheus.NewDesc("bindguard_attached", "1 when the kernel says every bind program is attached to the cgroup, 0 when not (binds are not judged).", nil, nil)
)

func (k kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descChecks, descAllowed, descAudited, descDenied, descDropped, descSupp, descThrottled, descCopyFailed, descAttach} {
		ch <- d
	}
}

func (k kernelCollector) Collect(ch chan<- prometheus.Metric) {
	attached := 1.0
	if k.ld.CheckAttached() != nil {
		attached = 0
	}
	ch <- prometheus.MustNewConstMetric(descAttach, prometheus.GaugeValue, attached)
	c, err := k.ld.Counters()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descChecks, prometheus.CounterValue, float64(c.Checks))
	ch <- prometheus.MustNewConstMetric(descAllowed, prometheus.CounterValue, float64(c.Allowed))
	for _, r := range loader.Reasons {
		ch <- prometheus.MustNewConstMetric(descAudited, prometheus.CounterValue, float64(c.Audited[r]), r.String())
		ch <- prometheus.MustNewConstMetric(descDenied, prometheus.CounterValue, float64(c.Denied[r]), r.String())
	}
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(c.EventsDropped))
	ch <- prometheus.MustNewConstMetric(descSupp, prometheus.CounterValue, float64(c.Suppressed))
	ch <- prometheus.MustNewConstMetric(descThrottled, prometheus.CounterValue, float64(c.Throttled))
	ch <- prometheus.MustNewConstMetric(descCopyFailed, prometheus.CounterValue, float64(c.MemberCopyFailed))
}

// serveMetrics serves /metrics on addr; a bare port (":9965" or "9965")
// listens on loopback only.
func (d *Daemon) serveMetrics(addr string) (stop func(), err error) {
	if _, err := strconv.Atoi(addr); err == nil {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host == "" {
		host = "127.0.0.1"
	}
	d.metrics.reg.MustRegister(kernelCollector{d.ld})
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", d.healthz)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.WithError(err).Error("metrics server")
		}
	}()
	d.log.WithField("addr", ln.Addr().String()).Info("serving metrics")
	return func() { srv.Close() }, nil
}

// healthz is ok only while the kernel says every program is attached.
func (d *Daemon) healthz(w http.ResponseWriter, _ *http.Request) {
	if err := d.ld.CheckAttached(); err != nil {
		http.Error(w, "bind programs not attached: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}
