package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// promtool runs Prometheus's promtool (Debian package prometheus; `make
// deps` installs it) and returns its output and whether it exited 0.
func promtool(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	bin := requireTool(t, "promtool")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("promtool %v: %v", args, err)
		}
	}
	return string(out), err == nil
}

// Issue 10 item 4, with a real Prometheus's tool: the shipped rule file
// passes `promtool check rules`, and `promtool test rules` runs its unit
// tests (deploy/prometheus/alerts_test.yml): each alert fires on its
// series once its `for:` has passed and stays silent on healthy series.
func TestPrometheus_PromtoolChecksAndTestsRules(t *testing.T) {
	if out, ok := promtool(t, "check", "rules", "../deploy/prometheus/alerts.yml"); !ok {
		t.Fatalf("promtool check rules:\n%s", out)
	}
	if out, ok := promtool(t, "test", "rules", "../deploy/prometheus/alerts_test.yml"); !ok {
		t.Fatalf("promtool test rules:\n%s", out)
	}
}

// The unit tests can fail: an alert whose expression always fires, or
// never fires, makes `promtool test rules` fail, for every alert of the
// file (so each one has a firing and a silent case).
func TestPrometheus_RuleTestsCatchABrokenAlert(t *testing.T) {
	raw, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("../deploy/prometheus/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range doc["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			names = append(names, r.(map[string]any)["alert"].(string))
		}
	}
	if len(names) < 4 {
		t.Fatalf("only %d alerts in alerts.yml", len(names))
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		for _, broken := range []struct{ how, expr string }{
			{"always fires", `vector(1)`},
			{"never fires", `vector(1) > 2`},
		} {
			t.Run(name+"/"+broken.how, func(t *testing.T) {
				var d map[string]any
				if err := yaml.Unmarshal(raw, &d); err != nil {
					t.Fatal(err)
				}
				for _, g := range d["groups"].([]any) {
					for _, r := range g.(map[string]any)["rules"].([]any) {
						if rm := r.(map[string]any); rm["alert"] == name {
							rm["expr"] = broken.expr
						}
					}
				}
				var buf bytes.Buffer
				enc := yaml.NewEncoder(&buf)
				if err := enc.Encode(d); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				out, ok := promtool(t, "test", "rules", filepath.Join(dir, "alerts_test.yml"))
				if ok {
					t.Fatalf("promtool test rules passed with %s's expression replaced by %s: its unit test does not check that case\n%s", name, broken.expr, out)
				}
				if !strings.Contains(out, name) {
					t.Errorf("promtool's failure does not name %s:\n%s", name, out)
				}
			})
		}
	}
}

// promServer is a real Prometheus (Debian's prometheus 2.42) on loopback.
type promServer struct {
	addr string
	proc *proc
}

// startPrometheus runs Prometheus in a temp dir, scraping targets (job
// sipedge) every second and evaluating the shipped alert rules every
// second. The rules are the shipped ones with each `for:` shortened to
// 2s so a test need not wait their minutes (promtool's unit tests check
// the real durations); their expressions are unchanged.
func startPrometheus(t *testing.T, targets ...string) *promServer {
	t.Helper()
	bin := requireTool(t, "prometheus")
	dir := t.TempDir()
	raw, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules map[string]any
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			if rm := r.(map[string]any); rm["for"] != nil {
				rm["for"] = "2s"
			}
		}
	}
	out, err := yaml.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = fmt.Sprintf("%q", tg)
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: sipedge
    static_configs:
      - targets: [%s]
