package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/bindguard/bindguard/internal/testutils"
)

const (
	dashboardFile = "monitoring/dashboard.json"
	rulesFile     = "monitoring/prometheusrule.yaml"
)

// grafanaDashboard is the part of Grafana's dashboard model (schemaVersion
// 39) that Grafana needs to import a dashboard and run its queries.
type grafanaDashboard struct {
	Title         string         `json:"title"`
	UID           string         `json:"uid"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasourceRef           `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// promtool returns Debian's promtool (package prometheus), which parses
// PromQL with Prometheus's own parser.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		testutils.Need(t, "promtool not installed (Debian: apt-get install prometheus; scripts/ci-setup.sh does): PromQL not checked")
	}
	return p
}

// checkRules runs `promtool check rules` on a rule file with these groups.
func checkRules(t *testing.T, groups any) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(f, body, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool(t), "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// grafanaVars stand in for Grafana's built-in variables when an expression
// is handed to the Prometheus parser.
var grafanaVars = map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

var varRef = regexp.MustCompile(`\$\{?(\w+)\}?`)

// TestDashboard checks what Grafana needs to import the dashboard and run
// its queries: title, uid (at most 40 characters) and schemaVersion; unique
// non-zero panel ids; panels within the 24-column grid; every panel and
// target on the Prometheus datasource chosen by the ${datasource} variable;
// unique refIds; every variable a query uses is defined; and every
// expression parses as PromQL (promtool check rules, Prometheus's parser).
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" || len(d.UID) > 40 || d.SchemaVersion < 36 || len(d.Panels) == 0 {
		t.Fatalf("%s: want title, uid (<= 40 chars), schemaVersion >= 36 and panels; got %q %q %d, %d panels",
			dashboardFile, d.Title, d.UID, d.SchemaVersion, len(d.Panels))
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Name == "datasource" && (v.Type != "datasource" || string(v.Query) != `"prometheus"`) {
			t.Errorf("variable datasource: want type datasource, query prometheus")
		}
	}
	if !vars["datasource"] {
		t.Fatal("no datasource variable: panels would be bound to one installation's datasource uid")
	}
	ids := map[int]string{}
	var rules []map[string]string
	for _, p := range d.Panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 || ids[p.ID] != "" {
			t.Errorf("%s: id must be unique and positive (also %q)", where, ids[p.ID])
		}
		ids[p.ID] = p.Title
		checkDatasource(t, where, p.Datasource)
		if p.Type == "" || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: want a type and a gridPos inside 24 columns, got %q %+v", where, p.Type, p.GridPos)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: refId %q empty or repeated", where, tg.RefID)
			}
			refs[tg.RefID] = true
			checkDatasource(t, where+" target "+tg.RefID, tg.Datasource)
			expr := varRef.ReplaceAllStringFunc(tg.Expr, func(m string) string {
				name := varRef.FindStringSubmatch(m)[1]
				if v, ok := grafanaVars[name]; ok {
					return v
				}
				if !vars[name] {
					t.Errorf("%s target %s: variable $%s is not defined", where, tg.RefID, name)
				}
				return map[string]string{"window": "7d", "node": ".*"}[name]
			})
			rules = append(rules, map[string]string{"record": fmt.Sprintf("panel_%d_%s", p.ID, strings.ToLower(tg.RefID)), "expr": expr})
		}
	}
	checkRules(t, []any{map[string]any{"name": "dashboard", "rules": rules}})
}

func checkDatasource(t *testing.T, where string, ds *datasourceRef) {
	t.Helper()
	if ds == nil || ds.Type != "prometheus" || ds.UID != "${datasource}" {
		t.Errorf("%s: datasource must be {type: prometheus, uid: ${datasource}}, got %+v", where, ds)
	}
}

// prometheusRule is the PrometheusRule object (monitoring.coreos.com/v1).
type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert,omitempty"`
				Record      string            `json:"record,omitempty"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels,omitempty"`
				Annotations map[string]string `json:"annotations,omitempty"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// TestPrometheusRule checks the PrometheusRule strictly against its fields,
// that promtool accepts its groups (PromQL, templates, names), and that every
// alert has a severity and a summary.
func TestPrometheusRule(t *testing.T) {
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var pr prometheusRule
	if err := yaml.UnmarshalStrict(raw, &pr); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" || pr.Metadata.Name == "" || pr.Metadata.Namespace != "bindguard" {
		t.Fatalf("%s: want a monitoring.coreos.com/v1 PrometheusRule in namespace bindguard, got %s %s %s/%s",
			rulesFile, pr.APIVersion, pr.Kind, pr.Metadata.Namespace, pr.Metadata.Name)
	}
	want := map[string]bool{"BindguardBindDenied": false, "BindguardWouldDenyInAudit": false, "instance:bindguard_would_deny:zero_7d": false}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			want[r.Alert+r.Record] = true
			if r.Alert != "" && (r.Labels["severity"] == "" || r.Annotations["summary"] == "") {
				t.Errorf("alert %s: want a severity label and a summary annotation", r.Alert)
			}
		}
	}
	for name, found := range want {
		if !found {
			t.Errorf("%s: no rule %s", rulesFile, name)
		}
	}
	checkRules(t, pr.Spec.Groups)
}
