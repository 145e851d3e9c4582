package integration

import (
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

// metricRef finds the metric names a PromQL expression reads: sipedge's own
// and the Go/process collectors' (up is Prometheus's, not an exporter's).
var metricRef = regexp.MustCompile(`\b(?:sipedge|go|process)_[a-zA-Z0-9_:]+\b`)

// packagedQueries returns every PromQL expression of the alert rules and the
// Grafana dashboard, by where it was found.
func packagedQueries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	raw, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	raw, err = os.ReadFile("../deploy/grafana/sipedge-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	for _, p := range dash.Panels {
		for i, tg := range p.Targets {
			out["panel "+p.Title+" #"+string(rune('A'+i))] = tg.Expr
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d queries found in the alert rules and dashboard", len(out))
	}
	return out
}

// exported is the set of metric names (histogram and summary series folded
// to their family) in a /metrics text.
func exported(text string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		names[name] = true
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok {
				names[base] = true
			}
		}
	}
	return names
}

// The shipped alert rules load as Prometheus loads a rule file (rule
// groups, durations, labels, annotation templates, PromQL), and every
// dashboard query parses as PromQL: Prometheus's own parsers, what
// `promtool check rules` runs.
func TestPackaging_AlertRulesAndQueriesParse(t *testing.T) {
	promql := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile("../deploy/prometheus/alerts.yml", false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("alerts.yml: %v", err)
	}
	if groups != nil {
		n := 0
		for _, g := range groups.Groups {
			n += len(g.Rules)
		}
		if n < 4 {
			t.Errorf("alerts.yml has %d rules, want at least the 4 of issue 10 (node down, drain past deadline, Redis stale, reject rate)", n)
		}
	}
	for where, expr := range packagedQueries(t) {
		if _, err := promql.ParseExpr(expr); err != nil {
			t.Errorf("%s: %q does not parse as PromQL: %v", where, expr, err)
		}
	}
}

// Issue 10 item 4: every query of the shipped alert rules and Grafana
// dashboard names a metric that a running sipedge exports. The instance
// is taken through what makes the labelled series appear: an anchored
// call, its node drained with the call on it, a rejected INVITE, the call's
// end.
func TestPackaging_AlertsAndDashboardNameExportedMetrics(t *testing.T) {
	queries := packagedQueries(t)
	m := newMediaEnv(t, nil, nil)
	caller := m.join("caller", "pkg1")
	eventually(t, 5*time.Second, "participant recorded", func() string {
		if len(m.participants("pkg1")) != 1 {
			return "no participant yet"
		}
		return ""
	})
	m.writeHash("sipedge:node:cn1", "maintenance", "1") // the last node: kept active, draining
	m.se.waitNodeState(t, 5*time.Second, "cn1", "draining", func(svcNode) string { return "" })
	// A second instance of the site in service lets A's deservice apply.
	m.startSipedge("B")
	m.writeProfile("pkg", "srvA", "deservice")
	m.se.waitReadyz(t, 5*time.Second, 503)
	if a, err := sipNewDialog(m.se.sipAddr(), "INVITE", "pkg2", 3*time.Second); err != nil || a.Code != 503 {
		t.Fatalf("INVITE to a deserviced instance: %+v %v, want 503", a, err)
	}
	if err := caller.hangup(); err != nil {
		t.Fatal(err)
	}
	m.waitNoConferences(10 * time.Second)

	code, text, err := m.se.get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	have := exported(text)
	var missing []string
	for where, expr := range queries {
		refs := metricRef.FindAllString(expr, -1)
		if len(refs) == 0 && !strings.Contains(expr, "up{") {
			missing = append(missing, where+": names no metric")
		}
		for _, name := range refs {
			if !have[name] {
				missing = append(missing, where+": "+name)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("queries naming metrics sipedge does not export:\n  %s", strings.Join(missing, "\n  "))
	}
}