`, filepath.Join(dir, "alerts.yml"), strings.Join(quoted, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &promServer{addr: loopback(freePort(t))}
	p.proc = startProc(t, "prometheus", bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+p.addr,
		"--storage.tsdb.retention.time=1h")
	eventually(t, 30*time.Second, "prometheus ready", func() string {
		if p.proc.exited() {
			t.Fatalf("prometheus exited: %v\n%s", p.proc.waitErr, p.proc.log())
		}
		res, err := httpClient.Get("http://" + p.addr + "/-/ready")
		if err != nil {
			return err.Error()
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return res.Status
		}
		return ""
	})
	return p
}

// api GETs a Prometheus HTTP API path into v (the "data" member).
func (p *promServer) api(path string, v any) error {
	res, err := httpClient.Get("http://" + p.addr + path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var doc struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if doc.Status != "success" {
		return fmt.Errorf("%s: %s %s", path, doc.Status, doc.Error)
	}
	return json.Unmarshal(doc.Data, v)
}

// query runs an instant query: its result type and how many series (or
// samples) it holds.
func (p *promServer) query(expr string) (string, int, error) {
	var data struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	}
	if err := p.api("/api/v1/query?query="+url.QueryEscape(expr), &data); err != nil {
		return "", 0, err
	}
	return data.ResultType, len(data.Result), nil
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (p *promServer) alerts() ([]promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	err := p.api("/api/v1/alerts", &data)
	return data.Alerts, err
}

// firing is whether alert fires for instance.
func (p *promServer) firing(alert, instance string) (bool, string) {
	as, err := p.alerts()
	if err != nil {
		return false, err.Error()
	}
	var seen []string
	for _, a := range as {
		seen = append(seen, a.Labels["alertname"]+"@"+a.Labels["instance"]+"="+a.State)
		if a.Labels["alertname"] == alert && a.Labels["instance"] == instance && a.State == "firing" {
			return true, ""
		}
	}
	sort.Strings(seen)
	return false, fmt.Sprintf("alerts %v", seen)
}

// Issue 10 item 4 with a real Prometheus: Prometheus scrapes a running
// sipedge (with a confnode, an anchored call, a drained node, a
// deserviced instance's 503 and a second instance) and evaluates the
// shipped alert rules. Every query of the Grafana dashboard returns
// series from it (/api/v1/query: a non-empty vector or matrix); the
// media-node-down alert is silent while the node is up, and fires
// (/api/v1/alerts) for the instance once the confnode is killed.
// (Grafana itself is not packaged in Debian: the dashboard's queries are
// run against Prometheus, which is what Grafana would send them to.)
func TestPrometheus_ScrapesSipedgeAlertFiresDashboardQueriesAnswer(t *testing.T) {
	queries := packagedQueries(t)
	m := newMediaEnv(t, nil, nil)
	b := m.startSipedge("B")
	prom := startPrometheus(t, m.se.admin, b.admin)

	// What makes the labelled series appear (as in
	// TestPackaging_AlertsAndDashboardNameExportedMetrics).
	caller := m.join("caller", "prom1")
	eventually(t, 5*time.Second, "participant recorded", func() string {
		if len(m.participants("prom1")) != 1 {
			return "no participant yet"
		}
		return ""
	})
	m.writeHash("sipedge:node:cn1", "maintenance", "1") // the last node: kept active, draining
	m.se.waitNodeState(t, 5*time.Second, "cn1", "draining", func(svcNode) string { return "" })
	m.writeProfile("prom", "srvA", "deservice")
	m.se.waitReadyz(t, 5*time.Second, 503)
	if a, err := sipNewDialog(m.se.sipAddr(), "INVITE", "prom2", 3*time.Second); err != nil || a.Code != 503 {
		t.Fatalf("INVITE to a deserviced instance: %+v %v, want 503", a, err)
	}
	if err := caller.hangup(); err != nil {
		t.Fatal(err)
	}
	m.waitNoConferences(10 * time.Second)

	for where, expr := range queries {
		if !strings.HasPrefix(where, "panel ") {
			continue
		}
		eventually(t, 20*time.Second, where+" answers", func() string {
			typ, n, err := prom.query(expr)
			switch {
			case err != nil:
				return err.Error()
			case typ != "vector" && typ != "matrix":
				return fmt.Sprintf("%q: result type %s", expr, typ)
			case n == 0:
				return fmt.Sprintf("%q: empty %s", expr, typ)
			}
			return ""
		})
	}
	if ok, _ := prom.firing("SipedgeMediaNodeDown", m.se.admin); ok {
		t.Fatal("SipedgeMediaNodeDown fires while the node is up")
	}
	eventually(t, 10*time.Second, "both instances scraped", func() string {
		for _, s := range []*sipedge{m.se, b} {
			if _, n, err := prom.query(`up{job="sipedge",instance="` + s.admin + `"} == 1`); err != nil || n != 1 {
				return fmt.Sprintf("%s not up (%v)", s.admin, err)
			}
		}
		return ""
	})

	m.node.kill()
	eventually(t, 30*time.Second, "SipedgeMediaNodeDown firing for A", func() string {
		_, why := prom.firing("SipedgeMediaNodeDown", m.se.admin)
		return why
	})
	if ok, why := prom.firing("SipedgeDown", m.se.admin); ok {
		t.Errorf("SipedgeDown fires for a sipedge that is scraped (%s)", why)
	}
}
